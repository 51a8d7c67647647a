"""torch backend: the trained modules themselves, on the CPU or a CUDA GPU.

On CUDA:
- frames travel as their integer bits: uint16 frames are staged in page-locked memory as int16
  (same bytes), copied without blocking, then widened, cast and edge-padded on the device
  (engines/pytorch/preprocess.py);
- fp16/bf16 run under autocast, so the per-frame standardisation inside the models (means of
  squared uint16 deviations, up to 65535**2) stays in float32 while the convolutions run in
  reduced precision; `.half()` on the whole model would overflow there;
- weights are channels_last and cuDNN autotunes per shape;
- each (model, batch, frame shape, dtype) is run eagerly the first time and captured as a CUDA
  graph the second time, then replayed: a service sees the same few shapes all day. At most
  `max_graphs` graphs are kept (least recently used dropped), all in one memory pool, which is
  safe because replays are serialised and outputs are copied out before the next one.
- results come back through page-locked memory as float32 numpy arrays.

torch is imported here, and this module only when the torch backend is chosen.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from engines.pytorch.preprocess import pad_on_device, widen_uint16
from engines.pytorch.weights import load_torch_models
from engines.runtime.base import EngineInfo, as_batch, as_nchw
from engines.runtime.modelcard import ModelBundle, ModelError

logger = logging.getLogger(__name__)

_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


class TorchEngine:
    def __init__(self, bundle: ModelBundle, *, device: str = "cpu", precision: str = "fp32",
                 threads: int = 0, cuda_graphs: bool = True, max_graphs: int = 16) -> None:
        missing = [p for p in ("detector_torch", "segmenter_torch")
                   if p not in bundle.card.files or not bundle.path(p).is_file()]
        if missing:
            raise ModelError(f"model folder {bundle.folder}: the torch backend needs the torch "
                             f"weights ({', '.join(missing)}); found none")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device {device!r}: expected cpu or cuda")
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("torch backend on cuda: torch sees no CUDA GPU")
        if precision != "fp32" and (device != "cuda" or precision not in _AUTOCAST):
            raise ValueError(f"torch backend on {device}: precision {precision} is not "
                             "supported (cpu: fp32; cuda: fp32, fp16, bf16)")
        self.bundle = bundle
        self._cuda = device == "cuda"
        self._device = torch.device("cuda", torch.cuda.current_device()) if self._cuda \
            else torch.device("cpu")
        self._autocast = _AUTOCAST.get(precision)
        self._multiple = bundle.card.pad_multiple
        self._channels = bundle.card.in_channels
        self._use_graphs = cuda_graphs and self._cuda
        self._max_graphs = max_graphs
        self._graphs: OrderedDict[tuple, _CapturedGraph] = OrderedDict()
        self._seen: set[tuple] = set()
        self._pool: Any = None
        self._lock = threading.Lock()
        if not self._cuda and threads:
            torch.set_num_threads(threads)
        detector, segmenter = load_torch_models(bundle.folder, bundle.card)
        self._models = {"detector": detector, "segmenter": segmenter}
        for name, model in self._models.items():
            model = model.to(self._device).eval()
            if self._cuda:
                model = model.to(memory_format=torch.channels_last)
            self._models[name] = model
        if self._cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes: autotune once per shape
            self._pool = torch.cuda.graph_pool_handle()
            index = self._device.index or 0
            where = f"cuda:{index} {torch.cuda.get_device_name(index)}"
        else:
            where = "cpu"
        self.info = EngineInfo("torch", bundle.model_id, precision, where)

    # -- public interface -------------------------------------------------------------------

    def detect(self, frames: np.ndarray) -> np.ndarray:
        return self._run("detector", frames)

    def segment(self, frames: np.ndarray) -> np.ndarray:
        return self._run("segmenter", frames)

    def close(self) -> None:
        with self._lock:
            self._graphs.clear()
            self._seen.clear()
            self._models = {}

    # -- internals --------------------------------------------------------------------------

    def _host_batch(self, frames: np.ndarray) -> tuple[torch.Tensor, bool]:
        """CPU tensor (N, C, H, W) in the cheapest exact dtype to send, and whether it holds
        uint16 bit patterns as int16."""
        frames = as_nchw(frames, self._channels)
        if frames.dtype == np.uint16:
            return torch.from_numpy(np.ascontiguousarray(frames).view(np.int16)), True
        if frames.dtype in (np.uint8, np.int8, np.int16, np.int32, np.float16, np.float32):
            return torch.from_numpy(np.ascontiguousarray(frames)), False
        return torch.from_numpy(as_batch(frames, self._channels)), False

    def _body(self, part: str, raw: torch.Tensor, is_u16: bool, hw: tuple[int, int]
              ) -> torch.Tensor:
        """Device-side preprocessing, the model, and the output in float32 at frame size."""
        batch = widen_uint16(raw) if is_u16 else raw.to(torch.float32)
        batch = pad_on_device(batch, self._multiple)
        if self._autocast is not None:
            with torch.autocast("cuda", dtype=self._autocast, cache_enabled=False):
                out = self._models[part](batch)
        else:
            out = self._models[part](batch)
        if part == "segmenter":
            out = out[:, 0, : hw[0], : hw[1]]
        return out.to(torch.float32).contiguous()

    def _run(self, part: str, frames: np.ndarray) -> np.ndarray:
        host, is_u16 = self._host_batch(frames)
        hw = (host.shape[2], host.shape[3])
        with self._lock, torch.inference_mode():
            if not self._cuda:
                return self._body(part, host, is_u16, hw).numpy()
            staged = torch.empty(host.shape, dtype=host.dtype, pin_memory=True)
            staged.copy_(host)
            key = (part, tuple(host.shape), host.dtype)
            graph = self._graphs.get(key)
            if graph is not None:
                self._graphs.move_to_end(key)
                out = graph.replay(staged)
            elif self._use_graphs and key in self._seen:
                out = self._capture(key, part, staged, is_u16, hw)
            else:
                self._seen.add(key)
                raw = staged.to(self._device, non_blocking=True)
                out = self._body(part, raw, is_u16, hw)
            return _to_host(out)

    def _capture(self, key: tuple, part: str, staged: torch.Tensor, is_u16: bool,
                 hw: tuple[int, int]) -> torch.Tensor:
        static_in = torch.empty(staged.shape, dtype=staged.dtype, device=self._device)
        static_in.copy_(staged, non_blocking=True)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture stream, as torch advises
            self._body(part, static_in, is_u16, hw)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            static_out = self._body(part, static_in, is_u16, hw)
        captured = _CapturedGraph(graph, static_in, static_out)
        self._graphs[key] = captured
        while len(self._graphs) > self._max_graphs:
            self._graphs.popitem(last=False)
        logger.debug("captured a CUDA graph for %s batch %s", part, tuple(staged.shape))
        return captured.replay(staged)


class _CapturedGraph:
    def __init__(self, graph: torch.cuda.CUDAGraph, static_in: torch.Tensor,
                 static_out: torch.Tensor) -> None:
        self.graph, self.static_in, self.static_out = graph, static_in, static_out

    def replay(self, staged: torch.Tensor) -> torch.Tensor:
        self.static_in.copy_(staged, non_blocking=True)
        self.graph.replay()
        return self.static_out


def _to_host(out: torch.Tensor) -> np.ndarray:
    """Device tensor -> numpy through page-locked memory; the array owns that memory."""
    host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
    host.copy_(out, non_blocking=True)
    torch.cuda.current_stream().synchronize()
    return host.numpy()
