"""TensorRT backend: built plans run with pycuda on the GPU's primary context.

- Plans come from the engine cache (engines/gpu/enginecache.py); one is built on first use when none
  matches (engines/gpu/build.py). Each plan has one optimisation profile: batch 1..max_batch at one
  frame shape, so a new frame shape gets its own plan (built when first seen, or up front when
  `frame_shape` is given).
- The plan's input is the frames' raw bytes (uint16 viewed as uint8 [N, C, H, 2W]); the cast to
  float, edge padding, the models' own standardisation and sigmoid, and the crop of the mask
  back to the frame all run inside the engine (engines/gpu/preprocess.py).
- Tensors are bound by name (set_input_shape, set_tensor_address) and run with
  execute_async_v3 on this engine's own CUDA streams; every TensorRT call that returns a status
  is checked and failures name the tensor and shape.
- Double buffering: a call's frames run in chunks through two slots, each with page-locked host
  buffers, device buffers and events. While the GPU computes chunk n, the host stages chunk n+1
  into the other slot's page-locked buffer and its host-to-device copy runs on the copy stream;
  results come back on the compute stream.
- The device's primary context is retained (never pycuda.autoinit) and pushed around every use,
  so torch and pycuda share one context in one process.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from engines.gpu.enginecache import PlanError, Profile, make_profile
from engines.gpu.preprocess import RAW_INPUT, as_uint16_frames, raw_bytes
from engines.runtime.base import EngineInfo
from engines.runtime.modelcard import ModelBundle

logger = logging.getLogger(__name__)

OUTPUTS = {"detector": "score", "segmenter": "probability"}


class TensorRTError(RuntimeError):
    """TensorRT refused a call; the message names the tensor and shape involved."""


def _check(ok: object, what: str) -> None:
    if not ok:
        raise TensorRTError(what)


class TensorRTEngine:
    def __init__(self, bundle: ModelBundle, *, precision: str = "fp32", max_batch: int = 8,
                 engine_cache: Path | None = None, frame_shape: tuple[int, int] | None = None,
                 device_index: int = 0) -> None:
        import pycuda.driver as cuda
        import tensorrt as trt

        self._trt, self._cuda = trt, cuda
        self.bundle = bundle
        self._precision = precision
        self._max_batch = max_batch
        self._cache_dir = engine_cache
        cuda.init()
        self._device = cuda.Device(device_index)
        self._context = self._device.retain_primary_context()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        _check(self._runtime, "tensorrt.Runtime could not be created")
        self._runners: dict[tuple[str, int, int], _PlanRunner] = {}
        self._lock = threading.Lock()
        self.info = EngineInfo("tensorrt", bundle.model_id, precision,
                               f"cuda:{device_index} {self._device.name()}")
        if frame_shape is not None:
            try:
                with self._lock, self._pushed():
                    for part in OUTPUTS:
                        self._runner(part, frame_shape)
            except BaseException:
                self.close()  # release the device memory and the retained context
                raise

    # -- public interface -------------------------------------------------------------------

    def detect(self, frames: np.ndarray) -> np.ndarray:
        return self._run("detector", frames)

    def segment(self, frames: np.ndarray) -> np.ndarray:
        return self._run("segmenter", frames)

    def close(self) -> None:
        with self._lock:
            if self._context is None:
                return
            with self._pushed():
                for runner in self._runners.values():
                    runner.free()
                self._runners.clear()
            self._context.detach()
            self._context = None

    def gpu_memory_used(self) -> int:
        """Bytes in use on the device (all processes), for the benchmark."""
        with self._pushed():
            free, total = self._cuda.mem_get_info()
        return int(total - free)

    # -- internals --------------------------------------------------------------------------

    @contextmanager
    def _pushed(self) -> Iterator[None]:
        if self._context is None:
            raise RuntimeError("TensorRT engine is closed")
        self._context.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def _run(self, part: str, frames: np.ndarray) -> np.ndarray:
        batch = as_uint16_frames(frames, self.bundle.card.in_channels)
        with self._lock, self._pushed():
            runner = self._runner(part, (batch.shape[2], batch.shape[3]))
            return runner.run(batch)

    def _runner(self, part: str, frame_shape: tuple[int, int]) -> _PlanRunner:
        key = (part, int(frame_shape[0]), int(frame_shape[1]))
        runner = self._runners.get(key)
        if runner is None:
            from engines.gpu.build import build_target, engine_key, plan_builder, plan_metadata
            from engines.gpu.enginecache import EngineCache, default_cache_dir

            profile = make_profile(self._max_batch, key[1:], channels=self.bundle.card.in_channels)
            cache = EngineCache(self._cache_dir or default_cache_dir())
            target = build_target()
            key_ = engine_key(self.bundle, part, self._precision, profile, target)
            build = plan_builder(self.bundle, part, self._precision, profile, cache.folder)
            runner = cache.load(
                key_, build,
                lambda plan: _PlanRunner(self._trt, self._cuda, self._deserialise(plan), part,
                                         profile),
                lambda: plan_metadata(self.bundle, part),
            )
            self._runners[key] = runner
            logger.info("TensorRT %s engine ready: %s %s, batch up to %d, frames %dx%d",
                        part, self._precision, self.info.device, profile.max_batch,
                        profile.height, profile.width)
        return runner

    def _deserialise(self, plan: bytes) -> Any:
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise PlanError("TensorRT could not deserialise the plan (corrupt, or built by "
                            "another TensorRT version or GPU)")
        return engine


class _Slot:
    """One of the two buffers a chunk goes through: host and device memory plus events."""

    def __init__(self, cuda: Any, profile: Profile, out_shape: tuple[int, ...]) -> None:
        c, h, w, b = profile.channels, profile.height, profile.width, profile.max_batch
        self.host_in = cuda.pagelocked_empty((b, c, h, w), dtype=np.uint16)
        self.host_out = cuda.pagelocked_empty((b, *out_shape), dtype=np.float32)
        self.dev_in = cuda.mem_alloc(self.host_in.nbytes)
        self.dev_out = cuda.mem_alloc(self.host_out.nbytes)
        self.uploaded = cuda.Event()  # host-to-device copy done: host_in reusable
        self.done = cuda.Event()  # compute and device-to-host copy done: everything reusable
        self.pending: tuple[int, int] | None = None  # (start, count) of the chunk in flight

    def free(self) -> None:
        self.dev_in.free()
        self.dev_out.free()


class _PlanRunner:
    """One deserialised plan, its execution context, two streams and two slots."""

    def __init__(self, trt: Any, cuda: Any, engine: Any, part: str, profile: Profile) -> None:
        self._trt, self._cuda, self._engine = trt, cuda, engine
        self.part, self.profile = part, profile
        self._output = OUTPUTS[part]
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if inputs != [RAW_INPUT] or self._output not in outputs:
            raise PlanError(f"{part} plan has inputs {inputs} and outputs {outputs}; expected "
                            f"input {RAW_INPUT!r} and output {self._output!r}")
        for name, want in ((RAW_INPUT, trt.DataType.UINT8), (self._output, trt.DataType.FLOAT)):
            got = engine.get_tensor_dtype(name)
            if got != want:
                raise PlanError(f"{part} plan: tensor {name!r} is {got}, expected {want}")
        self._context = engine.create_execution_context()
        _check(self._context is not None,
               f"{part}: could not create a TensorRT execution context (out of GPU memory?)")
        self._copy_stream = cuda.Stream()
        self._compute_stream = cuda.Stream()
        out_shape = () if part == "detector" else (1, profile.height, profile.width)
        self._out_shape = out_shape
        self._slots = [_Slot(cuda, profile, out_shape) for _ in range(2)]
        self._bound_batch = 0

    def free(self) -> None:
        self._compute_stream.synchronize()
        self._copy_stream.synchronize()
        for slot in self._slots:
            slot.free()
        self._context = None

    def _bind(self, slot: _Slot, count: int) -> None:
        shape = (count, *self.profile.input_shapes()[0][1:])
        if count != self._bound_batch:
            _check(self._context.set_input_shape(RAW_INPUT, shape),
                   f"{self.part}: set_input_shape({RAW_INPUT!r}, {shape}) refused; the plan's "
                   f"profile is {self.profile.input_shapes()}")
            got = tuple(self._context.get_tensor_shape(self._output))
            want = (count, *self._out_shape)
            _check(got == want, f"{self.part}: output {self._output!r} has shape {got} for "
                   f"input {shape}; expected {want}")
            self._bound_batch = count
        _check(self._context.set_tensor_address(RAW_INPUT, int(slot.dev_in)),
               f"{self.part}: set_tensor_address({RAW_INPUT!r}) refused for shape {shape}")
        _check(self._context.set_tensor_address(self._output, int(slot.dev_out)),
               f"{self.part}: set_tensor_address({self._output!r}) refused for batch {count}")

    def run(self, frames: np.ndarray) -> np.ndarray:
        """uint16 (N, C, H, W) -> (N,) scores or (N, H, W) probabilities, float32."""
        n = len(frames)
        _, c, h, w = frames.shape
        p = self.profile
        if (c, h, w) != (p.channels, p.height, p.width):
            raise TensorRTError(f"{self.part}: frames {(c, h, w)} do not match the plan's "
                                f"{(p.channels, p.height, p.width)}")
        result = np.empty((n, *self._out_shape), dtype=np.float32)
        # At least two chunks whenever there are two frames, so copies overlap compute.
        chunk = max(1, min(p.max_batch, math.ceil(n / 2)))
        try:
            for index, start in enumerate(range(0, n, chunk)):
                slot = self._slots[index % 2]
                self._collect(slot, result)  # the slot's previous chunk (two chunks ago)
                self._submit(slot, frames, start, min(chunk, n - start))
            for slot in self._slots:
                self._collect(slot, result)
        except BaseException:
            self._compute_stream.synchronize()
            self._copy_stream.synchronize()
            for slot in self._slots:
                slot.pending = None
            raise
        return result.reshape(n) if self.part == "detector" else result[:, 0]

    def _submit(self, slot: _Slot, frames: np.ndarray, start: int, count: int) -> None:
        """Stage, upload, run and download one chunk; returns before the GPU is done."""
        cuda = self._cuda
        np.copyto(slot.host_in[:count], frames[start:start + count])
        cuda.memcpy_htod_async(slot.dev_in, raw_bytes(slot.host_in[:count]), self._copy_stream)
        slot.uploaded.record(self._copy_stream)
        self._compute_stream.wait_for_event(slot.uploaded)
        self._bind(slot, count)
        _check(self._context.execute_async_v3(self._compute_stream.handle),
               f"{self.part}: execute_async_v3 failed for input {RAW_INPUT!r} shape "
               f"{(count, *self.profile.input_shapes()[0][1:])}")
        cuda.memcpy_dtoh_async(slot.host_out[:count], slot.dev_out, self._compute_stream)
        slot.done.record(self._compute_stream)
        slot.pending = (start, count)

    def _collect(self, slot: _Slot, result: np.ndarray) -> None:
        if slot.pending is None:
            return
        slot.done.synchronize()
        start, count = slot.pending
        result[start:start + count] = slot.host_out[:count]
        slot.pending = None
