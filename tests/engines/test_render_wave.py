"""The wave-optics renderer: determinism, dtypes, ground truth consistency, visibility."""

from __future__ import annotations

import numpy as np
import pytest

from engines.data.render_wave import make_frame
from engines.data.synth import ARTIFACT_KINDS, SynthOptions

SMALL = SynthOptions(height=256, width=256)


def frame(seed: int, **changes):
    fields = {"height": 256, "width": 256, **changes}
    return make_frame(np.random.default_rng(seed), SynthOptions(**fields))


def assert_truth_matches_mask(f) -> None:
    labels = [o.label for o in f.objects]
    assert labels == list(range(1, len(labels) + 1))
    counts = np.bincount(f.mask.ravel(), minlength=len(labels) + 1)
    assert len(counts) == len(labels) + 1, "mask holds a label with no object"
    for obj in f.objects:
        assert obj.kind in ARTIFACT_KINDS
        assert obj.area_px == counts[obj.label] >= 20
        ys, xs = np.nonzero(f.mask == obj.label)
        assert obj.centroid_y == pytest.approx(ys.mean())
        assert obj.centroid_x == pytest.approx(xs.mean())
        assert obj.equivalent_diameter_px == pytest.approx(np.sqrt(4 * obj.area_px / np.pi))
    assert f.label == ("artifact" if f.objects else "clean")


def test_same_seed_gives_identical_frames_and_different_seeds_differ():
    a, b = frame(11, artifact_probability=1.0), frame(11, artifact_probability=1.0)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.objects == b.objects and a.pixel_size_um == b.pixel_size_um
    assert not np.array_equal(a.image, frame(12, artifact_probability=1.0).image)


@pytest.mark.parametrize("dtype", ["uint16", "uint8"])
def test_dtype_and_shape_are_honoured_and_not_all_clipped(dtype):
    for seed in range(3):
        f = frame(seed, height=200, width=240, dtype=dtype)
        assert f.image.shape == (200, 240) and f.image.dtype == np.dtype(dtype)
        assert f.mask.shape == (200, 240) and f.mask.dtype == np.uint16
        top = np.iinfo(dtype).max
        assert np.mean((f.image == 0) | (f.image == top)) < 0.05
        assert f.image.std() > 0


def test_background_level_uses_the_range():
    levels = [np.median(frame(s, artifact_probability=0.0).image) for s in range(8)]
    assert max(levels) / min(levels) > 2
    assert all(300 < v < 60000 for v in levels)


def test_pixel_size_is_drawn_or_given():
    sizes = [frame(s).pixel_size_um for s in range(10)]
    assert all(0.3 <= p <= 1.3 for p in sizes) and len(set(sizes)) == 10
    assert frame(0, pixel_size_um=0.5).pixel_size_um == 0.5


def test_probability_zero_gives_clean_frames():
    for seed in range(4):
        f = frame(seed, artifact_probability=0.0)
        assert f.label == "clean" and f.objects == () and not f.mask.any()


def test_probability_one_gives_artifacts_consistent_with_the_mask():
    found = 0
    for seed in range(6):
        f = frame(seed, artifact_probability=1.0)
        assert_truth_matches_mask(f)
        found += f.label == "artifact"
    assert found >= 5


@pytest.mark.parametrize("kind", ARTIFACT_KINDS)
def test_every_kind_can_be_drawn_alone(kind):
    objects = []
    for seed in range(4):
        f = frame(seed, artifact_probability=1.0, kinds=(kind,))
        assert_truth_matches_mask(f)
        objects += f.objects
    assert objects and {o.kind for o in objects} == {kind}


def test_stacks_are_refused():
    with pytest.raises(ValueError, match="single-plane, single-channel"):
        make_frame(np.random.default_rng(0), SynthOptions(height=64, width=64, channels=2))
    with pytest.raises(ValueError, match="single-plane"):
        make_frame(np.random.default_rng(0), SynthOptions(height=64, width=64, planes=3))


def _robust_std(x: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def test_clean_frames_show_cells_above_the_noise_floor():
    from scipy import ndimage as ndi

    for seed in range(6):
        f = frame(seed, artifact_probability=0.0)
        image = f.image.astype(np.float64)
        # Background-normalised (the smooth illumination divided out), smoothed a little; pure
        # pixel noise would keep ~0.19 of its std through a sigma-1.5 Gaussian.
        flat = image / ndi.gaussian_filter(image, 40)
        noise = _robust_std(np.diff(flat, axis=1)) / np.sqrt(2)
        structure = ndi.gaussian_filter(flat, 1.5)
        assert structure.std() > 0.5 * noise


@pytest.mark.parametrize("kind", ["bubble", "dust"])
def test_bubble_and_dust_are_visible(kind):
    from scipy import ndimage as ndi

    seen = 0
    for seed in range(4):
        f = frame(seed, artifact_probability=1.0, kinds=(kind,), pixel_size_um=0.6)
        for obj in f.objects:
            inside = f.mask == obj.label
            ring = (ndi.binary_dilation(inside, iterations=6)
                    & ~ndi.binary_dilation(inside, iterations=2))
            ring &= f.mask == 0
            if not ring.any():
                continue
            a, b = f.image[inside].mean(), f.image[ring].mean()
            seen += abs(a - b) > 0.05 * b
    assert seen >= 2


def test_full_size_frame_renders():
    f = make_frame(np.random.default_rng(3), SynthOptions(artifact_probability=1.0))
    assert f.image.shape == (1080, 1080) and f.image.dtype == np.uint16
    assert_truth_matches_mask(f)
