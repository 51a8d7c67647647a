"""Engine cache: keys, profiles, rebuild on mismatch or corruption; `artifactd engines` CLI.

TensorRT cannot run here, so the plan builder and loader are fakes injected into the real cache
(the real ones are exercised by the tensorrt-marked tests in test_backends.py on a GPU).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from daemon.cli import main as cli_main
from engines.gpu.build import BuildError, load_calibration_frames
from engines.gpu.enginecache import (
    BuildTarget,
    EngineCache,
    EngineKey,
    PlanError,
    Profile,
    key_differences,
    make_profile,
    parse_frame_size,
)
from engines.select import available_backends

TARGET = BuildTarget("10.9.0", "NVIDIA H100 80GB HBM3", "9.0")


def key(**changes: object) -> EngineKey:
    base = EngineKey(model_name="tiny", model_hash="a" * 64, part="detector", precision="fp16",
                     profile=make_profile(8, (2048, 2048)), target=TARGET)
    return dataclasses.replace(base, **changes)


class FakeBuilder:
    """Counts builds; each plan's bytes say which build made them."""

    def __init__(self) -> None:
        self.builds = 0

    def __call__(self) -> bytes:
        self.builds += 1
        return f"plan #{self.builds}".encode()


# -- profiles and frame sizes ---------------------------------------------------------------------


def test_parse_frame_size() -> None:
    assert parse_frame_size("1080x1080") == (1080, 1080)
    assert parse_frame_size(" 2048X1024 ") == (2048, 1024)
    for bad in ("2048", "0x10", "axb", "10x-1", ""):
        with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
            parse_frame_size(bad)


def test_profile_shapes_are_the_frames_bytes() -> None:
    profile = make_profile(16, (1080, 1920))
    assert (profile.min_batch, profile.opt_batch, profile.max_batch) == (1, 16, 16)
    low, opt, high = profile.input_shapes()
    assert low == (1, 1, 1080, 3840)
    assert opt == high == (16, 1, 1080, 3840)
    assert make_profile(32, (64, 64), opt_batch=8, channels=2).input_shapes()[1] == (8, 2, 64, 128)
    assert profile.tag == "b1-16-16_c1_1080x1920"


@pytest.mark.parametrize("kwargs", [
    {"max_batch": 0, "frame_shape": (64, 64)},
    {"max_batch": 4, "frame_shape": (64, 64), "opt_batch": 5},
    {"max_batch": 4, "frame_shape": (64, 64), "min_batch": 0},
    {"max_batch": 4, "frame_shape": (0, 64)},
    {"max_batch": 4, "frame_shape": (64, 64), "channels": 0},
])
def test_profile_rejects_impossible_ranges(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        make_profile(**kwargs)


# -- keys -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes", [
    {"model_name": "other"},
    {"model_hash": "b" * 64},
    {"part": "segmenter"},
    {"precision": "int8"},
    {"profile": make_profile(8, (1080, 1080))},
    {"profile": make_profile(16, (2048, 2048))},
    {"profile": make_profile(8, (2048, 2048), opt_batch=4)},
    {"profile": make_profile(8, (2048, 2048), min_batch=2)},
    {"profile": make_profile(8, (2048, 2048), channels=3)},
    {"target": BuildTarget("10.10.0", TARGET.gpu_name, TARGET.compute_capability)},
    {"target": BuildTarget(TARGET.tensorrt_version, "NVIDIA L4", TARGET.compute_capability)},
    {"target": BuildTarget(TARGET.tensorrt_version, TARGET.gpu_name, "8.9")},
    {"preprocess_version": 99},
])
def test_the_key_changes_with_every_field(changes: dict) -> None:
    assert key(**changes).digest() != key().digest()
    assert key(**changes).to_dict() != key().to_dict()


def test_the_key_is_stable() -> None:
    assert key().digest() == key().digest()
    assert json.loads(json.dumps(key().to_dict())) == key().to_dict()


