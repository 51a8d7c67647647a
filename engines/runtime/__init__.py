"""What runs on every frame in the service: the model card, the ONNX Runtime backend, frame
preparation, post-processing, familiarity and the one `analyse()` of a batch.

May import engines.files and engines.timestamps only; never torch, onnx or a GPU library (not
even inside a function), so the CPU service stays lean.
"""
