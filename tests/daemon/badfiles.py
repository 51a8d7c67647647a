"""The bad-input corpus: files named like TIFFs that the service must refuse, each for a reason.

`write_bad_corpus(folder)` writes them and returns {file name: expected failure reason}; the
decoder tests and the service's end-to-end tests both use it. All cases fail with the default
configuration (input.max_pixels = 64 000 000, input.rgb = "refuse").
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
import tifffile

# The too-large frame claims this shape in its header; its pixels are never written.
HUGE_SHAPE = (30_000, 30_000)


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def write_bad_corpus(folder: Path) -> dict[str, str]:
    """Write the corpus into `folder`; {name: reason}. The unreadable file is left out as root
    (root reads it anyway); test_decode reads it as an unprivileged user instead."""
    folder.mkdir(parents=True, exist_ok=True)
    image = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    cases: dict[str, str] = {}

    def put(name: str, data: bytes, reason: str) -> None:
        (folder / name).write_bytes(data)
        cases[name] = reason

    whole = tiff_bytes(image)
    put("bad_truncated.tif", whole[: len(whole) // 2], "truncated")
    put("bad_corrupt.tif", corrupt_tiff_bytes(image), "corrupt")
    put("bad_empty.tif", b"", "empty")
    put("bad_png.tif", PNG_1X1, "not_tiff")
    put("bad_text.tiff", b"acquisition aborted: camera timeout\n", "not_tiff")
    put("bad_float32.tif", tiff_bytes(image.astype(np.float32)), "dtype")
    put("bad_complex.tif", tiff_bytes(image.astype(np.complex64)), "dtype")
    put("bad_rgb.tif", tiff_bytes(np.zeros((32, 32, 3), np.uint8), photometric="rgb"), "dtype")
    put("bad_negative_int16.tif", tiff_bytes(np.full((16, 16), -5, np.int16)), "dtype")
    put("bad_too_large.tif", header_only_tiff(*HUGE_SHAPE), "too_large")
    if not running_as_root():
        put("bad_unreadable.tif", whole, "permission")
        (folder / "bad_unreadable.tif").chmod(0)
    return cases


def tiff_bytes(array: np.ndarray, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)  # type: ignore[arg-type]
    return buffer.getvalue()


def corrupt_tiff_bytes(image: np.ndarray) -> bytes:
    """A well-formed header and directory whose zlib-compressed pixel data is garbage."""
    data = bytearray(tiff_bytes(image, compression="zlib"))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    data[offset : offset + count] = np.random.default_rng(0).bytes(count)
    return bytes(data)


def header_only_tiff(height: int, width: int) -> bytes:
    """A classic little-endian uint16 TIFF header claiming (height, width) with no pixel data."""
    entries = [
        (256, 4, 1, width),  # ImageWidth, LONG
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 16),  # BitsPerSample, SHORT
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: min-is-black
        (273, 4, 1, 4096),  # StripOffsets: past the end of this file
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, height * width * 2),  # StripByteCounts
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<H", value) + b"\0\0" if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)


# The smallest valid PNG (1x1, gray): real non-TIFF image data behind a .tif name.
PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a49444154789c6360000000020001e221bc330000000049454e44ae426082"
)