def test_slots_keep_one_plan_per_configuration() -> None:
    """GPU, TensorRT or weights changes reuse the slot (the plan is replaced, not piled up);
    precision, part and profile get their own."""
    newer = key(target=BuildTarget("10.10.0", "NVIDIA L4", "8.9"), model_hash="c" * 64)
    assert newer.slot == key().slot
    assert key(precision="fp32").slot != key().slot
    assert key(part="segmenter").slot != key().slot
    assert key(profile=make_profile(8, (1080, 1080))).slot != key().slot
    assert "/" not in key(model_name="a/b c").slot


def test_key_refuses_unknown_part_or_precision() -> None:
    with pytest.raises(ValueError, match="part"):
        key(part="classifier")
    with pytest.raises(ValueError, match="precision"):
        key(precision="fp8")


def test_key_differences_name_what_changed() -> None:
    changed = key(target=BuildTarget("10.10.0", TARGET.gpu_name, "9.0"))
    diffs = key_differences(changed.to_dict(), key().to_dict())
    assert diffs == ["target.tensorrt_version '10.9.0' -> '10.10.0'"]


# -- the cache, with a fake builder ---------------------------------------------------------------


def test_builds_once_then_reuses(tmp_path: Path) -> None:
    cache, build = EngineCache(tmp_path / "engines"), FakeBuilder()
    first = cache.ensure(key(), build)
    assert first.read_bytes() == b"plan #1"
    assert cache.ensure(key(), build) == first
    assert build.builds == 1
    meta = json.loads(cache.meta_path(key()).read_text())
    assert meta["key"] == key().to_dict()
    assert meta["plan_bytes"] == len(b"plan #1")
    assert sorted(p.name for p in (tmp_path / "engines").iterdir() if not p.name.startswith(".")) \
        == sorted([first.name, cache.meta_path(key()).name])


