"""From a probability map to labelled artifacts and their measurements.

The service and the evaluation both call `postprocess`, so what the operator sees and what the
model card reports are measured the same way. Steps (ArtSeg, seed 001; seed 000):

1. `binarize`: a fixed threshold, or a local one that also catches faint artifacts standing out
   from their neighbourhood.
2. `clean`: drop objects smaller than a minimum area, then fill holes.
3. `label`: connected components, 8-connectivity.
4. `measure`: one row per artifact (size, shape, position, raw intensity).

Speed: this runs on every frame on the service's CPU (1080x1080 within a 200 ms budget for
everything). The full-frame passes are few and vectorised: the threshold (for "adaptive" also
a box filter at half resolution), `ndi.label`, one scan for the foreground pixels and one
scatter of the final labels. Areas and bounding boxes come from the foreground pixels' flat
indices, and everything per object works on that object's bounding-box slice, so the cost
grows with the artifacts' area, not with their count times the frame size. The measurements equal
skimage.measure.regionprops' (tests compare them) at a fraction of its cost.

A little over 400 lines on purpose: the per-object shape measures (Euler number, perimeter) are
private helpers of `measure` and are read together with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

METHODS = ("fixed", "adaptive")

# In a clean neighbourhood the adaptive threshold drops to this fraction of the fixed one: a
# pixel must stand out from its local mean by that much. Scaling with the threshold keeps the
# rule meaningful for models whose probabilities are calibrated low (ArtSeg's ScoreCAM: 0.001).
ADAPTIVE_CONTRAST = 0.5

ARTIFACT_COLUMNS = (
    "label",
    "area_px",
    "area_um2",
    "perimeter_px",
    "circularity",
    "eccentricity",
    "ellipticity",
    "equivalent_diameter_px",
    "major_axis_px",
    "minor_axis_px",
    "centroid_y",
    "centroid_x",
    "bbox_min_y",
    "bbox_min_x",
    "bbox_max_y",
    "bbox_max_x",
    "mean_intensity",
)

_INTEGER_COLUMNS = ("label", "area_px", "bbox_min_y", "bbox_min_x", "bbox_max_y", "bbox_max_x")
# Fixed per column so that every frame's table (empty ones included) appends to the same store.
ARTIFACT_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(np.int64 if name in _INTEGER_COLUMNS else np.float64)
    for name in ARTIFACT_COLUMNS
}

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)

# skimage.measure.perimeter (neighborhood=4): a border pixel's code is 1 + 2 * (border
# 4-neighbours) + 10 * (border diagonal neighbours); each code has a length (Benkrid & Crookes).
_PERIMETER_WEIGHTS = np.zeros(50, dtype=np.float64)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1.0
_PERIMETER_WEIGHTS[[21, 33]] = math.sqrt(2.0)
_PERIMETER_WEIGHTS[[13, 23]] = (1.0 + math.sqrt(2.0)) / 2.0


@dataclass(frozen=True, slots=True)
class PostprocessOptions:
    method: str = "fixed"  # "fixed" | "adaptive"
    threshold: float = 0.5  # probability above which a pixel is artifact
    adaptive_block_px: int = 51  # side of the local window for "adaptive" (odd)
    min_area_px: int = 0  # used when the pixel size is unknown or min_area_um2 == 0
    min_area_um2: float = 0.0  # used when the pixel size is known and this is > 0
    fill_holes: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"postprocess method: expected one of {METHODS}, got {self.method!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(
                f"postprocess threshold: expected a probability between 0 and 1, "
                f"got {self.threshold}"
            )
        if self.adaptive_block_px < 3 or self.adaptive_block_px % 2 == 0:
            raise ValueError(
                f"postprocess adaptive_block_px: expected an odd number >= 3, "
                f"got {self.adaptive_block_px}"
            )
        if self.min_area_px < 0:
            raise ValueError(f"postprocess min_area_px: expected >= 0, got {self.min_area_px}")
        if not self.min_area_um2 >= 0.0:
            raise ValueError(f"postprocess min_area_um2: expected >= 0, got {self.min_area_um2}")


@dataclass(frozen=True, slots=True)
class FrameMeasurements:
    labels: np.ndarray  # (H, W) uint16 (uint32 beyond 65535 artifacts), 0 = background
    artifacts: dict[str, np.ndarray]  # ARTIFACT_COLUMNS -> 1-D, row k is label k + 1
    area_fraction: float  # artifact pixels / all pixels
    n_artifacts: int


def binarize(probability: np.ndarray, options: PostprocessOptions) -> np.ndarray:
    """Probability map -> bool mask.

    "fixed": p > threshold.
    "adaptive": p > T(y, x) with T = min(threshold, local mean + ADAPTIVE_CONTRAST * threshold),
    the local mean taken over a square of about `adaptive_block_px` (as skimage's
    threshold_local, "mean"). Confident pixels always count; where the neighbourhood is quiet, a
    pixel that stands out from it counts too, so a faint artifact on a raised, uneven background
    is found without letting the background itself through (seed 000: a local rather than a
    global threshold).

    >>> p = np.array([[0.1, 0.6], [0.45, 0.0]], dtype=np.float32)
    >>> binarize(p, PostprocessOptions(threshold=0.5)).astype(int).tolist()
    [[0, 1], [0, 0]]
    """
    _check_2d("probability", probability)
    if options.method == "fixed":
        return probability > options.threshold
    return _above_local_threshold(probability.astype(np.float32, copy=False), options)


def _above_local_threshold(p: np.ndarray, options: PostprocessOptions) -> np.ndarray:
    """The "adaptive" rule. The local mean is smooth, so it is computed on 2x2 means (a quarter
    of the pixels; the window becomes 2 * (block // 2 | 1) px, 50 for 51) and each threshold
    serves its 2x2 pixels: half the cost of a full-resolution box filter on the hot path."""
    height, width = p.shape
    if height % 2 or width % 2:
        p = np.pad(p, ((0, height % 2), (0, width % 2)), mode="edge")
    coarse = p[0::2, 0::2] + p[1::2, 0::2]
    coarse += p[0::2, 1::2]
    coarse += p[1::2, 1::2]
    coarse *= np.float32(0.25)
    local = ndi.uniform_filter(coarse, size=(options.adaptive_block_px // 2) | 1, mode="reflect")
    local += np.float32(ADAPTIVE_CONTRAST * options.threshold)
    np.minimum(local, np.float32(options.threshold), out=local)
    mask = np.empty(p.shape, dtype=bool)
    for dy, dx in ((0, 0), (1, 0), (0, 1), (1, 1)):
        np.greater(p[dy::2, dx::2], local, out=mask[dy::2, dx::2])
    return mask[:height, :width]


def label(mask: np.ndarray) -> np.ndarray:
    """Connected components with 8-connectivity: uint16, or uint32 beyond 65535 components.

    >>> label(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 0]], dtype=bool)).tolist()
    [[1, 0, 0], [0, 1, 0], [0, 0, 0], [2, 2, 0]]
    """
    _check_2d("mask", mask)
    labels, n = ndi.label(mask, structure=_EIGHT_CONNECTED)
    return labels.astype(_label_dtype(n), copy=False)


def clean(mask: np.ndarray, *, min_area_px: int, fill_holes: bool) -> np.ndarray:
    """Drop 8-connected objects smaller than `min_area_px`, then (optionally) fill their holes.

    The area test counts the object as binarised, before its holes are filled (as
    skimage.morphology.remove_small_objects would on the binarised map, ArtSeg seed 001).
    An object lying inside another's hole becomes part of it.

    >>> ring_and_speck = np.array([[1, 1, 1, 0, 1], [1, 0, 1, 0, 0], [1, 1, 1, 0, 0]], dtype=bool)
    >>> clean(ring_and_speck, min_area_px=2, fill_holes=True).astype(int).tolist()
    [[1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0]]
    """
    _check_2d("mask", mask)
    if min_area_px < 0:
        raise ValueError(f"clean: min_area_px must be >= 0, got {min_area_px}")
    labels, _ = _segment(mask, min_area_px, fill_holes)
    return labels > 0


def min_area_in_px(options: PostprocessOptions, pixel_size_um: float | None) -> int:
    """The minimum object area in pixels: from µm² when the pixel size is known and
    `min_area_um2` > 0, else `min_area_px`.

    >>> min_area_in_px(PostprocessOptions(min_area_px=40, min_area_um2=10.0), 0.5)
    40
    >>> min_area_in_px(PostprocessOptions(min_area_px=40, min_area_um2=10.0), None)
    40
    >>> min_area_in_px(PostprocessOptions(min_area_px=40, min_area_um2=11.0), 0.5)
    44
    """
    _check_pixel_size(pixel_size_um)
    if pixel_size_um is None or options.min_area_um2 == 0.0:
        return options.min_area_px
    # Keep an object when area_px * s² >= min_area_um2; the epsilon keeps 10 / 0.5² at 40,
    # not 41 by float rounding.
    return max(0, math.ceil(options.min_area_um2 / pixel_size_um**2 - 1e-9))


def measure(
    labels: np.ndarray, intensity: np.ndarray | None, pixel_size_um: float | None
) -> dict[str, np.ndarray]:
    """One row per label present in `labels` (ascending), columns ARTIFACT_COLUMNS.

    Shape follows skimage.measure.regionprops: perimeter is skimage's (4-neighbourhood), axes
    are those of the ellipse with the same second moments, bbox max is exclusive. Added:
    circularity 4πA/P² (at most 1; NaN for a lone pixel, whose perimeter is 0), ellipticity
    1 - minor/major (0 for a disc), area in µm² (NaN without a pixel size) and the mean of the
    raw frame over the artifact (NaN without a frame).
    """
    _check_2d("labels", labels)
    if labels.dtype.kind not in "ui" or (labels.size and labels.min() < 0):
        raise ValueError(
            f"labels: expected non-negative integers, 0 = background, got dtype {labels.dtype}"
        )
    return _measure(labels, ndi.find_objects(labels), intensity, pixel_size_um)


def postprocess(
    probability: np.ndarray,
    intensity: np.ndarray | None,
    options: PostprocessOptions,
    pixel_size_um: float | None = None,
) -> FrameMeasurements:
    """Probability map (H, W) -> labelled artifacts and their measurements.

    `intensity` is the raw frame (H, W) the map came from, for mean_intensity; None if absent.
    """
    _check_2d("probability", probability)
    min_area = min_area_in_px(options, pixel_size_um)
    labels, slices = _segment(binarize(probability, options), min_area, options.fill_holes)
    artifacts = _measure(labels, slices, intensity, pixel_size_um)
    area = int(artifacts["area_px"].sum())
    return FrameMeasurements(
        labels=labels,
        artifacts=artifacts,
        area_fraction=area / labels.size if labels.size else 0.0,
        n_artifacts=len(slices),
    )


def _segment(
    mask: np.ndarray, min_area_px: int, fill_holes: bool
) -> tuple[np.ndarray, list[tuple[slice, slice]]]:
    """Label, drop small objects, fill holes: consecutive labels 1..n and each one's bbox.

    Apart from `ndi.label` this works on the foreground pixels only (a few percent of a frame):
    areas, renumbering and bounding boxes come from their flat indices, not from full-frame
    passes such as bincount over the label image or `find_objects`.
    """
    raw, n = ndi.label(mask, structure=_EIGHT_CONNECTED)
    height, width = raw.shape
    pixels = np.flatnonzero(mask)
    raw_ids = raw.ravel()[pixels]
    areas = np.bincount(raw_ids, minlength=n + 1)
    keep = areas >= max(min_area_px, 1)
    keep[0] = False
    n_kept = int(np.count_nonzero(keep))
    new_ids = np.zeros(n + 1, dtype=_label_dtype(n_kept))
    new_ids[keep] = np.arange(1, n_kept + 1)
    kept = keep[raw_ids]
    pixels, ids = pixels[kept], new_ids[raw_ids[kept]]
    labels = np.zeros(height * width, dtype=new_ids.dtype)
    labels[pixels] = ids
    labels = labels.reshape(height, width)
    if n_kept == 0:
        return labels, []
    # Group pixels by label; flat indices ascend within a group, so its first and last rows
    # bound it. A stable sort of uint16 keys is a radix sort: linear in the foreground.
    rows, cols = np.divmod(pixels[np.argsort(ids, kind="stable")], width)
    ends = np.cumsum(areas[keep])
    starts = ends - areas[keep]
    y0, y1 = rows[starts], rows[ends - 1] + 1
    x0, x1 = np.minimum.reduceat(cols, starts), np.maximum.reduceat(cols, starts) + 1
    slices = [
        (slice(a, b), slice(c, d))
        for a, b, c, d in zip(y0.tolist(), y1.tolist(), x0.tolist(), x1.tolist(), strict=True)
    ]
    swallowed = _fill_holes(labels, slices) if fill_holes else []
    if swallowed:
        # Objects that sat in another's hole are gone: renumber so labels stay 1..n (rare).
        keep = np.ones(n_kept + 1, dtype=bool)
        keep[[0, *swallowed]] = False
        labels = _relabel(labels, keep)
        slices = ndi.find_objects(labels)
    return labels, slices


def _relabel(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Map kept labels (keep[label] True) to 1..k in label order, the rest to 0."""
    n_kept = int(np.count_nonzero(keep))
    lut = np.zeros(keep.size, dtype=_label_dtype(n_kept))
    lut[keep] = np.arange(1, n_kept + 1)
    return lut[labels]


