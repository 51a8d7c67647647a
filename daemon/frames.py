"""What flows through the pipeline: a frame, its metadata, and what was found in it."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engines.runtime.postprocess import (
    ARTIFACT_COLUMNS,  # the measurements, defined where they are made
)

if TYPE_CHECKING:
    from daemon.results.thumbnails import Thumbnail

# Beside the measurements: True for an artifact found at the same place in the fields before it,
# in other wells, so on the optics rather than in the sample (daemon.sinks.optics marks it).
STATIONARY = "stationary"

__all__ = ["ARTIFACT_COLUMNS", "STATIONARY", "Frame", "FrameFailure", "FrameKey", "FrameMeta",
           "FrameResult", "ReadyFile", "file_identity", "pixel_digest"]


@dataclass(frozen=True, slots=True)
class FrameKey:
    """Identity of one version of a file on disk; the journal's primary key."""

    source: str  # path relative to the input folder, with forward slashes
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class ReadyFile:
    """A file the source judged complete; not read yet (frames wait on disk, not in memory)."""

    path: Path
    key: FrameKey
    ready_at: float  # time.monotonic() when it was judged complete: latency starts here
    attempt: int = 0  # tries after a passing fault (daemon.pipeline.retries)


@dataclass(frozen=True, slots=True)
class FrameMeta:
    source: str  # relative path for files; "zmq:<frame_id>" for streamed frames
    plate: str = ""
    well: str = ""  # e.g. "C07"
    field: int = -1  # -1: unknown
    channel: int = -1
    plane: int = -1
    pixel_size_um: float | None = None
    acquired_at: str = ""


@dataclass(frozen=True, slots=True)
class Frame:
    meta: FrameMeta
    pixels: np.ndarray  # (H, W), or (C, H, W) for multi-channel models; integer dtype
    ready_at: float
    key: FrameKey | None = None  # None for streamed frames: they are not journaled
    frame_id: str = ""  # the sender's id for streamed frames; the source path for files
    attempt: int = 0  # tries after a passing fault (daemon.pipeline.retries)
    digest: str = ""  # streamed frames: a hash of shape, dtype and pixels (pixel_digest)

    @property
    def identity(self) -> str:
        """Unique name of this frame in the store (dedupe on restart and on re-send).

        A file version is its path, size and mtime. A streamed frame is its id *and* its pixels:
        a re-send of the same frame is the same identity, while an id used again for new pixels
        (an acquisition run again with the same ids) is a new frame.
        """
        if self.key is not None:
            return file_identity(self.key)
        return f"zmq:{self.frame_id}#{self.digest}" if self.digest else f"zmq:{self.frame_id}"


@dataclass(frozen=True, slots=True)
class FrameResult:
    """Everything the sinks need about one processed frame."""

    frame: Frame
    score: float  # detector probability that the frame holds an artifact
    flagged: bool
    labels: np.ndarray  # (H, W) uint16/uint32, 0 = background
    # ARTIFACT_COLUMNS (and STATIONARY, once daemon.sinks.optics has looked) -> 1-D, one row
    # per artifact
    artifacts: dict[str, np.ndarray] = field(default_factory=dict)
    area_fraction: float = 0.0
    n_artifacts: int = 0
    processed_at: str = ""  # ISO 8601 UTC
    # How unlike the model's training frames this one looks (engines.runtime.familiarity): ~1 is
    # familiar, above 2 unfamiliar; NaN when the model card has no statistics.
    unfamiliarity: float = math.nan
    # True when the store already held this frame (a re-send, or a replay after a crash): the
    # verdict fields are then the stored ones, and nothing is stored or counted again.
    duplicate: bool = False
    # A small copy of the frame and its labels (daemon.results.thumbnails); None when turned off.
    thumbnail: Thumbnail | None = None


def file_identity(key: FrameKey) -> str:
    """The store's identity of one version of a file: "source|size|mtime_ns"."""
    return f"{key.source}|{key.size}|{key.mtime_ns}"


def pixel_digest(pixels: np.ndarray) -> str:
    """16 hex digits naming a frame's shape, dtype and pixels (BLAKE2b, ~2 ms for 1080 x 1080)."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{pixels.dtype.str}{pixels.shape}".encode())
    digest.update(np.ascontiguousarray(pixels).data)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class FrameFailure:
    """A frame that could not be processed: logged once, counted, recorded in the store."""

    source: str
    reason: str  # short machine word, the `reason` label of artifactd_frames_failed_total
    message: str  # one sentence naming the file and what was expected
    key: FrameKey | None = None
