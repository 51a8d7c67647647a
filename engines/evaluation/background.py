"""The robust illumination surface under a frame: vignetting and tilted lighting, not artifacts.

Both classical routes to an artifact mask start from it: the baselines (`baselines.py`) and the
image evidence behind ScoreCAM's pseudo-masks (`engines.training.scorecam`).
"""

from __future__ import annotations

import numpy as np

_MAD_TO_SD = 1.4826  # MAD of a normal distribution -> its standard deviation


def quadratic(coef: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """a + by + cx + dy² + exy + fx² on the grid y (rows) x x (columns)."""
    a, b, c, d, e, f = coef
    y, x = y[:, None], x[None, :]
    return (a + b * y + d * y * y) + (c * x + f * x * x) + e * y * x


def robust_quadratic(
    values: np.ndarray, y: np.ndarray, x: np.ndarray, *, rounds: int = 3, clip: float = 3.0,
    centred: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares `quadratic` over the grid y x x, refitted without the points more than
    `clip` robust SDs off it; returns the coefficients and the points kept.

    The robust SD is 1.4826 x the median absolute residual of the points kept, taken about the
    residuals' median (`centred`, the baselines) or about the surface itself (ScoreCAM's image
    evidence); each keeps the figures its models and tables were made with. Coordinates on a
    scale of about one (block centres in [-1, 1], or pixel / frame size) keep the fit well
    conditioned.

    >>> y, x = np.linspace(-1, 1, 16), np.linspace(-1, 1, 16)
    >>> light = quadratic(np.array([10.0, 1, 2, -3, 0.5, -1]), y, x)
    >>> values = light + np.random.default_rng(0).normal(0, 0.01, light.shape)
    >>> values[4:6, 4:6] += 5.0  # an artifact on the light
    >>> coef, kept = robust_quadratic(values, y, x)
    >>> np.round(coef, 1).tolist(), bool(kept[4:6, 4:6].any())
    ([10.0, 1.0, 2.0, -3.0, 0.5, -1.0], False)
    """
    yy, xx = np.meshgrid(y, x, indexing="ij")
    design = np.stack([np.ones_like(yy), yy, xx, yy * yy, yy * xx, xx * xx], axis=-1)
    design = design.reshape(-1, 6)
    target = values.ravel()
    inliers = np.ones(target.size, dtype=bool)
    coef = np.zeros(6)
    for _ in range(rounds):
        if np.count_nonzero(inliers) < design.shape[1]:
            break
        # Normal equations (6 unknowns, well conditioned on [-1, 1]): an SVD of the 6 x 6
        # system, not of every block.
        kept_design = design[inliers]
        normal = kept_design.T @ kept_design
        coef, *_ = np.linalg.lstsq(normal, kept_design.T @ target[inliers], rcond=None)
        residual = target - design @ coef
        kept = residual[inliers]
        centre = np.median(kept) if centred else 0.0
        spread = _MAD_TO_SD * np.median(np.abs(kept - centre))
        inliers = np.abs(residual) <= clip * spread
    return coef, inliers.reshape(values.shape)