def _fill_holes(labels: np.ndarray, slices: list[tuple[slice, slice]]) -> list[int]:
    """Fill each object's holes in place, within its bbox; returns the labels swallowed."""
    swallowed: list[int] = []
    for index, box in enumerate(slices):
        window = labels[box]
        obj = window == index + 1
        padded = _padded(obj)
        if _euler_number(padded) == 1:  # one object without holes: the common case
            continue
        outside, _ = ndi.label(padded == 0)  # 4-connected background
        holes = (outside[1:-1, 1:-1] != outside[0, 0]) & ~obj
        inside = window[holes]
        swallowed.extend(np.unique(inside[inside > 0]).tolist())
        window[holes] = index + 1
    return swallowed


def _padded(obj: np.ndarray) -> np.ndarray:
    """A bool image as uint8 with a one-pixel border of zeros."""
    padded = np.zeros((obj.shape[0] + 2, obj.shape[1] + 2), dtype=np.uint8)
    padded[1:-1, 1:-1] = obj
    return padded


# Gray's bit quads: 2x2 windows with one set pixel count +1, with three -1, diagonal pairs -2.
_EULER_QUADS = np.zeros(16, dtype=np.int64)
_EULER_QUADS[[1, 2, 4, 8]] = 1
_EULER_QUADS[[7, 11, 13, 14]] = -1
_EULER_QUADS[[6, 9]] = -2


