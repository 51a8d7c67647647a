"""`artifactd engines`: build TensorRT plans from a model folder's ONNX files, and list the cache.

    artifactd engines build [--model DIR] [--precision fp32|fp16|bf16|int8] [--max-batch N]
                            [--frame-size HxW ...] [--calibration DIR] [--cache DIR]
    artifactd engines list [--cache DIR]

A plan is built from the exported ONNX model with the device-side preprocessing in front of it
(engines/gpu/preprocess.py), one optimisation profile (batch min/opt/max at one frame
shape), and a timing cache persisted beside the plans so rebuilds are quicker.

Precision and the TensorRT version:
- TensorRT 10: fp16 and bf16 through the builder flags (BuilderFlag.FP16 / BF16); int8 through
  implicit quantisation, calibrated with IInt8EntropyCalibrator2 on frames from --calibration.
  Every layer ahead of the first convolution (byte recombination, padding, the per-frame
  standardisation) is pinned to float32 with OBEY_PRECISION_CONSTRAINTS: in fp16 the squared
  deviations of uint16 pixels overflow.
- TensorRT 11 removed those flags and the calibrators (networks are strongly typed). fp16/bf16
  are built from a mixed-precision ONNX model made by NVIDIA ModelOpt AutoCast, keeping the same
  leading nodes in float32 (needs `nvidia-modelopt[onnx]`); int8 would need explicit Q/DQ nodes
  in the ONNX model, which artifactd does not produce: it says so and stops.

Without TensorRT, pycuda or a GPU, `build` exits with status 2 and says what is missing.
`ensure_engine()` is what the tensorrt backend uses to build on first use.

Over 400 lines on purpose: the TensorRT 10 and 11 routes to a reduced-precision plan differ only
in a few calls each, and read best side by side with the build they serve.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from engines.files import write_bytes_atomically
from engines.gpu.available import tensorrt_status
from engines.gpu.enginecache import (
    BuildTarget,
    EngineCache,
    EngineKey,
    Profile,
    default_cache_dir,
    make_profile,
    parse_frame_size,
)
from engines.gpu.preprocess import (
    RAW_INPUT,
    as_uint16_frames,
    nodes_before_first_conv,
    raw_bytes,
    wrap_raw_uint16,
)
from engines.runtime.base import PRECISIONS
from engines.runtime.modelcard import ModelBundle, ModelError, load_model
from engines.timestamps import timestamp

logger = logging.getLogger(__name__)

WORKSPACE_BYTES = 4 << 30
CALIBRATION_SUFFIXES = (".tif", ".tiff", ".npy")
MAX_CALIBRATION_FRAMES = 512


class BuildError(RuntimeError):
    """A plan could not be built; the message says why and what to do."""


# -- what a plan is keyed on ----------------------------------------------------------------------


def tensorrt_major() -> int:
    import tensorrt as trt

    return int(trt.__version__.split(".")[0])


def build_target(device_index: int = 0) -> BuildTarget:
    """TensorRT version, GPU name and compute capability of this machine."""
    import pycuda.driver as cuda
    import tensorrt as trt

    cuda.init()
    device = cuda.Device(device_index)
    major, minor = device.compute_capability()
    return BuildTarget(trt.__version__, device.name(), f"{major}.{minor}")


def engine_key(bundle: ModelBundle, part: str, precision: str, profile: Profile,
               target: BuildTarget) -> EngineKey:
    return EngineKey(model_name=bundle.card.name, model_hash=bundle.weights_hash(), part=part,
                     precision=precision, profile=profile, target=target)


# -- building -------------------------------------------------------------------------------------


@contextlib.contextmanager
def primary_context(device_index: int = 0) -> Iterator[Any]:
    """The device's primary context, current for the duration (never pycuda.autoinit)."""
    import pycuda.driver as cuda

    cuda.init()
    context = cuda.Device(device_index).retain_primary_context()
    context.push()
    try:
        yield cuda
    finally:
        cuda.Context.pop()
        context.detach()


