"""Pseudo-masks from a coarse ScoreCAM map and image evidence."""

from __future__ import annotations

import numpy as np

from engines.scorecam import PseudoMaskRule, image_evidence, pseudo_mask


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
