"""ScoreCAM maps of the detector and the pseudo-masks made from them (ArtSeg, seed 001).

ScoreCAM (Wang et al. 2020) weighs each activation map of a late conv layer by how much the
input, seen only through that map, raises the classifier's artifact score. Here the input is
"seen through" a map by blending it toward the frame's mean where the map is low, because the
detector standardises each frame: zeroing pixels would itself look like an artifact.

Pseudo-masks binarise the map. ScoreCAM localises at the resolution of its layer (1/32 here),
so optionally the map is intersected with image evidence: pixels that deviate from the local
background by more than an adaptive threshold (seed 000's adaptive thresholding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage as ndi
from torch.nn import functional as F

from engines.models import Detector


@torch.no_grad()
def scorecam(detector: Detector, frame: torch.Tensor, *, top_k: int = 32, chunk: int = 8) -> np.ndarray:
    """One frame (C, H, W) float32 -> (H, W) float32 map in [0, 1] (0 everywhere if nothing)."""
    detector.eval()
    x = frame[None]
    maps = detector.cam_maps(x)[0]  # (K, h, w)
    strength = maps.flatten(1).amax(dim=1)
    chosen = torch.argsort(strength, descending=True)[: min(top_k, maps.shape[0])]
    chosen = chosen[strength[chosen] > 0]
    if len(chosen) == 0:
        return np.zeros(frame.shape[-2:], dtype=np.float32)
    up = F.interpolate(maps[chosen][:, None], size=frame.shape[-2:], mode="bilinear", align_corners=False)
    low = up.flatten(1).amin(dim=1).view(-1, 1, 1, 1)
    high = up.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    up = (up - low) / (high - low + 1e-8)  # (k, 1, H, W) in [0, 1]
    mean = x.mean(dim=(2, 3), keepdim=True)
    flat_score = torch.sigmoid(detector.logits(torch.full_like(x, 1.0) * mean + 1e-3 * torch.randn_like(x)))
    weights = []
    for start in range(0, len(chosen), chunk):
        part = up[start : start + chunk]
        seen = mean + (x - mean) * part  # (k, C, H, W)
        weights.append(torch.sigmoid(detector.logits(seen)) - flat_score)
    w = torch.relu(torch.cat(weights)).view(-1, 1, 1, 1)
    cam = torch.relu((w * up).sum(dim=0))[0]
    peak = cam.max()
    return (cam / peak).numpy().astype(np.float32) if peak > 0 else cam.numpy() * 0


def image_evidence(frame: np.ndarray, *, background_sigma: float = 20.0, z: float = 3.0) -> np.ndarray:
    """Pixels deviating from their local background by more than z robust standard deviations."""
    image = frame.astype(np.float32)
    if image.ndim == 3:
        image = image.mean(axis=0)
    smooth = ndi.gaussian_filter(image, 1.0)
    background = ndi.gaussian_filter(image, background_sigma)
    deviation = np.abs(smooth - background)
    mad = np.median(np.abs(smooth - np.median(smooth))) * 1.4826 + 1e-6
    evident = deviation > z * mad
    return ndi.binary_closing(evident, iterations=2)


@dataclass(frozen=True, slots=True)
class PseudoMaskRule:
    threshold: float = 0.5  # on the [0, 1] ScoreCAM map
    refine: bool = True  # intersect with image evidence

    def describe(self) -> str:
        how = f"ScoreCAM >= {self.threshold:.2f}"
        return how + (" AND local-background deviation > 3 robust SD" if self.refine else "")


def pseudo_mask(cam: np.ndarray, evidence: np.ndarray | None, rule: PseudoMaskRule) -> np.ndarray:
    mask = cam >= rule.threshold
    if rule.refine and evidence is not None:
        # Keep evidence pixels inside a slightly grown CAM region: the CAM is coarse.
        mask = ndi.binary_dilation(mask, iterations=8) & evidence
    return ndi.binary_fill_holes(mask)


def candidate_rules() -> list[PseudoMaskRule]:
    thresholds = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    return [PseudoMaskRule(t, refine) for refine in (True, False) for t in thresholds]