def plan_builder(bundle: ModelBundle, part: str, precision: str, profile: Profile,
                 cache_folder: Path, calibration: Path | None = None) -> Callable[[], bytes]:
    """A function that builds the plan for one part (what EngineCache calls on a miss)."""

    def build() -> bytes:
        frames = None
        if precision == "int8":
            if calibration is None:
                raise BuildError(
                    f"no int8 {part} engine is cached for {profile.height}x{profile.width} "
                    f"frames, batch up to {profile.max_batch}, and int8 needs calibration "
                    "frames: run `artifactd engines build --precision int8 --calibration DIR "
                    f"--frame-size {profile.height}x{profile.width} --max-batch "
                    f"{profile.max_batch}` first"
                )
            frames = load_calibration_frames(calibration, profile)
        return build_plan(
            bundle.path(part), part, precision, profile,
            pad_multiple=bundle.card.pad_multiple,
            timing_cache=cache_folder / "timing.cache",
            calibration_frames=frames,
            calibration_cache=cache_folder / f"{bundle.card.name}-{part}.calib",
        )

    return build


def ensure_engine(bundle: ModelBundle, precision: str, profile: Profile,
                  cache: Path | None = None, *, part: str,
                  calibration: Path | None = None) -> Path:
    """Path of a valid plan for this model part, precision and profile; built if none is."""
    cache_ = EngineCache(cache or default_cache_dir())
    with primary_context():
        key = engine_key(bundle, part, precision, profile, build_target())
        return cache_.ensure(key, plan_builder(bundle, part, precision, profile, cache_.folder,
                                               calibration),
                             lambda: plan_metadata(bundle, part, calibration))


def plan_metadata(bundle: ModelBundle, part: str, calibration: Path | None = None) -> dict:
    """What the cache records beside a plan, besides its key and hash."""
    return {"built_at": timestamp(), "source": str(bundle.path(part)),
            "model_id": bundle.model_id, "calibration": str(calibration) if calibration else ""}


def build_plan(onnx_path: Path, part: str, precision: str, profile: Profile, *,
               pad_multiple: int, timing_cache: Path | None = None,
               calibration_frames: np.ndarray | None = None,
               calibration_cache: Path | None = None) -> bytes:
    """ONNX model -> serialised TensorRT plan (needs a current CUDA context)."""
    import onnx
    import tensorrt as trt

    if precision not in PRECISIONS:
        raise BuildError(f"precision {precision!r}: expected one of {PRECISIONS}")
    major = tensorrt_major()
    model = wrap_raw_uint16(onnx.load(str(onnx_path)), pad_multiple)
    keep_fp32 = nodes_before_first_conv(model)
    if major >= 11:
        if precision == "int8":
            raise BuildError(
                f"TensorRT {trt.__version__} removed implicit int8 quantisation (BuilderFlag.INT8 "
                "and the IInt8 calibrators): int8 there needs an ONNX model with explicit "
                "QuantizeLinear/DequantizeLinear nodes, which artifactd does not produce. Use "
                "--precision fp16 (or TensorRT 10 for calibrated int8)."
            )
        if precision in ("fp16", "bf16"):
            model = _autocast(model, precision, keep_fp32)

    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    _require(builder, "tensorrt.Builder could not be created (no GPU or driver?)")
    network = builder.create_network(0)
    _require(network, "the builder could not create a network definition")
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(model.SerializeToString()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildError(f"TensorRT could not parse {onnx_path} ({part}): {errors}")
    config = builder.create_builder_config()
    _require(config, "the builder could not create a builder config")
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)

    optimisation = builder.create_optimization_profile()
    low, opt, high = profile.input_shapes()
    optimisation.set_shape(RAW_INPUT, low, opt, high)
    if config.add_optimization_profile(optimisation) < 0:
        raise BuildError(f"TensorRT refused the optimisation profile for {RAW_INPUT!r}: "
                         f"min {low}, opt {opt}, max {high}")

    cache = None
    if timing_cache is not None:
        previous = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(previous)
        if cache is None or not config.set_timing_cache(cache, False):
            logger.warning("timing cache %s does not fit this TensorRT/GPU; starting a new one",
                           timing_cache)
            cache = config.create_timing_cache(b"")
            _require(cache is not None and config.set_timing_cache(cache, False),
                     "TensorRT refused a new, empty timing cache")

    if major < 11 and precision != "fp32":
        _set_reduced_precision(trt, builder, network, config, precision, profile,
                               calibration_frames, calibration_cache)

    started = time.monotonic()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BuildError(f"TensorRT could not build the {part} engine ({precision}, profile "
                         f"{profile.tag}); its log above says why")
    logger.info("built the %s engine (%s, %s) in %.0f s", part, precision, profile.tag,
                time.monotonic() - started)
    if timing_cache is not None and cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomically(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(plan)


def _require(ok: object, message: str) -> None:
    if not ok:
        raise BuildError(message)


def _set_reduced_precision(trt: Any, builder: Any, network: Any, config: Any, precision: str,
                           profile: Profile, calibration_frames: np.ndarray | None,
                           calibration_cache: Path | None) -> None:
    """TensorRT 10: precision flags, the float32 pin ahead of the first convolution, and the
    int8 calibrator."""
    flags = {"fp16": ["FP16"], "bf16": ["BF16"], "int8": ["INT8", "FP16"]}[precision]
    for flag in flags:
        if not hasattr(trt.BuilderFlag, flag):
            raise BuildError(f"TensorRT {trt.__version__} has no BuilderFlag.{flag}; "
                             f"precision {precision} cannot be built with it")
        config.set_flag(getattr(trt.BuilderFlag, flag))
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type == trt.LayerType.CONVOLUTION:
            break
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if outputs and all(t.dtype == trt.DataType.FLOAT for t in outputs):
            layer.precision = trt.DataType.FLOAT
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.DataType.FLOAT)
            pinned += 1
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    logger.info("pinned %d layers ahead of the first convolution to float32", pinned)
    if precision != "int8":
        return
    if calibration_frames is None or not len(calibration_frames):
        raise BuildError("int8 needs calibration frames (--calibration DIR)")
    batch = min(8, profile.max_batch)
    calibration_profile = builder.create_optimization_profile()
    shape = (batch, profile.channels, profile.height, 2 * profile.width)
    calibration_profile.set_shape(RAW_INPUT, shape, shape, shape)
    _require(config.set_calibration_profile(calibration_profile),
             f"TensorRT refused the calibration profile {shape} for {RAW_INPUT!r}")
    config.int8_calibrator = _entropy_calibrator(trt, calibration_frames, batch,
                                                 calibration_cache)


