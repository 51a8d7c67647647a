"""The monolayer renderer: interface, determinism, ground truth consistency, visibility."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from engines.data.render_monolayer import MIN_FOOTPRINT_PX, make_frame
from engines.data.synth import ARTIFACT_KINDS, SynthFrame, SynthOptions

SMALL = SynthOptions(height=256, width=256)


def small(**changes) -> SynthOptions:
    fields = {"height": 256, "width": 256, **changes}
    return SynthOptions(**fields)


def assert_truth_matches_mask(frame: SynthFrame) -> None:
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
    assert frame.label == ("artifact" if frame.objects else "clean")


def test_same_seed_same_frame_and_different_seeds_differ():
    a = make_frame(np.random.default_rng(7), SMALL)
    b = make_frame(np.random.default_rng(7), SMALL)
    c = make_frame(np.random.default_rng(8), SMALL)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.mask, b.mask)
    assert a.objects == b.objects and a.pixel_size_um == b.pixel_size_um
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("dtype", ["uint16", "uint8"])
def test_dtype_and_shape_honoured_and_not_clipped(dtype):
    full = 255 if dtype == "uint8" else 65535
    for seed in range(4):
        frame = make_frame(np.random.default_rng(seed), small(height=200, width=240, dtype=dtype))
        assert frame.image.shape == (200, 240) and frame.image.dtype == np.dtype(dtype)
        assert frame.mask.shape == (200, 240) and frame.mask.dtype == np.uint16
        clipped = np.mean((frame.image == 0) | (frame.image == full))
        assert clipped < 0.05
        assert 0.3 <= frame.pixel_size_um <= 1.3


def test_fixed_pixel_size_is_kept():
    assert make_frame(np.random.default_rng(0), small(pixel_size_um=0.65)).pixel_size_um == 0.65


def test_uint16_background_levels_span_cameras():
    medians = [
        np.median(make_frame(np.random.default_rng(s), small(height=64, width=64)).image)
        for s in range(40)
    ]
    assert min(medians) < 4095 and max(medians) > 5000  # 12-bit and 16-bit cameras both appear
    assert all(200 < m < 60000 for m in medians)


def test_no_artifacts_when_probability_zero():
    for seed in range(5):
        frame = make_frame(np.random.default_rng(seed), small(artifact_probability=0.0))
        assert frame.label == "clean" and frame.objects == () and not frame.mask.any()


def test_artifact_frames_have_objects_consistent_with_mask():
    for seed in range(6):
        frame = make_frame(np.random.default_rng(seed), small(artifact_probability=1.0))
        assert frame.label == "artifact" and len(frame.objects) >= 1
        assert_truth_matches_mask(frame)


@pytest.mark.parametrize("kind", ARTIFACT_KINDS)
def test_each_kind_alone_renders(kind):
    found = 0
    for seed in range(4):
        frame = make_frame(
            np.random.default_rng(seed), small(artifact_probability=1.0, kinds=(kind,))
        )
        assert all(o.kind == kind for o in frame.objects)
        assert_truth_matches_mask(frame)
        found += len(frame.objects)
    assert found >= 1


def test_footprints_are_not_tiny():
    areas = []
    for seed in range(8):
        frame = make_frame(np.random.default_rng(seed), small(artifact_probability=1.0))
        areas += [o.area_px for o in frame.objects]
    # only an artifact partly covered by a later one can end up under the drawing threshold
    assert np.median(areas) >= MIN_FOOTPRINT_PX


@pytest.mark.parametrize("changes", [{"channels": 2}, {"planes": 3}])
def test_stacks_are_refused(changes):
    with pytest.raises(ValueError, match="single-plane, single-channel"):
        make_frame(np.random.default_rng(0), small(**changes))


def test_clean_frames_show_cells_above_the_noise():
    for seed in range(6):
        frame = make_frame(np.random.default_rng(seed), small(artifact_probability=0.0))
        image = frame.image.astype(np.float64)
        # pixel noise is what neighbouring-pixel differences show; structure is what survives a blur
        noise = np.std(np.diff(image, axis=1)) / np.sqrt(2)
        structure = np.std(ndi.uniform_filter(image, 9) - ndi.uniform_filter(image, 61))
        assert image.std() > 0
        assert structure > 0.1 * noise, f"seed {seed}: a flat field"


@pytest.mark.parametrize("kind", ["dust", "precipitate"])
def test_small_dark_artifacts_are_visible(kind):
    contrasts = []
    for seed in range(6):
        frame = make_frame(
            np.random.default_rng(seed),
            small(artifact_probability=1.0, kinds=(kind,), dtype="uint16"),
        )
        if not frame.objects:
            continue
        image = frame.image.astype(np.float64)
        inside = frame.mask > 0
        ring = ndi.binary_dilation(inside, iterations=6) & ~ndi.binary_dilation(
            inside, iterations=2
        )
        contrasts.append(abs(image[inside].mean() - image[ring].mean()) / image[ring].mean())
    assert contrasts and np.median(contrasts) > 0.05


def test_full_size_frame_smoke():
    frame = make_frame(np.random.default_rng(3), SynthOptions(artifact_probability=1.0))
    assert frame.image.shape == (1080, 1080) and frame.image.dtype == np.uint16
    assert_truth_matches_mask(frame)
