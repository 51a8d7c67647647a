"""The caustic renderer: determinism, shapes, ground truth consistency, visibility."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from engines.data.render_caustic import MIN_FOOTPRINT_PX, make_frame
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


def local_ratio(image: np.ndarray) -> np.ndarray:
    """Lightly smoothed image over its broad local background (uneven light divided out)."""
    im = image.astype(np.float32)
    return ndi.gaussian_filter(im, 1.0) / np.maximum(ndi.gaussian_filter(im, 20.0), 1.0)


def test_same_generator_state_gives_the_same_frame():
    a, b = frame(7, artifact_probability=1.0), frame(7, artifact_probability=1.0)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.mask, b.mask)
    assert a.objects == b.objects and a.label == b.label and a.pixel_size_um == b.pixel_size_um


def test_different_seeds_give_different_frames():
    a, b = frame(1), frame(2)
    assert not np.array_equal(a.image, b.image)


@pytest.mark.parametrize("dtype", ["uint16", "uint8"])
def test_dtype_and_shape_are_honoured_and_not_clipped(dtype):
    for seed in range(4):
        f = frame(seed, height=200, width=300, dtype=dtype)
        assert f.image.shape == (200, 300) and f.image.dtype == np.dtype(dtype)
        assert f.mask.shape == (200, 300) and f.mask.dtype == np.uint16
        top = np.iinfo(f.image.dtype).max
        clipped = np.mean((f.image == 0) | (f.image == top))
        assert clipped < 0.2, f"seed {seed}: {clipped:.0%} of the pixels clipped"
        assert len(np.unique(f.image)) > 30


def test_pixel_size_is_drawn_log_uniform_or_honoured():
    drawn = [frame(seed).pixel_size_um for seed in range(12)]
    assert all(0.3 <= um <= 1.3 for um in drawn) and len(set(drawn)) > 1
    assert frame(3, pixel_size_um=0.5).pixel_size_um == 0.5


def test_no_artifacts_means_a_clean_empty_frame():
    for seed in range(5):
        f = frame(seed, artifact_probability=0.0)
        assert f.label == "clean" and f.objects == () and not f.mask.any()


def test_artifact_frames_have_objects_that_match_the_mask():
    for seed in range(8):
        f = frame(seed, artifact_probability=1.0)
        assert f.label == "artifact" and len(f.objects) >= 1
        assert_truth_matches_mask(f)


@pytest.mark.parametrize("kind", ARTIFACT_KINDS)
def test_each_kind_alone_is_drawn(kind):
    drawn = 0
    for seed in range(3):
        f = frame(seed, artifact_probability=1.0, kinds=(kind,))
        assert all(o.kind == kind for o in f.objects)
        assert_truth_matches_mask(f)
        drawn += len(f.objects)
    assert drawn >= 1


@pytest.mark.parametrize("changes", [{"channels": 2}, {"planes": 3}])
def test_stacks_are_refused(changes):
    with pytest.raises(ValueError, match="single-plane, single-channel"):
        frame(0, **changes)


def assert_cells_above_the_noise(image: np.ndarray, seed: int) -> None:
    """A clean field's cells stand out of the camera noise, and the field is not flat."""
    image = image.astype(np.float32)
    structure = ndi.gaussian_filter(image, 2.0) - ndi.gaussian_filter(image, 25.0)
    noise = image - ndi.gaussian_filter(image, 1.0)
    assert structure.std() > 0.5 * noise.std(), f"seed {seed}: cells drown in noise"
    assert structure.std() > 0.005 * image.mean(), f"seed {seed}: frame is flat"


def test_a_clean_frame_shows_cells_above_the_noise():
    for seed in range(4):
        assert_cells_above_the_noise(frame(seed, artifact_probability=0.0).image, seed)


def test_nothing_in_a_clean_frame_is_as_dark_as_dust():
    darkest = [local_ratio(frame(seed, artifact_probability=0.0).image).min() for seed in range(10)]
    dust = []
    for seed in range(10):
        f = frame(seed, artifact_probability=1.0, kinds=("dust",))
        ratio = local_ratio(f.image)
        dust.append(min(ratio[f.mask == o.label].min() for o in f.objects))
    assert min(darkest) > 0.3, "a clean-scene object looks like pitch-black dust"
    assert np.median(dust) < 0.3


def test_a_dust_speck_is_visible():
    for seed in range(4):
        f = frame(seed, artifact_probability=1.0, kinds=("dust",))
        image = f.image.astype(np.float32)
        for obj in f.objects:
            inside = f.mask == obj.label
            near = ndi.binary_dilation(inside, iterations=2)
            ring = ndi.binary_dilation(inside, iterations=6) & ~near & (f.mask == 0)
            assert image[inside].mean() < 0.9 * image[ring].mean(), f"seed {seed}: invisible"


def test_a_full_size_frame_renders_quickly():
    options = SynthOptions(artifact_probability=1.0)
    start = time.perf_counter()
    f = make_frame(np.random.default_rng(11), options)
    elapsed = time.perf_counter() - start
    assert f.image.shape == (1080, 1080) and f.image.dtype == np.uint16
    assert_truth_matches_mask(f)
    assert elapsed < 4.0  # ~0.3 s on an idle core; generous for a shared machine