def _entropy_calibrator(trt: Any, frames: np.ndarray, batch: int, cache_path: Path | None
                        ) -> Any:
    import pycuda.driver as cuda

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """Feeds the calibration frames' bytes, `batch` at a time (the last batch repeats)."""

        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.position = 0
            self.device = cuda.mem_alloc(batch * frames[0].nbytes)

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.position >= len(frames):
                return None
            chunk = frames[self.position:self.position + batch]
            if len(chunk) < batch:
                chunk = np.resize(chunk, (batch, *frames.shape[1:]))  # repeats cyclically
            cuda.memcpy_htod(self.device, raw_bytes(np.ascontiguousarray(chunk)))
            self.position += batch
            return [int(self.device)]

        def read_calibration_cache(self) -> bytes | None:
            if cache_path is not None and cache_path.is_file():
                return cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_path is not None:
                write_bytes_atomically(cache_path, bytes(cache))

    return EntropyCalibrator()


def _autocast(model: Any, precision: str, keep_fp32: list[str]) -> Any:
    """TensorRT 11: mixed-precision ONNX through ModelOpt AutoCast (the documented path)."""
    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision
    except ImportError as exc:
        raise BuildError(
            "TensorRT 11 has no FP16/BF16 builder flags: reduced precision needs the ONNX model "
            "converted to mixed precision by NVIDIA ModelOpt AutoCast, which is not installed "
            f"({exc}). Install it (pip install 'nvidia-modelopt[onnx]') or build --precision fp32."
        ) from exc
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "wrapped.onnx"
        onnx.save(model, str(path))
        return convert_to_mixed_precision(
            onnx_path=str(path), low_precision_type=precision, keep_io_types=True,
            nodes_to_exclude=[f"^{re.escape(name)}$" for name in keep_fp32],
        )


# -- calibration frames ---------------------------------------------------------------------------


def load_calibration_frames(folder: Path, profile: Profile,
                            limit: int = MAX_CALIBRATION_FRAMES) -> np.ndarray:
    """Frames from a folder (TIFF or .npy), cropped or edge-padded to the profile's shape."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BuildError(f"--calibration {folder}: expected a folder of frames, found none")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in CALIBRATION_SUFFIXES)
    if not paths:
        raise BuildError(f"--calibration {folder}: expected TIFF or .npy frames, found none")
    frames = []
    for path in paths[:limit]:
        try:
            frames.append(_fit(_read_frame(path), profile))
        except (OSError, ValueError) as exc:
            logger.warning("calibration: skipping %s (%s)", path, exc)
    if not frames:
        raise BuildError(f"--calibration {folder}: none of the {len(paths)} files could be read")
    logger.info("calibrating on %d frames from %s", len(frames), folder)
    return np.stack(frames)


def _read_frame(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        return np.load(path, allow_pickle=False)
    import tifffile

    return tifffile.imread(path)


def _fit(frame: np.ndarray, profile: Profile) -> np.ndarray:
    """(H, W) or (C, H, W) -> uint16 (C, H, W) at the profile's frame shape."""
    if frame.ndim == 2:
        frame = frame[None]
    batch = as_uint16_frames(frame[None], profile.channels)[0]
    batch = batch[:, : profile.height, : profile.width]
    ph, pw = profile.height - batch.shape[1], profile.width - batch.shape[2]
    if ph or pw:
        batch = np.pad(batch, ((0, 0), (0, ph), (0, pw)), mode="edge")
    return batch


