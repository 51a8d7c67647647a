"""Whether a backend's modules import here, and whether TensorRT has a GPU to run on.

Below the backend choice (engines.select) so that `artifactd engines build` can ask too.
"""

from __future__ import annotations

import importlib
import importlib.util

GPU_EXTRA_HINT = "install the GPU extra: pip install 'artifactd[gpu]'"


def missing(module: str) -> str | None:
    """Why `module` cannot be imported, or None when it can."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ValueError:  # already imported without a spec (e.g. injected): importable
        found = True
    if not found:
        return f"{module} is not installed"
    try:
        importlib.import_module(module)
    except Exception as exc:  # a broken install raises anything from ImportError to OSError
        return f"{module} does not import ({type(exc).__name__}: {exc})"
    return None


def tensorrt_status() -> str:
    for module in ("tensorrt", "pycuda"):
        why = missing(module)
        if why:
            return f"{why}; {GPU_EXTRA_HINT}"
    import pycuda.driver as cuda

    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:
        return f"no usable CUDA driver/GPU (pycuda: {exc})"
    if count < 1:
        return "no CUDA GPU found (pycuda sees 0 devices)"
    return "ok"
