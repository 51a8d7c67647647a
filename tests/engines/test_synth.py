"""The synthetic generator: determinism, shapes, ground truth consistency, files, CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from engines.data.synth import ARTIFACT_KINDS, MIN_OBJECT_PX, SynthOptions, frame_for, write_dataset

SMALL = SynthOptions(height=256, width=256)
REPO = Path(__file__).resolve().parents[2]


def assert_truth_matches_mask(frame) -> None:
    labels = [o.label for o in frame.objects]
    assert labels == list(range(1, len(labels) + 1))
    counts = np.bincount(frame.mask.ravel(), minlength=len(labels) + 1)
    assert len(counts) == len(labels) + 1, "mask holds a label with no object"
    for obj in frame.objects:
        assert obj.kind in ARTIFACT_KINDS
        assert obj.area_px == counts[obj.label]
        ys, xs = np.nonzero(frame.mask == obj.label)
        assert obj.centroid_y == pytest.approx(ys.mean())
        assert obj.centroid_x == pytest.approx(xs.mean())
        assert obj.equivalent_diameter_px == pytest.approx(np.sqrt(4 * obj.area_px / np.pi))
    assert frame.label == ("artifact" if frame.mask.any() else "clean")


def test_same_seed_and_index_give_identical_frames():
    a, b = frame_for(7, 3, SMALL), frame_for(7, 3, SMALL)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.objects == b.objects and a.pixel_size_um == b.pixel_size_um


def test_different_index_gives_a_different_frame():
    assert not np.array_equal(frame_for(7, 3, SMALL).image, frame_for(7, 4, SMALL).image)
    assert not np.array_equal(frame_for(7, 3, SMALL).image, frame_for(8, 3, SMALL).image)


@pytest.mark.parametrize(
    ("options", "shape", "dtype"),
    [
        (SynthOptions(height=200, width=300, dtype="uint16"), (200, 300), np.uint16),
        (SynthOptions(height=200, width=300, dtype="uint8"), (200, 300), np.uint8),
        (SynthOptions(height=128, width=160, channels=3), (3, 128, 160), np.uint16),
        (SynthOptions(height=128, width=160, planes=5, dtype="uint8"), (5, 128, 160), np.uint8),
    ],
)
def test_dtype_and_shape(options, shape, dtype):
    frame = frame_for(1, 0, options)
    assert frame.image.shape == shape and frame.image.dtype == dtype
    assert frame.mask.shape == shape[-2:] and frame.mask.dtype == np.uint16


def test_background_level_uses_a_varying_part_of_the_range():
    for dtype, low, high in (("uint16", 600, 40000), ("uint8", 40, 230)):
        options = SynthOptions(height=128, width=128, dtype=dtype)
        medians = [float(np.median(frame_for(2, i, options).image)) for i in range(8)]
        assert all(low < m < high for m in medians), medians
        assert max(medians) > 1.5 * min(medians), medians


def test_clean_frames_have_empty_masks_and_artifact_frames_do_not():
    clean = SynthOptions(height=256, width=256, artifact_probability=0.0)
    dirty = SynthOptions(height=256, width=256, artifact_probability=1.0)
    for index in range(4):
        frame = frame_for(3, index, clean)
        assert frame.label == "clean" and not frame.mask.any() and frame.objects == ()
        frame = frame_for(3, index, dirty)
        assert frame.label == "artifact" and frame.mask.any()
        assert_truth_matches_mask(frame)


def test_object_truth_matches_the_mask_across_many_frames():
    options = SynthOptions(height=256, width=256, artifact_probability=0.7)
    for index in range(20):
        assert_truth_matches_mask(frame_for(4, index, options))


@pytest.mark.parametrize("kind", ARTIFACT_KINDS)
def test_every_kind_can_be_produced(kind):
    options = SynthOptions(height=384, width=384, artifact_probability=1.0, kinds=(kind,))
    frame = frame_for(5, 0, options)
    assert frame.label == "artifact"
    assert {o.kind for o in frame.objects} == {kind}
    assert_truth_matches_mask(frame)
    # Drawn objects are never smaller than the minimum, unless a later one covered part of them.
    assert frame.objects[-1].area_px >= MIN_OBJECT_PX


def test_small_artifacts_occur():
    options = SynthOptions(height=256, width=256, artifact_probability=1.0, pixel_size_um=0.6)
    areas = [o.area_px for i in range(30) for o in frame_for(6, i, options).objects]
    assert min(areas) < 300, sorted(areas)[:5]


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match="dtype"):
        SynthOptions(dtype="float32")
    with pytest.raises(ValueError, match="kinds"):
        SynthOptions(kinds=("smudge",))
    with pytest.raises(ValueError, match="channels and planes"):
        SynthOptions(channels=2, planes=3)


def test_write_dataset_writes_readable_files(tmp_path):
    options = SynthOptions(height=96, width=128, artifact_probability=0.6)
    out = write_dataset(tmp_path / "ds", 5, 11, options, progress=False)
    with open(out / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["source"] for r in rows] == [f"{i:05d}.tif" for i in range(5)]
    with open(out / "objects.csv", newline="") as f:
        objects = list(csv.DictReader(f))
    for index, row in enumerate(rows):
        image = tifffile.imread(out / "frames" / row["source"])
        mask = tifffile.imread(out / "masks" / row["source"])
        expected = frame_for(11, index, options)
        np.testing.assert_array_equal(image, expected.image)
        np.testing.assert_array_equal(mask, expected.mask)
        assert mask.dtype == np.uint16
        assert row["label"] == expected.label
        mine = [o for o in objects if o["source"] == row["source"]]
        assert [int(o["area_px"]) for o in mine] == [o.area_px for o in expected.objects]
    described = json.loads((out / "dataset.json").read_text())
    assert described["seed"] == 11 and described["count"] == 5
    assert described["options"]["height"] == 96
    assert not list(out.rglob(".*.tmp"))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", "synth", *args],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )


def test_cli_writes_a_dataset_and_refuses_a_non_empty_folder(tmp_path):
    out = tmp_path / "synth"
    done = run_cli("--out", str(out), "--count", "3", "--seed", "2", "--size", "64",
                   "--dtype", "uint8")
    assert done.returncode == 0, done.stderr
    assert len(list((out / "frames").glob("*.tif"))) == 3
    assert tifffile.imread(out / "frames" / "00000.tif").dtype == np.uint8
    again = run_cli("--out", str(out), "--count", "1", "--seed", "2", "--size", "64")
    assert again.returncode == 2
    assert "not an empty folder" in again.stderr


@pytest.mark.parametrize("renderer", ["relief", "caustic", "particle"])
def test_frames_of_one_plate_share_its_look_and_differ_in_their_fields(renderer):
    """--plate-seed: one pixel size, kind of cells, stain and optics; the fields differ."""
    plate = SynthOptions(height=160, width=160, plate_seed=5)
    fields = [frame_for(3, i, plate, renderer) for i in range(3)]
    assert len({f.pixel_size_um for f in fields}) == 1
    assert not np.array_equal(fields[0].image, fields[1].image)
    other = frame_for(3, 0, SynthOptions(height=160, width=160, plate_seed=6), renderer)
    assert other.pixel_size_um != fields[0].pixel_size_um
    mixed = [frame_for(3, i, SynthOptions(height=160, width=160), renderer) for i in range(3)]
    assert len({f.pixel_size_um for f in mixed}) == 3  # without it each frame draws its own


def test_a_plate_seed_is_refused_for_a_renderer_that_draws_no_plates(tmp_path):
    done = run_cli("--out", str(tmp_path / "s"), "--count", "2", "--seed", "1", "--size", "64",
                   "--plate-seed", "3")
    assert done.returncode == 2
    assert "--plate-seed" in done.stderr
    assert "expected --renderer relief, caustic or particle" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "s").exists()
