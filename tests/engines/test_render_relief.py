"""The relief renderer: determinism, shapes, ground truth consistency, visibility."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from engines.data.render_relief import MIN_FOOTPRINT_PX, make_frame
from engines.data.synth import ARTIFACT_KINDS, SynthOptions

SMALL = SynthOptions(height=256, width=256)


def small(**changes) -> SynthOptions:
    fields = {name: getattr(SMALL, name) for name in SynthOptions.__slots__}
    fields.update(changes)
    return SynthOptions(**fields)


def frame(seed: int, **changes):
    return make_frame(np.random.default_rng(seed), small(**changes))


def assert_truth_matches_mask(f) -> None:
    labels = [o.label for o in f.objects]
    assert labels == list(range(1, len(labels) + 1))
    counts = np.bincount(f.mask.ravel(), minlength=len(labels) + 1)
    assert len(counts) == len(labels) + 1, "mask holds a label with no object"
    for obj in f.objects:
        assert obj.kind in ARTIFACT_KINDS
        assert obj.area_px == counts[obj.label] >= MIN_FOOTPRINT_PX
        ys, xs = np.nonzero(f.mask == obj.label)
        assert obj.centroid_y == pytest.approx(ys.mean())
        assert obj.centroid_x == pytest.approx(xs.mean())
        assert obj.equivalent_diameter_px == pytest.approx(np.sqrt(4 * obj.area_px / np.pi))


def test_same_rng_gives_identical_frames():
    a, b = frame(7, artifact_probability=1.0), frame(7, artifact_probability=1.0)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.objects == b.objects and a.pixel_size_um == b.pixel_size_um


def test_different_seeds_differ():
    assert not np.array_equal(frame(1).image, frame(2).image)


@pytest.mark.parametrize("dtype", ["uint16", "uint8"])
def test_dtype_and_shape_are_honoured_and_values_not_clipped(dtype):
    for seed in range(4):
        f = make_frame(np.random.default_rng(seed), small(height=200, width=240, dtype=dtype))
        assert f.image.shape == (200, 240) and f.image.dtype == np.dtype(dtype)
        assert f.mask.shape == (200, 240) and f.mask.dtype == np.uint16
        top = np.iinfo(dtype).max
        saturated = np.mean((f.image == 0) | (f.image == top))
        assert saturated < 0.05
        assert len(np.unique(f.image)) > 20
        assert 0.35 <= f.pixel_size_um <= 1.2


def test_fixed_pixel_size_is_used():
    assert frame(3, pixel_size_um=0.5).pixel_size_um == 0.5


def test_no_artifacts_at_probability_zero():
    for seed in range(5):
        f = frame(seed, artifact_probability=0.0)
        assert f.label == "clean" and f.objects == () and not f.mask.any()


def test_artifact_frames_have_objects_matching_the_mask():
    for seed in range(6):
        f = frame(seed, artifact_probability=1.0)
        assert f.label == "artifact" and len(f.objects) >= 1
        assert_truth_matches_mask(f)


@pytest.mark.parametrize("kind", ARTIFACT_KINDS)
def test_each_kind_alone_renders(kind):
    found = 0
    for seed in range(3):
        f = frame(seed, artifact_probability=1.0, kinds=(kind,))
        assert {o.kind for o in f.objects} <= {kind}
        assert_truth_matches_mask(f)
        found += len(f.objects)
    assert found >= 1


def test_stacks_are_refused():
    with pytest.raises(ValueError, match="single-plane, single-channel"):
        frame(0, channels=2)
    with pytest.raises(ValueError, match="single-plane, single-channel"):
        frame(0, planes=3)


def noise_sigma(image: np.ndarray) -> float:
    """Robust pixel-noise estimate from neighbour differences."""
    return float(np.median(np.abs(np.diff(image, axis=1))) / 0.6745 / np.sqrt(2))


def test_clean_frames_show_cells_above_noise():
    for seed in range(6):
        image = frame(seed, artifact_probability=0.0).image.astype(float)
        band = ndi.gaussian_filter(image, 3) - ndi.gaussian_filter(image, 25)
        # white noise smoothed with sigma 3 keeps 1 / (2 sqrt(pi) 3) ~ 0.094 of its std
        assert band.std() > 2 * 0.094 * noise_sigma(image), seed


def test_dust_is_visible():
    for seed in range(4):
        f = frame(seed, artifact_probability=1.0, kinds=("dust",), pixel_size_um=0.5)
        image, inside = f.image.astype(float), f.mask > 0
        around = (ndi.binary_dilation(inside, iterations=6)
                  & ~ndi.binary_dilation(inside, iterations=2))
        assert image[inside].mean() < image[around].mean() - 5 * noise_sigma(image), seed


def test_full_size_frame_smoke():
    start = time.perf_counter()
    f = make_frame(np.random.default_rng(11), SynthOptions(artifact_probability=1.0))
    elapsed = time.perf_counter() - start
    assert f.image.shape == (1080, 1080) and f.label == "artifact"
    assert_truth_matches_mask(f)
    assert elapsed < 5  # generous: the budget is 0.8 s on one idle core, CI machines are shared
