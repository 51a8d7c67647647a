"""Pick and open an inference backend by name; "auto" picks the fastest one that can run here.

"auto": TensorRT when `tensorrt` and `pycuda` import and a CUDA GPU is present, else torch on
CUDA, else ONNX Runtime on the CPU. The choice and the reason are logged in one line. A backend
or precision asked for by name that cannot run here fails with the reason; nothing the user set
is silently changed (an fp16 request never quietly runs in fp32 on a CPU).

Every backend module is imported only when chosen, so a CPU install never imports TensorRT or
pycuda, and ONNX Runtime never needs torch.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from engines.gpu.available import missing, tensorrt_status
from engines.runtime.base import PRECISIONS, Engine
from engines.runtime.modelcard import ModelBundle

logger = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "torch", "tensorrt")


class BackendUnavailable(RuntimeError):
    """The backend (or precision) asked for cannot run on this machine; says what is missing."""


@dataclass(frozen=True, slots=True)
class BackendChoice:
    backend: str  # "onnxruntime" | "torch" | "tensorrt"
    device: str  # "cpu" | "cuda"
    reason: str  # one sentence, for the log and for artifactd_engine_info


def _torch_status() -> str:
    why = missing("torch")
    return f"{why}; install the train extra: pip install 'artifactd[train]'" if why else "ok"


def _no_nvidia_device() -> bool:
    """On Linux a GPU shows as /dev/nvidia<N>; without one, say so without importing torch
    (seconds of start-up and hundreds of MB for a service that runs ONNX Runtime)."""
    return sys.platform.startswith("linux") and not glob.glob("/dev/nvidia[0-9]*")


def _torch_cuda_status() -> str:
    if _no_nvidia_device():
        return "no NVIDIA GPU device (/dev/nvidia*)"
    status = _torch_status()
    if status != "ok":
        return status
    import torch

    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            return "torch is a CPU-only build"
        return "torch sees no CUDA GPU"
    return "ok"


def _onnxruntime_status() -> str:
    why = missing("onnxruntime")
    return f"{why}; pip install onnxruntime" if why else "ok"


def available_backends() -> dict[str, str]:
    """backend name -> "ok" or why it cannot run here. torch is "ok" on a CPU too."""
    return {
        "onnxruntime": _onnxruntime_status(),
        "torch": _torch_status(),
        "tensorrt": tensorrt_status(),
    }


def _check_precision(backend: str, device: str, precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {PRECISIONS}")
    supported = {
        ("onnxruntime", "cpu"): ("fp32",),
        ("onnxruntime", "cuda"): ("fp32",),
        ("torch", "cpu"): ("fp32",),
        ("torch", "cuda"): ("fp32", "fp16", "bf16"),
        ("tensorrt", "cuda"): ("fp32", "fp16", "bf16", "int8"),
    }[(backend, device)]
    if precision not in supported:
        raise BackendUnavailable(
            f"precision {precision} is not available with backend {backend} on {device} "
            f"(it supports {', '.join(supported)}); set precision to one of those or use a "
            "backend that supports it"
        )


def choose_backend(backend: str = "auto", precision: str = "fp32") -> BackendChoice:
    """Resolve a backend name to what will run, or raise BackendUnavailable saying why not."""
    if backend not in (*BACKENDS, "auto"):
        raise ValueError(f"backend {backend!r}: expected auto or one of {BACKENDS}")
    if backend == "auto":
        trt = tensorrt_status()
        if trt == "ok":
            choice = BackendChoice("tensorrt", "cuda",
                                   "auto: tensorrt and pycuda import and a CUDA GPU is present")
        else:
            torch_cuda = _torch_cuda_status()
            if torch_cuda == "ok":
                choice = BackendChoice("torch", "cuda",
                                       f"auto: no tensorrt ({trt}); torch sees a CUDA GPU")
            else:
                ort = _onnxruntime_status()
                if ort != "ok":
                    raise BackendUnavailable(
                        f"no inference backend can run: tensorrt: {trt}; torch on CUDA: "
                        f"{torch_cuda}; onnxruntime: {ort}"
                    )
                choice = BackendChoice(
                    "onnxruntime", "cpu",
                    f"auto: no tensorrt ({trt}); no torch on CUDA ({torch_cuda}); "
                    "so ONNX Runtime on the CPU",
                )
        try:
            _check_precision(choice.backend, choice.device, precision)
        except BackendUnavailable as exc:
            raise BackendUnavailable(f"{exc} [{choice.reason}]") from None
        return choice

    status = {"onnxruntime": _onnxruntime_status, "torch": _torch_status,
              "tensorrt": tensorrt_status}[backend]()
    if status != "ok":
        raise BackendUnavailable(f"backend {backend} was asked for but cannot run here: {status}")
    device = "cpu"
    if backend == "tensorrt":
        device = "cuda"
    elif backend == "torch":
        device = "cuda" if _torch_cuda_status() == "ok" else "cpu"
    elif backend == "onnxruntime":
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            device = "cuda"
    _check_precision(backend, device, precision)
    return BackendChoice(backend, device, f"asked for {backend}; it runs here on {device}")


def create_engine(bundle: ModelBundle, *, backend: str = "auto", precision: str = "fp32",
                  threads: int = 0, max_batch: int = 8, engine_cache: Path | None = None,
                  frame_shape: tuple[int, int] | None = None) -> Engine:
    """Open the model with the chosen backend. See the module docstring for "auto"."""
    if max_batch < 1:
        raise ValueError(f"max_batch {max_batch}: expected at least 1")
    choice = choose_backend(backend, precision)
    logger.info("inference backend: %s on %s, %s (%s)", choice.backend, choice.device,
                precision, choice.reason)
    engine: Engine
    if choice.backend == "onnxruntime":
        from engines.runtime.onnxruntime import OnnxRuntimeEngine

        engine = OnnxRuntimeEngine(bundle, threads=threads, use_cuda=choice.device == "cuda")
    elif choice.backend == "torch":
        from engines.pytorch.backend import TorchEngine

        engine = TorchEngine(bundle, device=choice.device, precision=precision, threads=threads)
    else:
        from engines.gpu.tensorrt import TensorRTEngine

        engine = TensorRTEngine(bundle, precision=precision, max_batch=max_batch,
                                engine_cache=engine_cache, frame_shape=frame_shape)
    return engine


def usable_cores() -> int:
    """Cores this process may run on (systemd CPUAffinity and containers included)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def inference_plan(device: str, *, workers: int = 0, threads: int = 0,
                   cores: int | None = None) -> tuple[int, int]:
    """How many engines run side by side, and how many CPU threads each gets.

    0 means automatic. On the CPU that is one single-threaded engine per core: these models
    are small per frame, and splitting one frame's convolutions over threads buys little
    (ONNX Runtime, 1080 x 1080 detector: 24.4 ms on one thread, 20.5 ms on two), while two
    frames at once on two cores take the time of one. On a GPU one engine feeds the device.
    """
    cores = cores or usable_cores()
    if workers <= 0:
        workers = cores if device == "cpu" else 1
    if threads <= 0:
        threads = max(1, cores // workers)
    return workers, threads


def create_engines(bundle: ModelBundle, *, workers: int = 0, backend: str = "auto",
                   precision: str = "fp32", threads: int = 0, max_batch: int = 8,
                   engine_cache: Path | None = None) -> list[Engine]:
    """`workers` engines of the same model for inference side by side (0: see inference_plan)."""
    choice = choose_backend(backend, precision)
    workers, threads = inference_plan(choice.device, workers=workers, threads=threads)
    engines: list[Engine] = []
    try:
        for _ in range(workers):
            engines.append(create_engine(bundle, backend=choice.backend, precision=precision,
                                         threads=threads, max_batch=max_batch,
                                         engine_cache=engine_cache))
    except BaseException:
        for engine in engines:
            engine.close()
        raise
    return engines
