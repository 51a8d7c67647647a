"""ScoreCAM maps of the detector and the pseudo-masks made from them (ArtSeg, seed 001).

ScoreCAM (Wang et al. 2020) weighs each activation map of a late conv layer by how much the
input, seen only through that map, raises the classifier's artifact score. Here the input is
"seen through" a map by blending it toward the frame's mean where the map is low, because the
detector standardises each frame: zeroing pixels would itself look like an artifact.

Pseudo-masks binarise the map. ScoreCAM localises at the resolution of its layer (1/32 here),
so by default the map only chooses among regions of image evidence (pixels deviating from
their local background by more than an adaptive threshold, seed 000's adaptive thresholding):
each region it points at is kept whole, with its own outline. The older rule, evidence pixels
inside the map, and the bare map remain candidates when validation masks are given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage as ndi
from torch.nn import functional as F

from engines.evaluation.background import quadratic, robust_quadratic
from engines.pytorch.models import Detector


@torch.no_grad()
def scorecam(detector: Detector, frame: torch.Tensor, *, top_k: int = 32, chunk: int = 8,
             seed: int = 0) -> np.ndarray:
    """One frame (C, H, W) float32 -> (H, W) float32 map in [0, 1] (0 everywhere if nothing).

    The faint noise of the flat reference frame comes from a generator of its own, so a map
    depends only on the detector, the frame and the seed: the same in every process, and the
    same whether the maps before it were computed or read from a cache."""
    detector.eval()
    x = frame[None]
    maps = detector.cam_maps(x)[0]  # (K, h, w)
    strength = maps.flatten(1).amax(dim=1)
    chosen = torch.argsort(strength, descending=True)[: min(top_k, maps.shape[0])]
    chosen = chosen[strength[chosen] > 0]
    if len(chosen) == 0:
        return np.zeros(frame.shape[-2:], dtype=np.float32)
    up = F.interpolate(maps[chosen][:, None], size=frame.shape[-2:], mode="bilinear",
                       align_corners=False)
    low = up.flatten(1).amin(dim=1).view(-1, 1, 1, 1)
    high = up.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    up = (up - low) / (high - low + 1e-8)  # (k, 1, H, W) in [0, 1]
    mean = x.mean(dim=(2, 3), keepdim=True)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(x.device)
    flat_score = torch.sigmoid(detector.logits(torch.full_like(x, 1.0) * mean + 1e-3 * noise))
    weights = []
    for start in range(0, len(chosen), chunk):
        part = up[start : start + chunk]
        seen = mean + (x - mean) * part  # (k, C, H, W)
        weights.append(torch.sigmoid(detector.logits(seen)) - flat_score)
    w = torch.relu(torch.cat(weights)).view(-1, 1, 1, 1)
    cam = torch.relu((w * up).sum(dim=0))[0]
    peak = cam.max()
    return (cam / peak).numpy().astype(np.float32) if peak > 0 else cam.numpy() * 0


def _coarse(image: np.ndarray, step: int) -> np.ndarray:
    """Block means on a grid `step` times coarser (edge-padded to a whole number of blocks)."""
    h, w = image.shape
    ph, pw = (-h) % step, (-w) % step
    padded = np.pad(image, ((0, ph), (0, pw)), mode="edge")
    return padded.reshape((h + ph) // step, step, (w + pw) // step, step).mean(axis=(1, 3))


def illumination_trend(coarse: np.ndarray, *, rounds: int = 3, clip: float = 2.5) -> np.ndarray:
    """A quadratic surface fitted robustly (outliers beyond `clip` robust SD refitted without):
    vignetting and tilted lighting, which artifacts larger than any median window sit on."""
    h, w = coarse.shape
    y, x = np.arange(h) / max(h, w), np.arange(w) / max(h, w)
    coef, _kept = robust_quadratic(coarse, y, x, rounds=rounds, clip=clip, centred=False)
    return quadratic(coef, y, x)


def local_background(image: np.ndarray, size: int = 481, *, step: int = 16) -> np.ndarray:
    """The frame without its artifacts: a robust quadratic illumination trend plus the median
    of what is left over a size x size neighbourhood, computed on a grid `step` times coarser.

    A median is not pulled toward an artifact smaller than half its window, so neither the
    body of a large artifact nor the ground around it looks like background shifted; the trend
    keeps a wide window from smearing vignetting, and the coarse grid keeps a 1080 x 1080 frame
    at a fraction of a second.
    """
    h, w = image.shape
    coarse = _coarse(image, step)
    trend = illumination_trend(coarse)
    rest = ndi.median_filter(coarse - trend, size=max(3, (size // step) | 1), mode="nearest")
    return ndi.zoom(trend + rest, step, order=1)[:h, :w]


def image_evidence(frame: np.ndarray, *, background_px: int = 481, scale_px: float = 4.0,
                   z: float = 12.0, outline: float = 0.3) -> np.ndarray:
    """Regions whose relative deviation from their local background, seen at `scale_px`,
    exceeds z robust standard deviations of that deviation over the frame; each region is
    drawn where it reaches `outline` of its own peak deviation.

    Relative (frame / background - 1), because illumination multiplies what the sample does.
    At a few pixels' scale the bright and dark rims of a cell (a phase object) mostly cancel
    while absorbing artifacts (dust, debris, dirt, fibres) stay dark and the crystals of a
    precipitate merge into one cloud; the high z keeps cell bodies and texture out. The
    outline at a fraction of each region's own peak cuts off the fainter cells that touch a
    strong artifact, and puts a soft-edged artifact's border where it fades out. The
    background is a wide local median over an illumination trend, so the whole body of a
    large, smooth artifact (out-of-focus dirt, a bubble) stands out, not only its rim.
    Enclosed holes are filled.
    """
    image = frame.astype(np.float32)
    if image.ndim == 3:
        image = image.mean(axis=0)
    background = local_background(image, background_px)
    floor = max(float(np.abs(background).max()) * 1e-3, 1e-6)
    deviation = ndi.gaussian_filter(image / np.maximum(background, floor) - 1, scale_px)
    strength = np.abs(deviation - np.median(deviation))
    spread = np.median(strength) * 1.4826 + 1e-9
    evident = strength > z * spread
    regions, count = ndi.label(evident)
    if count:
        peaks = np.concatenate([[np.inf], ndi.maximum(strength, regions, np.arange(1, count + 1))])
        evident &= strength >= outline * peaks[regions]
    return ndi.binary_fill_holes(ndi.binary_closing(evident, iterations=2))


EVIDENCE = ("relative deviation from the local background at 4 px > 12 robust SD, "
            "outlined at 0.3 of each region's peak")


@dataclass(frozen=True, slots=True)
class PseudoMaskRule:
    threshold: float = 0.15  # on the [0, 1] ScoreCAM map
    refine: bool = True  # use image evidence
    regions: bool = True  # keep whole evidence regions the map touches, not only pixels inside it

    def describe(self) -> str:
        how = f"ScoreCAM >= {self.threshold:.2f}"
        if not self.refine:
            return how
        if self.regions:
            return f"whole regions of {EVIDENCE} where " + how
        return how + f" AND {EVIDENCE}"


def pseudo_mask(cam: np.ndarray, evidence: np.ndarray | None, rule: PseudoMaskRule) -> np.ndarray:
    if rule.refine and rule.regions and evidence is not None:
        # The map localises at 1/32 resolution and peaks on part of an artifact; the image
        # evidence has the artifact's true outline. Keep each evidence region it points at.
        regions, count = ndi.label(evidence)
        if count == 0:
            return np.zeros(cam.shape, dtype=bool)
        peaks = ndi.maximum(cam, regions, np.arange(1, count + 1))
        keep = np.concatenate([[False], np.asarray(peaks) >= rule.threshold])
        return keep[regions]
    mask = cam >= rule.threshold
    if rule.refine and evidence is not None:
        # Keep evidence pixels inside a slightly grown CAM region: the CAM is coarse.
        mask = ndi.binary_dilation(mask, iterations=8) & evidence
    return ndi.binary_fill_holes(mask)


def candidate_rules() -> list[PseudoMaskRule]:
    thresholds = (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    return [PseudoMaskRule(t, refine, regions)
            for refine, regions in ((True, True), (True, False), (False, False))
            for t in thresholds]