# -- command line ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="engines_command", metavar="SUBCOMMAND", required=True)
    build = sub.add_parser("build", help="build TensorRT plans for a model (cached)",
                           description="Build TensorRT plans for a model's detector and "
                           "segmenter, one per frame size, into the engine cache.")
    build.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    build.add_argument("--precision", choices=PRECISIONS, default="fp16",
                       help="default %(default)s (int8 needs --calibration; TensorRT 10 only)")
    build.add_argument("--max-batch", type=int, default=8,
                       help="largest batch (default %(default)s)")
    build.add_argument("--opt-batch", type=int, default=None,
                       help="batch TensorRT tunes for (default: --max-batch)")
    build.add_argument("--frame-size", action="append", default=None, metavar="HxW",
                       help="frame height x width in pixels; repeat for several "
                       "(default 2048x2048)")
    build.add_argument("--calibration", type=Path, default=None,
                       help="folder of frames (TIFF/.npy) to calibrate int8 on")
    build.add_argument("--cache", type=Path, default=None,
                       help=f"engine cache folder (default {default_cache_dir()})")
    build.add_argument("--parts", default="detector,segmenter",
                       help="which models to build (default %(default)s)")
    listing = sub.add_parser("list", help="list the cached engines")
    listing.add_argument("--cache", type=Path, default=None,
                         help=f"engine cache folder (default {default_cache_dir()})")


def main(args: argparse.Namespace) -> int:
    if args.engines_command == "list":
        return _list(EngineCache(args.cache or default_cache_dir()))
    status = tensorrt_status()
    if status != "ok":
        print(f"artifactd engines build: TensorRT engines cannot be built here: {status}",
              file=sys.stderr)
        return 2
    try:
        bundle = load_model(args.model)
        sizes = [parse_frame_size(s) for s in (args.frame_size or ["2048x2048"])]
        parts = [p.strip() for p in args.parts.split(",") if p.strip()]
        unknown = [p for p in parts if p not in ("detector", "segmenter")]
        if unknown or not parts:
            raise ValueError(f"--parts {args.parts!r}: expected detector and/or segmenter")
        profiles = [make_profile(args.max_batch, size, channels=bundle.card.in_channels,
                                 opt_batch=args.opt_batch) for size in sizes]
        if args.precision == "int8" and args.calibration is None:
            raise ValueError("--precision int8 needs --calibration DIR (frames to calibrate on)")
    except (ModelError, ValueError) as exc:
        print(f"artifactd engines build: {exc}", file=sys.stderr)
        return 2
    rows = []
    for profile in profiles:
        for part in parts:
            started = time.monotonic()
            try:
                path = ensure_engine(bundle, args.precision, profile, args.cache, part=part,
                                     calibration=args.calibration)
            except BuildError as exc:
                print(f"artifactd engines build: {exc}", file=sys.stderr)
                return 1
            rows.append((part, args.precision, f"{profile.height}x{profile.width}",
                         f"{profile.min_batch}-{profile.max_batch}",
                         f"{time.monotonic() - started:.0f} s", str(path)))
    print("| part | precision | frames | batch | time | plan |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


def _list(cache: EngineCache) -> int:
    entries = list(cache.entries())
    if not entries:
        print(f"no engines cached in {cache.folder}")
        return 0
    print("| slot | TensorRT | GPU | built |")
    print("|---|---|---|---|")
    for entry in entries:
        target = entry.get("key", {}).get("target", {})
        print(f"| {entry['slot']} | {target.get('tensorrt_version', '?')} | "
              f"{target.get('gpu_name', '?')} (sm {target.get('compute_capability', '?')}) | "
              f"{entry.get('built_at', '?')} |")
    return 0