def test_key_mismatch_rebuilds_with_one_log_line(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    cache, build = EngineCache(tmp_path), FakeBuilder()
    cache.ensure(key(), build)
    upgraded = key(target=BuildTarget("10.10.0", TARGET.gpu_name, TARGET.compute_capability))
    with caplog.at_level(logging.INFO, logger="engines.gpu.enginecache"):
        path = cache.ensure(upgraded, build)
    assert build.builds == 2 and path.read_bytes() == b"plan #2"
    mismatch = [r.getMessage() for r in caplog.records if "another configuration" in
                r.getMessage()]
    assert len(mismatch) == 1
    assert "tensorrt_version '10.9.0' -> '10.10.0'" in mismatch[0]
    assert cache.ensure(upgraded, build) == path and build.builds == 2


def test_corrupt_plan_is_rebuilt_not_fatal(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    cache, build = EngineCache(tmp_path), FakeBuilder()
    path = cache.ensure(key(), build)
    path.write_bytes(b"plan #1 but truncated")
    with caplog.at_level(logging.WARNING, logger="engines.gpu.enginecache"):
        assert cache.ensure(key(), build).read_bytes() == b"plan #2"
    assert any("does not match its recorded hash" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("damage", ["garbage", "delete_plan", "delete_meta", "no_hash"])
def test_damaged_cache_entries_are_rebuilt(tmp_path: Path, damage: str) -> None:
    cache, build = EngineCache(tmp_path), FakeBuilder()
    cache.ensure(key(), build)
    if damage == "garbage":
        cache.meta_path(key()).write_text("{not json")
    elif damage == "delete_plan":
        cache.plan_path(key()).unlink()
    elif damage == "delete_meta":
        cache.meta_path(key()).unlink()
    else:
        cache.meta_path(key()).write_text(json.dumps({"key": key().to_dict()}))
    assert cache.ensure(key(), build).read_bytes() == b"plan #2"


def test_a_plan_the_runtime_refuses_is_rebuilt_once(tmp_path: Path) -> None:
    cache, build = EngineCache(tmp_path), FakeBuilder()
    cache.ensure(key(), build)
    loaded = []

    def load(plan: bytes) -> str:
        if plan == b"plan #1":
            raise PlanError("deserialize_cuda_engine returned None")
        loaded.append(plan)
        return plan.decode()

    assert cache.load(key(), build, load) == "plan #2"
    assert build.builds == 2 and loaded == [b"plan #2"]


def test_a_plan_that_never_loads_raises(tmp_path: Path) -> None:
    cache, build = EngineCache(tmp_path), FakeBuilder()

    def refuse(plan: bytes) -> None:
        raise PlanError("refused")

    with pytest.raises(PlanError, match="refused"):
        cache.load(key(), build, refuse)
    assert build.builds == 2


def test_builder_errors_leave_no_files(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)

    def fail() -> bytes:
        raise BuildError("parser said no")

    with pytest.raises(BuildError, match="parser said no"):
        cache.ensure(key(), fail)
    with pytest.raises(PlanError, match="empty plan"):
        cache.ensure(key(), lambda: b"")
    assert not cache.plan_path(key()).exists() and not cache.meta_path(key()).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and "lock" not in p.name]


def test_entries_list_what_is_cached(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    assert list(cache.entries()) == []
    cache.ensure(key(), FakeBuilder(), lambda: {"built_at": "now"})
    cache.ensure(key(part="segmenter"), FakeBuilder())
    entries = list(cache.entries())
    assert [e["slot"] for e in entries] == sorted([key().slot, key(part="segmenter").slot])
    assert entries[0]["built_at"] == "now"


def test_default_cache_folder_honours_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert EngineCache().folder == tmp_path / "artifactd" / "engines"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert EngineCache().folder == Path.home() / ".cache" / "artifactd" / "engines"


# -- calibration frames (pure numpy; the calibrator itself needs TensorRT) ------------------------


def test_calibration_frames_are_fitted_to_the_profile(tmp_path: Path) -> None:
    import tifffile

    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.integers(0, 4000, (40, 30), dtype=np.uint16))
    tifffile.imwrite(tmp_path / "b.tif", rng.integers(0, 255, (20, 70), dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not a frame")
    profile = make_profile(4, (32, 48))
    frames = load_calibration_frames(tmp_path, profile)
    assert frames.shape == (2, 1, 32, 48) and frames.dtype == np.uint16
    first = np.load(tmp_path / "a.npy")
    np.testing.assert_array_equal(frames[0, 0, :, :30], first[:32])
    np.testing.assert_array_equal(frames[0, 0, :, 30:], np.repeat(first[:32, 29:30], 18, 1))


def test_calibration_folder_errors_are_clear(tmp_path: Path) -> None:
    profile = make_profile(4, (32, 32))
    with pytest.raises(BuildError, match="expected a folder"):
        load_calibration_frames(tmp_path / "missing", profile)
    with pytest.raises(BuildError, match="found none"):
        load_calibration_frames(tmp_path, profile)


# -- the command line -----------------------------------------------------------------------------


@pytest.mark.skipif(available_backends()["tensorrt"] == "ok", reason="TensorRT is available here")
def test_engines_build_without_tensorrt_exits_2(tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    code = cli_main(["engines", "build", "--cache", str(tmp_path), "--frame-size", "64x64"])
    assert code == 2
    err = capsys.readouterr().err
    assert "TensorRT engines cannot be built here" in err and "tensorrt" in err
    assert not list(tmp_path.iterdir())


def test_engines_list(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["engines", "list", "--cache", str(tmp_path)]) == 0
    assert "no engines cached" in capsys.readouterr().out
    EngineCache(tmp_path).ensure(key(), FakeBuilder(), lambda: {"built_at": "2026-01-01"})
    assert cli_main(["engines", "list", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert key().slot in out and "NVIDIA H100" in out and "10.9.0" in out


def test_profile_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        make_profile(1, (8, 8)).max_batch = 2  # type: ignore[misc]
    assert isinstance(key().profile, Profile)
