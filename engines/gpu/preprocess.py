"""Preprocessing on the device: decoded integer frames in, what the models expect out.

Every backend does the same three things around the exported model: cast the frames to float32,
pad H and W up to the card's multiple by edge replication (zeros would look like an artifact),
and crop the probability map back to the frame. Standardisation and the space-to-depth step are
already inside the models (engines/pytorch/models.py), and so is the sigmoid.

TensorRT's form lives here (the torch backend's is engines/pytorch/preprocess.py): a few ONNX
nodes put in front of (and behind) the exported model before the engine is built, so the plan
takes the frames' raw bytes and the cast, padding and crop run inside the engine on the GPU.
TensorRT has no uint16 tensor type, so the plan's input is the frames' little-endian bytes as
UINT8 [N, C, H, 2W] (a zero-copy view of the uint16 array) and the first nodes recombine them as
lo + 256 * hi in float32 (exact: every uint16 fits a float32). Chosen over a pycuda SourceModule
kernel because that would need the CUDA compiler (nvcc) on the acquisition PC at run time, and
because this graph runs, and is tested, on a CPU with ONNX Runtime. The host sends 2 bytes a
pixel instead of 4.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from engines.runtime.base import as_nchw

if TYPE_CHECKING:
    import onnx

RAW_INPUT = "frames_u16le"  # the TensorRT plan's input: uint16 frames viewed as bytes
MODEL_INPUT = "frames"  # the exported models' input (engines/training/export.py)
# Bump when the wrapper graph changes: it is part of every TensorRT engine's cache key.
PREPROCESS_VERSION = 1
_PREFIX = "artifactd_pre/"


def as_uint16_frames(frames: np.ndarray, in_channels: int) -> np.ndarray:
    """(N, H, W) or (N, C, H, W) frames -> C-contiguous uint16 (N, C, H, W), losslessly.

    uint16 passes through untouched; uint8 and bool widen; any other integer or float array is
    accepted only when every value is an integer in 0..65535, so nothing is silently clipped.
    """
    frames = as_nchw(frames, in_channels)
    if frames.dtype == np.uint16:
        return np.ascontiguousarray(frames)
    if frames.dtype in (np.uint8, np.bool_):
        return frames.astype(np.uint16)
    if frames.dtype.kind not in "uif":
        raise ValueError(f"frames of dtype {frames.dtype}: expected integer pixels (uint16)")
    if frames.size:
        low, high = frames.min(), frames.max()
        whole = frames.dtype.kind in "ui" or bool(np.all(np.floor(frames) == frames))
        if not (whole and low >= 0 and high <= 65535):
            raise ValueError(
                f"frames of dtype {frames.dtype} range {low}..{high}: this backend takes "
                "integer pixels in 0..65535 (uint16); use the onnxruntime or torch backend "
                "for other values"
            )
    return frames.astype(np.uint16)


def raw_bytes(frames_u16: np.ndarray) -> np.ndarray:
    """uint16 (N, C, H, W) -> the plan's input, uint8 (N, C, H, 2W), without copying."""
    return np.ascontiguousarray(frames_u16, dtype="<u2").view(np.uint8)


