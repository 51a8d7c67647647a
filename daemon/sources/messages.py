"""A ZeroMQ frame message checked and turned into a Frame (the format is in daemon.sources.zmq).

Every check raises MessageError with the reason the failed counter is labelled with and one
sentence naming the field and what was expected; nothing here touches a socket."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from daemon.frames import Frame, FrameMeta, pixel_digest

DTYPES: dict[str, np.dtype[Any]] = {"uint8": np.dtype("<u1"), "uint16": np.dtype("<u2")}
MAX_HEADER_BYTES = 64 * 1024
MAX_TEXT_CHARS = 256  # frame_id and the string metadata fields


class MessageError(ValueError):
    """A message that is not a valid frame; `reason` is the failed-counter label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def parse_message(parts: Sequence[Any], max_bytes: int) -> Frame:
    """Check a [header, buffer] message and build its Frame; raises MessageError.

    `parts` are bytes-like (bytes, memoryview, zmq.Frame). The pixels are copied, so the Frame
    does not pin the ZeroMQ message buffer.
    """
    if len(parts) != 2:
        raise MessageError(
            "zmq_parts",
            f"expected 2 message parts (JSON header, pixel buffer), got {len(parts)}",
        )
    header_part, buffer = memoryview(parts[0]), memoryview(parts[1])
    if header_part.nbytes > MAX_HEADER_BYTES:
        raise MessageError(
            "zmq_too_large",
            f"header is {header_part.nbytes} bytes; expected at most {MAX_HEADER_BYTES}",
        )
    header = _decode_header(header_part)
    frame_id = _text(header, "frame_id", "message", required=True)
    where = f"frame {frame_id!r}"
    dtype = _dtype(header, where)
    shape = _shape(header, where)
    expected = math.prod(shape) * dtype.itemsize
    if expected > max_bytes:
        raise MessageError(
            "zmq_too_large",
            f"{where}: shape {shape} of {dtype.name} is {expected} bytes; expected at most "
            f"{max_bytes} (zmq.max_message_bytes)",
        )
    if buffer.nbytes != expected:
        raise MessageError(
            "zmq_buffer",
            f"{where}: pixel buffer is {buffer.nbytes} bytes; shape {shape} of {dtype.name} "
            f"needs {expected}",
        )
    meta = FrameMeta(
        source=f"zmq:{frame_id}",
        plate=_text(header, "plate", where),
        well=_text(header, "well", where),
        field=_index(header, "field", where),
        channel=_index(header, "channel", where),
        plane=_index(header, "plane", where),
        pixel_size_um=_pixel_size(header, where),
        acquired_at=_text(header, "acquired_at", where),
    )
    pixels = np.frombuffer(buffer, dtype=dtype).reshape(shape).copy()
    return Frame(meta=meta, pixels=pixels, ready_at=time.monotonic(), frame_id=frame_id,
                 digest=pixel_digest(pixels))


def _decode_header(part: memoryview) -> dict[str, Any]:
    try:
        header = json.loads(str(part, "utf-8"))
    except (ValueError, RecursionError) as exc:
        raise MessageError("zmq_json", f"header is not valid UTF-8 JSON ({exc})") from None
    if not isinstance(header, dict):
        raise MessageError(
            "zmq_json", f"header must be a JSON object, got {type(header).__name__}"
        )
    return header


def _text(header: dict[str, Any], key: str, where: str, *, required: bool = False) -> str:
    if key not in header and not required:
        return ""
    value = header.get(key)
    if (
        not isinstance(value, str)
        or not value.isprintable()
        or not 0 < len(value) <= MAX_TEXT_CHARS
    ):
        raise MessageError(
            "zmq_header",
            f"{where}: header '{key}' must be a non-empty printable string of at most "
            f"{MAX_TEXT_CHARS} characters, got {_short(value)}",
        )
    return value


def _index(header: dict[str, Any], key: str, where: str) -> int:
    value = header.get(key, -1)
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise MessageError(
            "zmq_header",
            f"{where}: header '{key}' must be an integer >= 0 (or -1: unknown), "
            f"got {_short(value)}",
        )
    return value


def _pixel_size(header: dict[str, Any], where: str) -> float | None:
    value = header.get("pixel_size_um")
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise MessageError(
            "zmq_header",
            f"{where}: header 'pixel_size_um' must be a number > 0 or null, got {_short(value)}",
        )
    return float(value)


def _dtype(header: dict[str, Any], where: str) -> np.dtype[Any]:
    name = header.get("dtype")
    if not isinstance(name, str) or name not in DTYPES:
        raise MessageError(
            "zmq_dtype",
            f"{where}: header 'dtype' must be one of {', '.join(DTYPES)}, got {_short(name)}",
        )
    return DTYPES[name]


def _shape(header: dict[str, Any], where: str) -> tuple[int, ...]:
    shape = header.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) not in (2, 3)
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)
    ):
        raise MessageError(
            "zmq_shape",
            f"{where}: header 'shape' must be [H, W] or [C, H, W] of positive integers, "
            f"got {_short(shape)}",
        )
    return tuple(shape)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
