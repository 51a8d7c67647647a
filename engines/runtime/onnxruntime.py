"""ONNX Runtime backend: the CPU path (and CUDA when onnxruntime-gpu is installed)."""

from __future__ import annotations

import logging
import os

import numpy as np

from engines.runtime.base import EngineInfo, as_batch, pad_to_multiple
from engines.runtime.modelcard import ModelBundle

logger = logging.getLogger(__name__)


class OnnxRuntimeEngine:
    def __init__(self, bundle: ModelBundle, *, threads: int = 0, use_cuda: bool = False) -> None:
        import onnxruntime as ort  # the one runtime dependency that is heavy to import

        self.bundle = bundle
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle inference threads must sleep, not spin: in the service they share the cores with
        # the decode and post-processing threads (bench/RESULTS.md measures the difference).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if use_cuda and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        self._detector, self._segmenter = (
            ort.InferenceSession(str(bundle.path(part)), options, providers=providers)
            for part in ("detector", "segmenter")
        )
        device = "cuda" if self._detector.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self.info = EngineInfo("onnxruntime", bundle.model_id, "fp32", device)

    def _prepare(self, frames: np.ndarray) -> np.ndarray:
        batch = as_batch(frames, self.bundle.card.in_channels)
        return pad_to_multiple(batch, self.bundle.card.pad_multiple)

    def detect(self, frames: np.ndarray) -> np.ndarray:
        batch = self._prepare(frames)
        (scores,) = self._detector.run(None, {"frames": batch})
        return scores.astype(np.float32).reshape(len(batch))

    def segment(self, frames: np.ndarray) -> np.ndarray:
        h, w = frames.shape[-2:]
        (probability,) = self._segmenter.run(None, {"frames": self._prepare(frames)})
        return probability[:, 0, :h, :w]

    def close(self) -> None:
        self._detector = self._segmenter = None
