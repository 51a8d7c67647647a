"""TensorRT on NVIDIA GPUs: the backend, the plan cache and `artifactd engines build`.

May import engines.runtime; tensorrt and pycuda are imported inside functions only.
"""
