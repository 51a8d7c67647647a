"""Pseudo-masks from a coarse ScoreCAM map and image evidence."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from engines.training.scorecam import PseudoMaskRule, image_evidence, pseudo_mask


def frame_with_disc_and_speck() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A large dark disc (radius 60 px) and a small dark speck far from it."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:400, :400]
    disc = (yy - 150) ** 2 + (xx - 150) ** 2 <= 60**2
    speck = (yy - 330) ** 2 + (xx - 330) ** 2 <= 5**2
    image = 10000 - 2500 * disc - 2500 * speck + rng.normal(0, 50, (400, 400))
    return image.astype(np.uint16), disc, speck


def test_evidence_covers_the_body_of_a_large_artifact_without_a_halo_around_it():
    image, disc, _ = frame_with_disc_and_speck()
    evident = image_evidence(image)
    assert (evident & disc).sum() / disc.sum() > 0.95
    around = np.zeros_like(disc)
    around[60:240, 60:240] = True
    # A wide Gaussian background is pulled down by the disc, making the ground around it look
    # bright; a median background is not. (Smoothing and closing add a rim of a few px.)
    assert (evident & around & ~disc).sum() <= 0.15 * disc.sum()


def test_region_rule_keeps_the_whole_artifact_the_map_points_at_and_nothing_else():
    image, disc, speck = frame_with_disc_and_speck()
    cam = np.zeros(image.shape, np.float32)
    cam[120:140, 120:140] = 1.0  # a coarse peak on one part of the disc only
    evident = image_evidence(image)

    regions = pseudo_mask(cam, evident, PseudoMaskRule(0.3, refine=True, regions=True))
    iou = (regions & disc).sum() / (regions | disc).sum()
    assert iou > 0.9
    assert not (regions & speck).any()  # evidence the map does not point at is left out

    pixels = pseudo_mask(cam, evident, PseudoMaskRule(0.3, refine=True, regions=False))
    assert (pixels & disc).sum() < 0.5 * disc.sum()  # pixel intersection stays near the peak


def test_no_evidence_gives_an_empty_pseudo_mask():
    cam = np.ones((64, 64), np.float32)
    empty = pseudo_mask(cam, np.zeros((64, 64), bool), PseudoMaskRule())
    assert empty.shape == (64, 64) and not empty.any()


def test_evidence_finds_a_faint_artifact_wider_than_a_cell_field_under_vignetting():
    """Out-of-focus dirt 300 px across dimming the light by 8 %, on a field whose lighting falls
    off by a fifth toward one corner: the whole smudge is evidence, the vignetting is not."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:800, :800]
    light = 1 - 0.6 * (((yy - 320) / 800) ** 2 + ((xx - 480) / 800) ** 2)
    dirt = (yy - 420) ** 2 + (xx - 380) ** 2 <= 150**2
    image = 20000 * light * (1 - 0.08 * dirt) + rng.normal(0, 150, (800, 800))
    evident = image_evidence(image.astype(np.uint16))
    assert (evident & dirt).sum() / dirt.sum() > 0.95
    assert (evident & ~dirt).sum() < 0.02 * dirt.sum()


@pytest.mark.parametrize("contrast", [0.1, 0.2])
def test_evidence_keeps_a_dark_particle_and_not_the_cell_it_touches(contrast):
    """A cell seen in brightfield (a bright rim outside its edge, a dark one inside) touching a
    dark particle: the particle is evidence, the cell around it is not."""
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:300, :300]
    r = np.hypot(yy - 150, xx - 150)
    rims = ndi.laplace(ndi.gaussian_filter(np.exp(-((r / 25.0) ** 8)), 2.0))
    rims /= np.abs(rims).max()
    particle = np.hypot(yy - 150, xx - 188) <= 12
    image = 10000 * (1 + contrast * rims) * (1 - 0.4 * particle) + rng.normal(0, 60, (300, 300))
    evident = image_evidence(image.astype(np.uint16))
    cell = (r <= 28) & ~particle
    assert (evident & particle).sum() / particle.sum() > 0.95
    assert (evident & cell).sum() < 0.05 * cell.sum()
