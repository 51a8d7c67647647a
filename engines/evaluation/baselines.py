"""Classical baselines the models are compared against (seed 000: thresholding).

Both start the way an image analyst would without a model:

1. Flatten the illumination: divide the frame (lightly smoothed, sigma 1 px, against pixel
   noise) by its large-scale background, so vignetting and uneven lamps drop out. The
   background is a robust quadratic surface (vignetting) times a Gaussian, sigma = 1/16 of the
   frame's longer side, of what the surface leaves (see `_background`).
2. Take the absolute deviation from that background: dust and debris are darker, bubbles and
   reflections brighter, so both directions count.
3. Threshold: a global Otsu threshold, or a local (mean over a block) one; either is raised to
   at least NOISE_FLOOR_SD robust standard deviations of the flattened frame. Without that
   floor Otsu always splits something, and every clean frame would be flagged, which no
   analyst would accept.
4. Drop objects smaller than `min_area_px` and fill holes (`engines.runtime.postprocess.clean`,
   as for the models).

Their honest weaknesses are the classical ones: artifacts larger than the background scale are
partly absorbed into the background, and anything that deviates as strongly as an artifact
(dense or mitotic cells in brightfield) is found too.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_local, threshold_otsu

from engines.evaluation.background import quadratic, robust_quadratic
from engines.runtime.postprocess import clean

NOISE_FLOOR_SD = 4.0  # threshold >= this many robust SDs of the flattened frame
BACKGROUND_SCALE = 1.0 / 16.0  # background sigma as a fraction of the frame's longer side
_PIXEL_SMOOTHING_SIGMA = 1.0
_MAD_TO_SD = 1.4826  # MAD of a normal distribution -> its standard deviation


def otsu_baseline(frame: np.ndarray, *, min_area_px: int = 40) -> np.ndarray:
    """Artifact mask by a global Otsu threshold on the flattened frame's absolute deviation."""
    deviation, noise_sd = flattened_deviation(frame)
    threshold = max(_otsu(deviation), NOISE_FLOOR_SD * noise_sd)
    return clean(deviation > threshold, min_area_px=min_area_px, fill_holes=True)


def adaptive_baseline(
    frame: np.ndarray, *, block_px: int = 51, min_area_px: int = 40
) -> np.ndarray:
    """Artifact mask by a local threshold (mean over `block_px`, odd) on the same deviation."""
    if block_px < 3 or block_px % 2 == 0:
        raise ValueError(f"adaptive_baseline: block_px must be an odd number >= 3, got {block_px}")
    deviation, noise_sd = flattened_deviation(frame)
    local = threshold_local(deviation, block_px, method="mean", offset=-NOISE_FLOOR_SD * noise_sd)
    return clean(deviation > local, min_area_px=min_area_px, fill_holes=True)


def flattened_deviation(frame: np.ndarray) -> tuple[np.ndarray, float]:
    """|frame / background - 1| (float32, 0 = background) and the robust SD of the signed ratio.

    >>> frame = np.full((64, 64), 1000, dtype=np.uint16); frame[30:34, 30:34] = 500
    >>> deviation, sd = flattened_deviation(frame)
    >>> bool(deviation[32, 32] > 0.3), bool(deviation[5, 5] < 0.01), sd
    (True, True, 0.0)
    """
    if frame.ndim != 2:
        raise ValueError(f"frame: expected a 2-D (H, W) image, got shape {frame.shape}")
    if frame.size == 0:
        raise ValueError("frame: expected a non-empty image")
    image = frame.astype(np.float32)
    background = _background(image)
    smoothed = ndi.gaussian_filter(image, _PIXEL_SMOOTHING_SIGMA)
    # A floor keeps dark corners (or a black frame) from dividing by ~0.
    floor = max(float(background.max()) * 1e-3, float(np.finfo(np.float32).tiny))
    ratio = smoothed / np.maximum(background, np.float32(floor)) - np.float32(1.0)
    # Every 4th pixel each way is plenty for two medians and 16 times cheaper.
    sample = ratio[::4, ::4]
    centre = np.float32(np.median(sample))
    ratio -= centre
    noise_sd = _MAD_TO_SD * float(np.median(np.abs(sample - centre)))
    return np.abs(ratio), noise_sd


def _background(image: np.ndarray) -> np.ndarray:
    """The frame's illumination, without its artifacts.

    A robust second-order surface takes out the vignetting first: a Gaussian alone would bend a
    curved illumination (its bias grows with sigma² x curvature) and flag the centre or corners
    of every clean frame. The Gaussian then follows what is left (fringes, uneven lamps),
    averaging only over blocks that fit the surface (normalised convolution), so blocks holding
    an artifact do not drag the background towards them. Both are fitted on block means (factor
    ~sigma/4), a fraction of a full-size blur's cost; the surface is evaluated at every pixel,
    only the nearly flat Gaussian part is interpolated.
    """
    height, width = image.shape
    sigma = BACKGROUND_SCALE * max(height, width)
    factor = max(1, int(sigma // 4))
    padded = np.pad(image, ((0, (-height) % factor), (0, (-width) % factor)), mode="edge")
    h, w = padded.shape[0] // factor, padded.shape[1] // factor
    blocks = padded.reshape(h, factor, w, factor).mean(axis=(1, 3), dtype=np.float64)
    (block_y, pixel_y), (block_x, pixel_x) = _axis(h, factor, height), _axis(w, factor, width)
    coef, inliers = robust_quadratic(blocks, block_y, block_x)
    surface = quadratic(coef, block_y, block_x)
    weight = inliers.astype(np.float64)
    ratio = np.divide(blocks, surface, out=np.ones_like(blocks), where=surface > 0)
    smooth = ndi.gaussian_filter(ratio * weight, sigma / factor, mode="nearest")
    norm = ndi.gaussian_filter(weight, sigma / factor, mode="nearest")
    residual = np.divide(smooth, norm, out=np.ones_like(smooth), where=norm > 1e-6)
    # Bilinear interpolation to every pixel as two small matrix products (separable).
    residual = _interpolation(block_y, pixel_y) @ residual @ _interpolation(block_x, pixel_x).T
    surface = quadratic(coef.astype(np.float32), pixel_y, pixel_x)
    return surface * residual.astype(np.float32)


def _axis(n_blocks: int, factor: int, n_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of block centres, in [-1, 1], and of every pixel on the same scale."""
    centres = np.arange(n_blocks) * factor + (factor - 1) / 2.0
    middle = (centres[0] + centres[-1]) / 2.0
    half_span = max((centres[-1] - centres[0]) / 2.0, 1.0)
    pixels = (np.arange(n_pixels) - middle) / half_span
    return (centres - middle) / half_span, pixels.astype(np.float32)


def _interpolation(nodes: np.ndarray, at: np.ndarray) -> np.ndarray:
    """(len(at), len(nodes)) weights of linear interpolation, constant beyond the ends."""
    return np.stack([np.interp(at, nodes, unit) for unit in np.eye(nodes.size)], axis=1)


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold; a constant image has none, so nothing is above it."""
    if values.max() == values.min():
        return float(values.max())
    return float(threshold_otsu(values))