def _euler_number(padded: np.ndarray) -> int:
    """Euler number (8-connected foreground) of a zero-padded uint8 image: components - holes."""
    quads = padded[:-1, :-1] + 2 * padded[:-1, 1:]
    quads += 4 * padded[1:, :-1]
    quads += 8 * padded[1:, 1:]
    return int(np.bincount(quads.ravel(), minlength=16) @ _EULER_QUADS) // 4


def _perimeter(padded: np.ndarray) -> float:
    """skimage.measure.perimeter(obj, neighborhood=4) of a zero-padded uint8 image, without
    convolving the whole slice."""
    core = padded[1:-1, 1:-1]
    border = core & ~(padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    b = np.zeros_like(padded)
    b[1:-1, 1:-1] = border
    codes = b[:-2, 1:-1] + b[2:, 1:-1]
    codes += b[1:-1, :-2]
    codes += b[1:-1, 2:]
    codes *= 2
    diagonal = b[:-2, :-2] + b[:-2, 2:]
    diagonal += b[2:, :-2]
    diagonal += b[2:, 2:]
    diagonal *= 10
    codes += diagonal
    codes += 1
    return float(np.bincount(codes[border.view(bool)], minlength=50) @ _PERIMETER_WEIGHTS)


def _measure(
    labels: np.ndarray,
    slices: Sequence[tuple[slice, slice] | None],
    intensity: np.ndarray | None,
    pixel_size_um: float | None,
) -> dict[str, np.ndarray]:
    _check_pixel_size(pixel_size_um)
    if intensity is not None and intensity.shape != labels.shape:
        raise ValueError(
            f"intensity: expected the frame's (H, W) = {labels.shape}, got {intensity.shape}"
        )
    present = [(i + 1, box) for i, box in enumerate(slices) if box is not None]
    rows = len(present)
    cols = {name: np.zeros(rows, dtype=ARTIFACT_DTYPES[name]) for name in ARTIFACT_COLUMNS}
    for row, (value, box) in enumerate(present):
        obj = labels[box] == value
        # Moments from row and column profiles: no per-pixel coordinate arrays.
        weights = obj.astype(np.float64)
        per_row, per_col = weights.sum(axis=1), weights.sum(axis=0)
        area = float(per_row.sum())
        ys = np.arange(obj.shape[0], dtype=np.float64)
        xs = np.arange(obj.shape[1], dtype=np.float64)
        mean_y, mean_x = ys @ per_row / area, xs @ per_col / area
        dy, dx = ys - mean_y, xs - mean_x
        # Eigenvalues of the covariance of pixel coordinates, as regionprops' inertia tensor.
        var_y, var_x = (dy * dy) @ per_row / area, (dx * dx) @ per_col / area
        cov = dy @ (weights @ dx) / area
        half_sum, root = (var_y + var_x) / 2.0, math.hypot((var_y - var_x) / 2.0, cov)
        l1, l2 = half_sum + root, max(half_sum - root, 0.0)
        perimeter = _perimeter(_padded(obj))
        cols["label"][row] = value
        cols["area_px"][row] = area
        cols["perimeter_px"][row] = perimeter
        cols["circularity"][row] = (
            min(4.0 * math.pi * area / perimeter**2, 1.0) if perimeter > 0 else math.nan
        )
        cols["eccentricity"][row] = math.sqrt(1.0 - l2 / l1) if l1 > 0 else 0.0
        cols["major_axis_px"][row] = major = 4.0 * math.sqrt(l1)
        cols["minor_axis_px"][row] = minor = 4.0 * math.sqrt(l2)
        cols["ellipticity"][row] = 1.0 - minor / major if major > 0 else 0.0
        cols["centroid_y"][row] = box[0].start + mean_y
        cols["centroid_x"][row] = box[1].start + mean_x
        cols["bbox_min_y"][row], cols["bbox_max_y"][row] = box[0].start, box[0].stop
        cols["bbox_min_x"][row], cols["bbox_max_x"][row] = box[1].start, box[1].stop
        cols["mean_intensity"][row] = (
            np.sum(intensity[box], where=obj, dtype=np.float64) / area
            if intensity is not None
            else math.nan
        )
    cols["equivalent_diameter_px"] = np.sqrt(4.0 * cols["area_px"] / math.pi)
    cols["area_um2"] = (
        cols["area_px"] * pixel_size_um**2 if pixel_size_um is not None else np.full(rows, math.nan)
    )
    return cols


def _label_dtype(n_labels: int) -> type[np.unsignedinteger]:
    return np.uint16 if n_labels <= np.iinfo(np.uint16).max else np.uint32


def _check_2d(name: str, array: np.ndarray) -> None:
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (H, W) array, got shape {array.shape}")


def _check_pixel_size(pixel_size_um: float | None) -> None:
    if pixel_size_um is not None and not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise ValueError(
            f"pixel_size_um: expected a positive size in µm or None (unknown), got {pixel_size_um}"
        )
