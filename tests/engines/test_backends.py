"""Backends: parity against torch fp32, device-side preprocessing, and backend selection.

GPU and TensorRT tests are marked and skip with the reason where the hardware or packages are
missing; the CPU parts (torch on CPU vs ONNX Runtime, the TensorRT preprocessing graph run by
ONNX Runtime, selection) run everywhere.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from engines.gpu.preprocess import (
    RAW_INPUT,
    as_uint16_frames,
    nodes_before_first_conv,
    raw_bytes,
    wrap_raw_uint16,
)
from engines.runtime.base import pad_to_multiple
from engines.runtime.modelcard import ModelBundle, load_model
from engines.select import (
    BackendUnavailable,
    available_backends,
    choose_backend,
    create_engine,
    create_engines,
    inference_plan,
)

_MODEL: dict[str, Path] = {}


def make_tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random-weight model folder, exported once per test session (~10-50 s)."""
    if "path" not in _MODEL:
        torch = pytest.importorskip("torch")
        from engines.pytorch.models import Architecture, Detector, UNet
        from engines.training.export import write_model_folder
        from engines.training.options import TrainedModels, TrainOptions

        torch.manual_seed(0)
        arch = Architecture(in_channels=1, unshuffle=4, detector_widths=(8, 16),
                            unet_widths=(8, 16))
        trained = TrainedModels(Detector(arch).eval(), UNet(arch).eval(), 0.5, 0.5,
                                "supervised", "all", {}, [])
        folder = tmp_path_factory.mktemp("tiny-model") / "model"
        write_model_folder(folder, trained, TrainOptions(arch=arch, name="tiny"), "test",
                           version="0")
        _MODEL["path"] = folder
    return _MODEL["path"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> ModelBundle:
    return load_model(make_tiny_model(tmp_path_factory))


def frames_u16(n: int = 3, h: int = 37, w: int = 50, seed: int = 0) -> np.ndarray:
    """Brightfield-like uint16 frames whose size is not a multiple of the pad multiple."""
    rng = np.random.default_rng(seed)
    base = rng.normal(3000, 400, (n, h, w))
    base[:, h // 3: h // 2, w // 4: w // 2] -= 1500  # a dark speck
    return np.clip(base, 0, 65535).astype(np.uint16)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _cuda() -> bool:
    if not _has("torch"):
        return False
    import torch

    return torch.cuda.is_available()


TENSORRT_READY = available_backends()["tensorrt"] == "ok"
needs_cuda = pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU; none on this machine")
needs_tensorrt = pytest.mark.skipif(
    not TENSORRT_READY,
    reason=f"needs TensorRT, pycuda and a GPU: {available_backends()['tensorrt']}",
)
# Per-precision tolerances on probabilities (0..1) against torch fp32 on the CPU. fp32 on a GPU
# allows TF32 convolutions (cuDNN and TensorRT defaults).
TOLERANCE = {"fp32": 2e-3, "fp16": 3e-2, "bf16": 8e-2}


def _reference(bundle: ModelBundle, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from engines.pytorch.backend import TorchEngine

    engine = TorchEngine(bundle, device="cpu")
    try:
        return engine.detect(frames), engine.segment(frames)
    finally:
        engine.close()


# -- CPU: torch vs ONNX Runtime -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint16, np.uint8, np.float32])
def test_torch_cpu_matches_onnxruntime(tiny_model: ModelBundle, dtype: type) -> None:
    frames = frames_u16()
    if dtype is np.uint8:
        frames = (frames // 64).astype(np.uint8)
    frames = frames.astype(dtype)
    ort = create_engine(tiny_model, backend="onnxruntime")
    torch_cpu = create_engine(tiny_model, backend="torch")
    try:
        assert torch_cpu.info.backend == "torch"
        if not _cuda():
            assert torch_cpu.info.device == "cpu"
        scores, masks = ort.detect(frames), ort.segment(frames)
        assert scores.shape == (3,) and masks.shape == (3, 37, 50)
        assert torch_cpu.detect(frames).dtype == np.float32
        atol = 1e-4 if torch_cpu.info.device == "cpu" else TOLERANCE["fp32"]
        np.testing.assert_allclose(torch_cpu.detect(frames), scores, atol=atol)
        np.testing.assert_allclose(torch_cpu.segment(frames), masks, atol=atol)
    finally:
        ort.close()
        torch_cpu.close()


def test_torch_cpu_accepts_channel_axis(tiny_model: ModelBundle) -> None:
    frames = frames_u16(2, 32, 48)
    engine = create_engine(tiny_model, backend="torch")
    try:
        np.testing.assert_array_equal(engine.segment(frames), engine.segment(frames[:, None]))
        with pytest.raises(ValueError, match="expected frames shaped"):
            engine.detect(np.zeros((2, 3, 32, 48), dtype=np.uint16))
    finally:
        engine.close()


# -- the TensorRT preprocessing graph, run by ONNX Runtime ----------------------------------------


@pytest.mark.parametrize("part", ["detector", "segmenter"])
def test_preprocessing_graph_matches_host_preprocessing(tiny_model: ModelBundle,
                                                        part: str) -> None:
    """The graph TensorRT builds from: uint16 bytes in, same result as host cast + edge pad."""
    import onnx
    import onnxruntime as ort

    original = onnx.load(str(tiny_model.path(part)))
    wrapped = wrap_raw_uint16(original, tiny_model.card.pad_multiple)
    plain = ort.InferenceSession(original.SerializeToString(),
                                 providers=["CPUExecutionProvider"])
    device_side = ort.InferenceSession(wrapped.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
    for h, w in ((37, 50), (32, 48), (1, 17)):
        frames = frames_u16(2, h, w)
        frames[0, 0, 0] = 65535  # both bytes set: the recombination must be exact
        batch = pad_to_multiple(frames[:, None].astype(np.float32), tiny_model.card.pad_multiple)
        (want,) = plain.run(None, {"frames": batch})
        (got,) = device_side.run(None, {RAW_INPUT: raw_bytes(frames[:, None])})
        if part == "segmenter":
            want = want[:, :, :h, :w]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_wrapped_graph_leaves_the_model_alone(tiny_model: ModelBundle) -> None:
    import onnx

    original = onnx.load(str(tiny_model.path("segmenter")))
    before = original.SerializeToString()
    wrapped = wrap_raw_uint16(original, tiny_model.card.pad_multiple)
    assert original.SerializeToString() == before
    assert [i.name for i in wrapped.graph.input] == [RAW_INPUT]
    assert [o.name for o in wrapped.graph.output] == ["probability"]
    assert wrapped.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


def test_float32_pin_covers_standardisation(tiny_model: ModelBundle) -> None:
    import onnx

    model = wrap_raw_uint16(onnx.load(str(tiny_model.path("detector"))),
                            tiny_model.card.pad_multiple)
    kept = set(nodes_before_first_conv(model))
    by_name = {n.name: n.op_type for n in model.graph.node}
    ops = {by_name[name] for name in kept}
    assert {"Cast", "Pad", "ReduceMean", "Sqrt"} <= ops
    assert "Conv" not in ops
    squares = [n for n in model.graph.node if n.op_type in ("Pow", "Mul") and n.name in kept]
    assert squares, "the squared deviations must stay in float32"


def test_as_uint16_frames_is_lossless_or_refuses() -> None:
    frames = frames_u16(2, 8, 9)
    same = as_uint16_frames(frames, 1)
    assert same.shape == (2, 1, 8, 9) and same.dtype == np.uint16
    np.testing.assert_array_equal(as_uint16_frames(frames.astype(np.int32), 1), same)
    np.testing.assert_array_equal(as_uint16_frames(frames.astype(np.float64), 1), same)
    assert as_uint16_frames(np.full((1, 2, 2), 7, np.uint8), 1).dtype == np.uint16
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        as_uint16_frames(np.full((1, 2, 2), 0.5, np.float32), 1)
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        as_uint16_frames(np.full((1, 2, 2), -1, np.int16), 1)
    with pytest.raises(ValueError, match="expected frames shaped"):
        as_uint16_frames(np.zeros((1, 2, 2, 2), np.uint16), 1)


def test_raw_bytes_is_a_little_endian_view() -> None:
    frames = np.array([[[[0x1234, 0xFFFF]]]], dtype=np.uint16)
    raw = raw_bytes(frames)
    assert raw.dtype == np.uint8 and raw.shape == (1, 1, 1, 4)
    assert raw.ravel().tolist() == [0x34, 0x12, 0xFF, 0xFF]
    assert np.shares_memory(raw, frames)
    big = frames.astype(">u2")
    assert raw_bytes(big).ravel().tolist() == [0x34, 0x12, 0xFF, 0xFF]


# -- selection ------------------------------------------------------------------------------------


def test_available_backends_says_ok_or_why() -> None:
    status = available_backends()
    assert set(status) == {"onnxruntime", "torch", "tensorrt"}
    assert status["onnxruntime"] == "ok"
    for value in status.values():
        assert value == "ok" or len(value) > 10


@pytest.mark.skipif(TENSORRT_READY or _cuda(), reason="a GPU backend is available here")
def test_auto_picks_onnxruntime_on_a_cpu_and_says_why(tiny_model: ModelBundle,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    choice = choose_backend("auto")
    assert (choice.backend, choice.device) == ("onnxruntime", "cpu")
    assert "tensorrt" in choice.reason and "torch" in choice.reason
    with caplog.at_level(logging.INFO, logger="engines.select"):
        engine = create_engine(tiny_model)
    try:
        assert engine.info.backend == "onnxruntime"
        lines = [r.getMessage() for r in caplog.records if r.name == "engines.select"]
        assert len(lines) == 1
        assert "onnxruntime" in lines[0] and "tensorrt" in lines[0]
    finally:
        engine.close()


@pytest.mark.skipif(TENSORRT_READY, reason="TensorRT is available here")
def test_explicit_tensorrt_fails_with_what_is_missing(tiny_model: ModelBundle) -> None:
    with pytest.raises(BackendUnavailable, match="tensorrt") as error:
        create_engine(tiny_model, backend="tensorrt")
    message = str(error.value)
    assert "cannot run here" in message
    assert any(word in message for word in ("not installed", "GPU", "driver", "import"))


@pytest.mark.skipif(_cuda(), reason="a CUDA GPU is present")
def test_a_precision_asked_for_is_never_silently_changed(tiny_model: ModelBundle) -> None:
    with pytest.raises(BackendUnavailable, match="precision fp16"):
        create_engine(tiny_model, backend="torch", precision="fp16")
    with pytest.raises(BackendUnavailable, match="precision int8"):
        create_engine(tiny_model, backend="onnxruntime", precision="int8")
    if not TENSORRT_READY:
        with pytest.raises(BackendUnavailable, match=r"precision fp16.*auto"):
            create_engine(tiny_model, backend="auto", precision="fp16")


def test_unknown_names_are_refused(tiny_model: ModelBundle) -> None:
    with pytest.raises(ValueError, match="backend 'openvino'"):
        create_engine(tiny_model, backend="openvino")
    with pytest.raises(ValueError, match="precision 'fp8'"):
        choose_backend("onnxruntime", "fp8")
    with pytest.raises(ValueError, match="max_batch"):
        create_engine(tiny_model, max_batch=0)


# -- GPU: torch on CUDA ---------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_torch_cuda_matches_torch_fp32(tiny_model: ModelBundle, precision: str) -> None:
    frames = frames_u16(4, 64, 80)
    want_scores, want_masks = _reference(tiny_model, frames)
    engine = create_engine(tiny_model, backend="torch", precision=precision)
    try:
        assert engine.info.device.startswith("cuda")
        for _ in range(3):  # eager, then capture, then replay of the CUDA graph
            scores, masks = engine.detect(frames), engine.segment(frames)
            assert scores.dtype == np.float32 and masks.shape == (4, 64, 80)
            np.testing.assert_allclose(scores, want_scores, atol=TOLERANCE[precision])
            np.testing.assert_allclose(masks, want_masks, atol=TOLERANCE[precision])
        other = frames_u16(2, 37, 50, seed=1)  # a new shape runs eagerly
        np.testing.assert_allclose(engine.segment(other), _reference(tiny_model, other)[1],
                                   atol=TOLERANCE[precision])
    finally:
        engine.close()


@pytest.mark.gpu
@needs_cuda
def test_torch_cuda_graph_replays_new_data(tiny_model: ModelBundle) -> None:
    engine = create_engine(tiny_model, backend="torch")
    try:
        first, second = frames_u16(2, 64, 64, seed=1), frames_u16(2, 64, 64, seed=2)
        for _ in range(3):
            engine.segment(first)
        replayed = engine.segment(second)
        np.testing.assert_allclose(replayed, _reference(tiny_model, second)[1],
                                   atol=TOLERANCE["fp32"])
    finally:
        engine.close()


# -- GPU: TensorRT --------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_matches_torch_fp32(tiny_model: ModelBundle, precision: str,
                                     tmp_path: Path) -> None:
    frames = frames_u16(5, 37, 50)
    want_scores, want_masks = _reference(tiny_model, frames)
    engine = create_engine(tiny_model, backend="tensorrt", precision=precision, max_batch=4,
                           engine_cache=tmp_path, frame_shape=(37, 50))
    try:
        assert engine.info.backend == "tensorrt"
        np.testing.assert_allclose(engine.detect(frames), want_scores,
                                   atol=TOLERANCE[precision])
        np.testing.assert_allclose(engine.segment(frames), want_masks,
                                   atol=TOLERANCE[precision])
    finally:
        engine.close()


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_tensorrt
def test_tensorrt_int8_calibrated_close_to_fp32(tiny_model: ModelBundle, tmp_path: Path) -> None:
    from engines.gpu.build import ensure_engine, tensorrt_major
    from engines.gpu.enginecache import make_profile

    if tensorrt_major() >= 11:
        pytest.skip("TensorRT 11 has no implicit int8 calibration (explicit Q/DQ only)")
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    for i, frame in enumerate(frames_u16(16, 37, 50, seed=3)):
        np.save(calibration / f"{i}.npy", frame)
    profile = make_profile(4, (37, 50))
    for part in ("detector", "segmenter"):
        ensure_engine(tiny_model, "int8", profile, tmp_path / "cache", part=part,
                      calibration=calibration)
    frames = frames_u16(4, 37, 50)
    engine = create_engine(tiny_model, backend="tensorrt", precision="int8", max_batch=4,
                           engine_cache=tmp_path / "cache", frame_shape=(37, 50))
    try:
        want = _reference(tiny_model, frames)[1]
        assert float(np.abs(engine.segment(frames) - want).mean()) < 0.05
    finally:
        engine.close()


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_tensorrt
def test_tensorrt_rebuilds_a_corrupt_plan(tiny_model: ModelBundle, tmp_path: Path) -> None:
    from engines.gpu.build import ensure_engine
    from engines.gpu.enginecache import make_profile

    plan = ensure_engine(tiny_model, "fp32", make_profile(2, (32, 32)), tmp_path,
                         part="detector")
    plan.write_bytes(b"not a plan")
    engine = create_engine(tiny_model, backend="tensorrt", max_batch=2, engine_cache=tmp_path,
                           frame_shape=(32, 32))
    try:
        frames = frames_u16(3, 32, 32)
        np.testing.assert_allclose(engine.detect(frames), _reference(tiny_model, frames)[0],
                                   atol=TOLERANCE["fp32"])
    finally:
        engine.close()


# -- the TensorRT runner's bookkeeping, on fake CUDA -----------------------------------------------
# TensorRT and pycuda cannot run here. These fakes stand in for them only to check the runner's own
# logic: chunking into two alternating slots, bindings per chunk, results back in order, plan
# loading through the cache and the rebuild of a plan TensorRT refuses. The "GPU" runs the same
# wrapped ONNX graph TensorRT builds from, with ONNX Runtime. The real thing is tested above.


class _FakeDeviceMemory:
    registry: ClassVar[dict[int, _FakeDeviceMemory]] = {}

    def __init__(self, nbytes: int) -> None:
        self.data = np.zeros(nbytes, dtype=np.uint8)
        self.address = 0x1000 + 0x100000 * len(self.registry)
        self.registry[self.address] = self
        self.freed = False

    def __int__(self) -> int:
        return self.address

    def free(self) -> None:
        self.freed = True


class _FakeCuda:
    """The parts of pycuda.driver the backend uses; copies are immediate."""

    class Context:
        pushed = 0

        @staticmethod
        def pop() -> None:
            _FakeCuda.Context.pushed -= 1

    class _Primary:
        def push(self) -> None:
            _FakeCuda.Context.pushed += 1

        def detach(self) -> None:
            pass

    class Device:
        def __init__(self, index: int) -> None:
            self.index = index

        @staticmethod
        def count() -> int:
            return 1

        def name(self) -> str:
            return "Fake GPU"

        def compute_capability(self) -> tuple[int, int]:
            return (9, 0)

        def retain_primary_context(self) -> _FakeCuda._Primary:
            return _FakeCuda._Primary()

    class Stream:
        handle = 7

        def synchronize(self) -> None:
            pass

        def wait_for_event(self, event: object) -> None:
            pass

    class Event:
        def record(self, stream: object) -> None:
            pass

        def synchronize(self) -> None:
            pass

    @staticmethod
    def init() -> None:
        pass

    @staticmethod
    def pagelocked_empty(shape: tuple, dtype: type) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    @staticmethod
    def mem_alloc(nbytes: int) -> _FakeDeviceMemory:
        return _FakeDeviceMemory(nbytes)

    @staticmethod
    def memcpy_htod_async(dest: _FakeDeviceMemory, src: np.ndarray, stream: object) -> None:
        raw = np.ascontiguousarray(src).view(np.uint8).ravel()
        dest.data[: raw.size] = raw

    @staticmethod
    def memcpy_dtoh_async(dest: np.ndarray, src: _FakeDeviceMemory, stream: object) -> None:
        view = dest.view(np.uint8).reshape(-1)
        view[:] = src.data[: view.size]

    @staticmethod
    def mem_get_info() -> tuple[int, int]:
        return (60 << 30, 80 << 30)


class _FakeTrt:
    __version__ = "10.99.0"

    class TensorIOMode:
        INPUT, OUTPUT = "input", "output"

    class DataType:
        UINT8, FLOAT = "uint8", "float32"

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    class Runtime:
        def __init__(self, logger: object) -> None:
            pass

        def deserialize_cuda_engine(self, plan: bytes) -> object:
            if not plan.startswith(b"FAKE:"):
                return None
            part, folder = plan[5:].decode().split("|")
            return _FakeCudaEngine(part, Path(folder))


class _FakeCudaEngine:
    def __init__(self, part: str, folder: Path) -> None:
        import onnx
        import onnxruntime as ort

        bundle = load_model(folder)
        wrapped = wrap_raw_uint16(onnx.load(str(bundle.path(part))), bundle.card.pad_multiple)
        self.session = ort.InferenceSession(wrapped.SerializeToString(),
                                            providers=["CPUExecutionProvider"])
        self.output = "score" if part == "detector" else "probability"
        self.num_io_tensors = 2

    def get_tensor_name(self, i: int) -> str:
        return [RAW_INPUT, self.output][i]

    def get_tensor_mode(self, name: str) -> str:
        return "input" if name == RAW_INPUT else "output"

    def get_tensor_dtype(self, name: str) -> str:
        return "uint8" if name == RAW_INPUT else "float32"

    def create_execution_context(self) -> _FakeContext:
        return _FakeContext(self)


class _FakeContext:
    def __init__(self, engine: _FakeCudaEngine) -> None:
        self.engine = engine
        self.shape: tuple[int, ...] = ()
        self.addresses: dict[str, int] = {}
        self.batches: list[int] = []

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shape = tuple(shape)
        return name == RAW_INPUT and shape[0] <= 4

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        n, _, h, w2 = self.shape
        return (n,) if self.engine.output == "score" else (n, 1, h, w2 // 2)

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream: int) -> bool:
        source = _FakeDeviceMemory.registry[self.addresses[RAW_INPUT]]
        raw = source.data[: int(np.prod(self.shape))].reshape(self.shape)
        (out,) = self.engine.session.run(None, {RAW_INPUT: raw})
        target = _FakeDeviceMemory.registry[self.addresses[self.engine.output]]
        target.data[: out.nbytes] = np.ascontiguousarray(out, np.float32).view(np.uint8).ravel()
        self.batches.append(self.shape[0])
        return True


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    import engines.gpu.build as build

    pycuda = types.ModuleType("pycuda")
    pycuda.driver = _FakeCuda  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", _FakeCuda)  # type: ignore[arg-type]
    monkeypatch.setitem(sys.modules, "tensorrt", _FakeTrt)  # type: ignore[arg-type]
    _FakeDeviceMemory.registry.clear()
    builds: list[str] = []

    def fake_plan_builder(bundle: ModelBundle, part: str, precision: str, profile: object,
                          cache_folder: Path, calibration: Path | None = None):
        def plan() -> bytes:
            builds.append(part)
            if builds.count(part) == 1 and part == "segmenter":
                return b"a plan TensorRT refuses"
            return f"FAKE:{part}|{bundle.folder}".encode()

        return plan

    monkeypatch.setattr(build, "plan_builder", fake_plan_builder)
    return builds  # type: ignore[return-value]


def test_tensorrt_runner_logic_on_fake_cuda(tiny_model: ModelBundle, tmp_path: Path,
                                            fake_gpu: list[str]) -> None:
    from engines.gpu.tensorrt import TensorRTEngine

    assert available_backends()["tensorrt"] == "ok"
    engine = create_engine(tiny_model, backend="tensorrt", max_batch=4, engine_cache=tmp_path,
                           frame_shape=(37, 50))
    assert isinstance(engine, TensorRTEngine)
    try:
        assert engine.info.device == "cuda:0 Fake GPU"
        # the segmenter's first plan was refused by the runtime and rebuilt; both are cached
        assert fake_gpu == ["detector", "segmenter", "segmenter"]
        assert sorted(p.suffix for p in tmp_path.iterdir() if not p.name.startswith(".")) \
            == [".json", ".json", ".plan", ".plan"]
        ort = create_engine(tiny_model, backend="onnxruntime")
        for n in (1, 2, 3, 7, 9):  # one chunk, two halves, max_batch chunks and a remainder
            frames = frames_u16(n, 37, 50, seed=n)
            np.testing.assert_allclose(engine.detect(frames), ort.detect(frames), atol=1e-6)
            np.testing.assert_allclose(engine.segment(frames), ort.segment(frames), atol=1e-6)
        runner = engine._runners[("segmenter", 37, 50)]
        assert max(runner._context.batches) == 4  # never past the profile's max batch
        assert runner._context.batches[-3:] == [4, 4, 1]
        assert _FakeCuda.Context.pushed == 0  # every push popped
        with pytest.raises(ValueError, match=r"0\.\.65535"):
            engine.detect(np.full((1, 37, 50), 0.5, np.float32))
        ort.close()
    finally:
        engine.close()
    assert all(m.freed for m in _FakeDeviceMemory.registry.values())
    second = create_engine(tiny_model, backend="tensorrt", max_batch=4, engine_cache=tmp_path,
                           frame_shape=(37, 50))
    second.close()
    assert fake_gpu == ["detector", "segmenter", "segmenter"]  # cached plans reused


# ------------------------------------------------------------------ engines side by side


def test_inference_plan_one_single_threaded_engine_per_core_on_cpu_one_engine_on_gpu():
    assert inference_plan("cpu", cores=2) == (2, 1)
    assert inference_plan("cpu", cores=8) == (8, 1)
    assert inference_plan("cuda", cores=8) == (1, 8)
    # What the user set is kept; threads default to the cores shared among the workers.
    assert inference_plan("cpu", workers=2, cores=8) == (2, 4)
    assert inference_plan("cpu", workers=1, threads=3, cores=8) == (1, 3)
    assert inference_plan("cpu", workers=4, cores=2) == (4, 1)


def test_create_engines_opens_independent_sessions_with_the_planned_threads(tiny_model):
    engines = create_engines(tiny_model, backend="onnxruntime", workers=2, threads=1)
    try:
        assert len(engines) == 2 and engines[0] is not engines[1]
        for engine in engines:
            assert engine._detector.get_session_options().intra_op_num_threads == 1
        frames = np.random.default_rng(0).integers(0, 4000, (2, 64, 64), dtype=np.uint16)
        np.testing.assert_allclose(engines[0].detect(frames), engines[1].detect(frames), rtol=1e-6)
    finally:
        for engine in engines:
            engine.close()
