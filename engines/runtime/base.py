"""The one interface every inference backend implements.

Frames go in as they were decoded (integer pixels, full resolution); the backend casts, pads
to the model's multiple, runs the model (which downsamples and normalises inside) and returns
results at the frame's own resolution. The pipeline never knows which backend runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from engines.runtime.modelcard import ModelBundle

# The numeric precisions a backend may run at, in the words of config.toml's [model] precision.
# Which backend and device support which is engines.select's business.
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


@dataclass(frozen=True, slots=True)
class EngineInfo:
    backend: str  # "onnxruntime" | "torch" | "tensorrt"
    model: str  # ModelBundle.model_id
    precision: str  # one of PRECISIONS
    device: str  # "cpu" or e.g. "cuda:0 NVIDIA H100"


class Engine(Protocol):
    info: EngineInfo
    bundle: ModelBundle

    def detect(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W) or (N, C, H, W) integer or float frames -> (N,) float32 artifact scores."""
        ...

    def segment(self, frames: np.ndarray) -> np.ndarray:
        """Same input -> (N, H, W) float32 artifact probability at the frames' resolution."""
        ...

    def close(self) -> None: ...


def as_nchw(frames: np.ndarray, in_channels: int) -> np.ndarray:
    """(N, H, W) or (N, C, H, W) -> (N, C, H, W), pixels untouched, checking the channel count.

    The one shape check of every backend's input.
    """
    if frames.ndim == 3:
        frames = frames[:, None]
    if frames.ndim != 4 or frames.shape[1] != in_channels:
        raise ValueError(
            f"expected frames shaped (N, H, W) or (N, {in_channels}, H, W), got {frames.shape}"
        )
    return frames


def as_batch(frames: np.ndarray, in_channels: int) -> np.ndarray:
    """(N, H, W) or (N, C, H, W) -> float32 (N, C, H, W), checking the channel count."""
    return as_nchw(frames, in_channels).astype(np.float32, copy=False)


def pad_to_multiple(batch: np.ndarray, multiple: int) -> np.ndarray:
    """Pad H and W up to a multiple by edge replication (zeros would look like an artifact)."""
    h, w = batch.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return batch
    return np.pad(batch, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="edge")
