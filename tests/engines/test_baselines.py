"""Classical baselines find a blob on an unevenly lit frame and leave the lighting alone."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

import engines.evaluation.background
import engines.evaluation.baselines
from engines.evaluation.baselines import adaptive_baseline, otsu_baseline

BASELINES = [otsu_baseline, adaptive_baseline]


def vignetted(size=256, *, blob_at=(0.3, 0.65), radius=10, contrast=0.7, dtype=np.uint16, seed=0):
    """A frame lit 40% less in the corners than the centre, with Gaussian noise and an
    optional blob that multiplies the light by `contrast` (< 1 dark, > 1 bright)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    c = (size - 1) / 2
    light = 1.0 - 0.2 * (((yy - c) / c) ** 2 + ((xx - c) / c) ** 2)  # 0.6 in the corners
    blob = np.zeros((size, size), dtype=bool)
    if blob_at is not None:
        blob = (yy - blob_at[0] * size) ** 2 + (xx - blob_at[1] * size) ** 2 <= radius**2
    scale = 2000.0 if dtype == np.uint16 else 200.0
    frame = scale * light * np.where(blob, contrast, 1.0)
    frame += rng.normal(0.0, 0.008 * scale, frame.shape)
    return np.clip(frame, 0, np.iinfo(dtype).max).astype(dtype), blob


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("module", [engines.evaluation.baselines, engines.evaluation.background])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_the_lighting_defeats_a_plain_global_threshold():
    frame, blob = vignetted()
    dark = frame < threshold_otsu(frame)
    assert dark[:20, :20].all()  # the corners read as "dark" as the blob
    assert (dark & ~blob).sum() > 10 * blob.sum()


@pytest.mark.parametrize("baseline", BASELINES)
@pytest.mark.parametrize("contrast", [0.7, 1.3])
def test_finds_a_dark_or_bright_blob_and_ignores_the_gradient(baseline, contrast):
    frame, blob = vignetted(contrast=contrast)
    found = baseline(frame)
    assert found.dtype == bool and found.shape == frame.shape
    assert iou(found, blob) > 0.8
    assert not (found & ~ndi.binary_dilation(blob, iterations=2)).any()


@pytest.mark.parametrize("baseline", BASELINES)
def test_finds_a_blob_in_the_dimmest_corner(baseline):
    frame, blob = vignetted(blob_at=(0.08, 0.9), radius=8, seed=1)
    found = baseline(frame)
    assert iou(found, blob) > 0.7
    assert not (found & ~ndi.binary_dilation(blob, iterations=2)).any()


@pytest.mark.parametrize("baseline", BASELINES)
def test_a_clean_frame_stays_clean(baseline):
    for seed in range(3):
        frame, _ = vignetted(blob_at=None, seed=seed)
        assert not baseline(frame).any()


@pytest.mark.parametrize("baseline", BASELINES)
def test_eight_bit_frames(baseline):
    frame, blob = vignetted(dtype=np.uint8)
    assert iou(baseline(frame), blob) > 0.7


@pytest.mark.parametrize("baseline", BASELINES)
def test_min_area_drops_small_blobs(baseline):
    frame, blob = vignetted(radius=3)  # 28 px
    area = int(baseline(frame, min_area_px=10).sum())
    assert area >= blob.sum()
    assert baseline(frame, min_area_px=area).sum() == area  # at the minimum: kept
    assert not baseline(frame, min_area_px=area + 1).any()


def test_rejects_what_is_not_one_image():
    with pytest.raises(ValueError, match="2-D"):
        otsu_baseline(np.zeros((2, 32, 32), dtype=np.uint16))
    with pytest.raises(ValueError, match="block_px"):
        adaptive_baseline(np.zeros((32, 32), dtype=np.uint16), block_px=50)
