"""How unlike the training frames a frame looks: its unfamiliarity score.

A model is only trustworthy on images like those it learnt from. Each frame is summarised by a
dozen appearance statistics of its texture, contrast and shading (what differs between cell
lines, stains, objectives and cameras, and little between a clean and a dirty field of one
plate). Training stores their mean and covariance in the model card; a frame's score is its
Mahalanobis distance from them, divided by the distance that 95 % of the training frames stay
within. So ~1 is as familiar as the training frames, and above `UNFAMILIAR` the frame is unlike
anything the model saw.

Numpy and scipy only: it runs beside every backend in the service, on the CPU, in ~12 ms per
1080 x 1080 frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

# A frame scoring above this is "unfamiliar": twice as far from the training frames as 95 % of
# them are. Far enough that a model's own domain rarely crosses it (tests/engines).
UNFAMILIAR = 2.0
# A plate whose median frame scores above this is unlike the training data. Single frames of
# two renderers overlap (each varies a lot); a plate's median separates them: the training
# frames' own median is ~0.85, other renderers' plates ~1.5 (tests/engines/test_familiarity.py).
PLATE_UNFAMILIAR = 1.25
SMALL_SIDE = 128  # frames are block-averaged to about this size first (cheap, keeps cell texture)
BACKGROUND_SIGMA = 8  # px of the small frame: the shading that is divided out
BANDS = (0.6, 1.2, 2.4, 4.8)  # DoG scales on the small frame, px
FEATURES = (
    "log_contrast",
    *(f"band_{s:g}" for s in BANDS),
    "dark_tail",
    "bright_tail",
    "asymmetry",
    "tail_weight",
    "contrast_spread",
    "shading",
    # Micro-texture: uniform local binary patterns (8 neighbours) at two scales, as histograms.
    *(f"lbp{r}_{k}" for r in (1, 2) for k in range(10)),
)
SHRINKAGE = 0.1  # covariance pulled towards its diagonal: stable with a few hundred frames


def appearance(pixels: np.ndarray) -> np.ndarray:
    """(H, W) or (C, H, W) frame -> one vector of FEATURES (channel 0 is described)."""
    image = np.asarray(pixels, dtype=np.float32)
    if image.ndim == 3:
        image = image[0]
    small = _block_mean(image, max(1, round(max(image.shape) / SMALL_SIDE)))
    background = ndi.gaussian_filter(small, BACKGROUND_SIGMA, mode="reflect") + 1e-3
    ratio = small / background - 1  # shading divided out: texture relative to the local light
    centre = float(np.median(ratio))
    spread = 1.4826 * float(np.median(np.abs(ratio - centre))) + 1e-6
    z = (ratio - centre) / spread
    bands = [np.std(ndi.gaussian_filter(z, s) - ndi.gaussian_filter(z, 2 * s)) for s in BANDS]
    q01, q10, q25, q50, q75, q90, q99 = np.quantile(z, (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99))
    local = np.sqrt(np.maximum(ndi.uniform_filter(z * z, 5) - ndi.uniform_filter(z, 5) ** 2, 1e-6))
    l10, l90 = np.quantile(local, (0.1, 0.9))
    b05, b95 = np.quantile(background, (0.05, 0.95))
    return np.array([*_contrast_features(spread, bands, z, (q01, q10, q25, q50, q75, q90, q99),
                                         (l10, l90), (b05, b95)), *_micro_texture(z)])


def _contrast_features(spread, bands, z, q, local, shading) -> list[float]:
    q01, q10, q25, q50, q75, q90, q99 = q
    (l10, l90), (b05, b95) = local, shading
    return [
        math.log(spread),
        *(math.log(b + 1e-6) for b in bands),
        math.log10(np.mean(z < -4) + 1e-4),
        math.log10(np.mean(z > 4) + 1e-4),
        (q90 + q10 - 2 * q50) / (q90 - q10 + 1e-6),
        math.log((q99 - q01) / (q75 - q25 + 1e-6) + 1e-6),
        math.log(l90 / l10),
        math.log(b95 / max(b05, 1e-3)),
    ]


def _micro_texture(z: np.ndarray) -> list[float]:
    """Log shares of the 10 uniform LBP codes, at radius 1 and (smoothed) radius 2."""
    from skimage.feature import local_binary_pattern

    shares = []
    for radius, smoothed in ((1, z), (2, ndi.gaussian_filter(z, 1.0))):
        # Integers: LBP compares neighbours, and float ties flicker (quantised at 1/16 SD).
        quantised = np.clip(np.rint(smoothed * 16), -32000, 32000).astype(np.int16)
        codes = local_binary_pattern(quantised, 8, radius, method="uniform").astype(np.int64)
        shares.extend(np.log(np.bincount(codes.ravel(), minlength=10) / codes.size + 1e-3))
    return shares


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return image
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    return image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


@dataclass(frozen=True, slots=True)
class Familiarity:
    """The training frames' appearance: mean, whitening matrix and the 95 % distance."""

    mean: np.ndarray
    whiten: np.ndarray  # W with W^T W = inverse covariance
    scale: float

    @classmethod
    def fit(cls, vectors: np.ndarray) -> Familiarity:
        vectors = np.asarray(vectors, dtype=np.float64)
        if vectors.ndim != 2 or vectors.shape[0] < 2:
            raise ValueError(f"fitting familiarity needs at least 2 frames, got {vectors.shape[0]}")
        mean = vectors.mean(axis=0)
        cov = np.cov(vectors, rowvar=False)
        cov = (1 - SHRINKAGE) * cov + SHRINKAGE * np.diag(np.diag(cov))
        cov += np.eye(len(mean)) * 1e-6 * max(float(np.trace(cov)), 1e-12)
        whiten = np.linalg.cholesky(np.linalg.inv(cov)).T
        distances = np.linalg.norm((vectors - mean) @ whiten.T, axis=1)
        return cls(mean, whiten, float(np.quantile(distances, 0.95)) or 1.0)

    def score(self, pixels: np.ndarray) -> float:
        """Unfamiliarity of one frame: ~1 for frames like the training frames."""
        return self.score_vector(appearance(pixels))

    def score_vector(self, vector: np.ndarray) -> float:
        return float(np.linalg.norm(self.whiten @ (vector - self.mean)) / self.scale)

    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "mean": self.mean.round(6).tolist(),
                "whiten": self.whiten.round(6).tolist(), "scale": round(self.scale, 6)}

    @classmethod
    def from_dict(cls, raw: dict) -> Familiarity | None:
        """None for a card without statistics, or with other features than these."""
        if not raw or list(raw.get("features", ())) != list(FEATURES):
            return None
        return cls(np.array(raw["mean"], dtype=np.float64),
                   np.array(raw["whiten"], dtype=np.float64), float(raw["scale"]))