def wrap_raw_uint16(model: onnx.ModelProto, pad_multiple: int) -> onnx.ModelProto:
    """The exported model with the device-side preprocessing in front of it.

    Input RAW_INPUT: uint8 [N, C, H, 2W], the uint16 frames' bytes; H and W need not be multiples
    of anything. Outputs keep their names: "score" [N], or "probability" cropped back to
    [N, 1, H, W].
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    original, model = model, onnx.ModelProto()
    model.CopyFrom(original)  # the caller's model stays as it was
    graph = model.graph
    inputs = [i for i in graph.input if i.name == MODEL_INPUT]
    if len(graph.input) != 1 or not inputs:
        raise ValueError(f"expected one model input named {MODEL_INPUT!r}, found "
                         f"{[i.name for i in graph.input]}")
    channels = inputs[0].type.tensor_type.shape.dim[1].dim_value or 1

    def name(s: str) -> str:
        return _PREFIX + s

    def const(key: str, value: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(value, name(key)))
        return name(key)

    initializers: list[onnx.TensorProto] = []
    pairs_shape = const("pairs_shape", np.array([0, 0, 0, -1, 2], dtype=np.int64))
    byte_weights = const("byte_weights", np.array([1.0, 256.0], dtype=np.float32))
    last_axis = const("last_axis", np.array([-1], dtype=np.int64))
    hw_index = const("hw_index", np.array([2, 3], dtype=np.int64))
    multiple = const("multiple", np.array([pad_multiple], dtype=np.int64))
    zeros6 = const("zeros6", np.zeros(6, dtype=np.int64))

    pre = [
        helper.make_node("Cast", [RAW_INPUT], [name("bytes_f")], to=TensorProto.FLOAT,
                         name=name("cast")),
        helper.make_node("Reshape", [name("bytes_f"), pairs_shape], [name("pairs")],
                         name=name("pairs")),
        helper.make_node("Mul", [name("pairs"), byte_weights], [name("weighted")],
                         name=name("weigh")),
        helper.make_node("ReduceSum", [name("weighted"), last_axis], [name("frames_f")],
                         keepdims=0, name=name("combine")),
        helper.make_node("Shape", [name("frames_f")], [name("shape")], name=name("shape")),
        helper.make_node("Gather", [name("shape"), hw_index], [name("hw")], axis=0,
                         name=name("hw")),
        helper.make_node("Mod", [name("hw"), multiple], [name("rem")], name=name("rem")),
        helper.make_node("Sub", [multiple, name("rem")], [name("short")], name=name("short")),
        helper.make_node("Mod", [name("short"), multiple], [name("pad_hw")],
                         name=name("pad_hw")),
        helper.make_node("Concat", [zeros6, name("pad_hw")], [name("pads")], axis=0,
                         name=name("pads")),
        helper.make_node("Pad", [name("frames_f"), name("pads")], [MODEL_INPUT], mode="edge",
                         name=name("pad")),
    ]
    nodes = list(graph.node)
    outputs = list(graph.output)
    post = []
    for out in outputs:
        if len(out.type.tensor_type.shape.dim) != 4:
            continue
        padded = name(out.name + "_padded")
        if not post:
            hw_axes = const("hw_axes", np.array([2, 3], dtype=np.int64))
            zeros2 = const("zeros2", np.zeros(2, dtype=np.int64))
        for node in nodes:
            node.output[:] = [padded if o == out.name else o for o in node.output]
            node.input[:] = [padded if i == out.name else i for i in node.input]
        post.append(helper.make_node(
            "Slice", [padded, zeros2, name("hw"), hw_axes], [out.name], name=name("crop")
        ))
        dims = out.type.tensor_type.shape.dim
        dims[2].Clear()
        dims[2].dim_param = "height"
        dims[3].Clear()
        dims[3].dim_param = "width"

    raw = helper.make_tensor_value_info(
        RAW_INPUT, TensorProto.UINT8, ["batch", channels, "height", "width_bytes"]
    )
    wrapped_graph = helper.make_graph(
        pre + nodes + post, graph.name, [raw], outputs,
        initializer=list(graph.initializer) + initializers,
        value_info=[v for v in graph.value_info if v.name not in {o.name for o in outputs}],
    )
    wrapped = helper.make_model(
        wrapped_graph, opset_imports=list(model.opset_import), ir_version=model.ir_version,
        producer_name="artifactd", producer_version=str(PREPROCESS_VERSION),
    )
    for prop in model.metadata_props:
        entry = wrapped.metadata_props.add()
        entry.key, entry.value = prop.key, prop.value
    entry = wrapped.metadata_props.add()
    entry.key, entry.value = "artifactd.input", f"{RAW_INPUT}: uint16 frames as little-endian bytes"
    onnx.checker.check_model(wrapped)
    return wrapped


def nodes_before_first_conv(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes ahead of the first convolution: they stay in float32.

    They are the byte recombination, padding and per-frame standardisation; in fp16 the squared
    deviations of uint16 pixels (up to 65535**2) overflow, so reduced precision starts at the
    first convolution. ONNX graphs are topologically sorted, so these include every ancestor.
    """
    names = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            return names
        names.append(node.name)
    return names
