"""Training and evaluation data from disk: a folder of frames, a labels CSV, optional masks.

The labels CSV has a header `source,label`; `source` is a path relative to the frames folder
and `label` is `clean` or `artifact`. Masks, when given, live in a second folder under the
same relative paths (any integer TIFF; nonzero = artifact). Every problem a user can cause is
reported as one DatasetError naming the file and what was expected.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

logger = logging.getLogger(__name__)

LABELS = ("clean", "artifact")


class DatasetError(ValueError):
    """Bad training or evaluation input, named precisely."""


@dataclass(frozen=True, slots=True)
class Sample:
    source: str
    image: np.ndarray  # (C, H, W) as stored (uint8/uint16)
    label: int  # 1 = artifact
    mask: np.ndarray | None  # (H, W) instance labels, 0 = background; None when not given


@dataclass(frozen=True, slots=True)
class Dataset:
    samples: tuple[Sample, ...]
    fingerprint: str  # sha256 of the sources, labels and file bytes

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def with_masks(self) -> list[int]:
        return [i for i, s in enumerate(self.samples) if s.mask is not None]


def read_labels(path: Path) -> list[tuple[str, int]]:
    if not path.is_file():
        raise DatasetError(f"{path}: labels CSV not found")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"source", "label"} <= set(reader.fieldnames):
            raise DatasetError(f"{path}: expected a header with columns source,label")
        rows = []
        for line, row in enumerate(reader, start=2):
            label = (row["label"] or "").strip().lower()
            if label not in LABELS:
                raise DatasetError(
                    f"{path} line {line}: label {row['label']!r}; expected clean or artifact"
                )
            rows.append(((row["source"] or "").strip(), int(label == "artifact")))
    if not rows:
        raise DatasetError(f"{path}: no labelled frames; expected at least one row")
    return rows


def read_image(path: Path, in_channels: int = 1) -> np.ndarray:
    """One frame as (C, H, W) integer array, or a DatasetError naming the file."""
    try:
        image = tifffile.imread(path)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except Exception as exc:  # tifffile raises many types for non-TIFF or damaged data
        raise DatasetError(f"{path}: not a readable TIFF image ({exc})") from None
    if image.dtype.kind not in "ui":
        raise DatasetError(f"{path}: pixel type {image.dtype}; expected unsigned integers")
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3 or image.shape[0] != in_channels:
        raise DatasetError(
            f"{path}: shape {image.shape}; expected (H, W) or ({in_channels}, H, W)"
        )
    return image


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Instance labels as stored (touching artifacts stay apart); binary masks work too."""
    mask = read_image(path)[0]
    if mask.shape != shape:
        raise DatasetError(f"{path}: mask shape {mask.shape} differs from its frame's {shape}")
    return mask


def load_dataset(
    frames: Path,
    labels_csv: Path,
    masks: Path | None = None,
    *,
    in_channels: int = 1,
    require_both_classes: bool = True,
) -> Dataset:
    frames = Path(frames)
    if not frames.is_dir():
        raise DatasetError(f"{frames}: frames folder not found")
    if not any(frames.iterdir()):
        raise DatasetError(f"{frames}: frames folder is empty")
    rows = read_labels(Path(labels_csv))
    missing = [source for source, _ in rows if not (frames / source).is_file()]
    if missing:
        raise DatasetError(
            f"{labels_csv}: {len(missing)} listed frame(s) do not exist in {frames}, "
            f"first: {missing[0]}"
        )
    digest = hashlib.sha256()
    samples = []
    for source, label in rows:
        image = read_image(frames / source, in_channels)
        mask = None
        if masks is not None and (Path(masks) / source).is_file():
            mask = read_mask(Path(masks) / source, image.shape[-2:])
        digest.update(f"{source},{label}".encode())
        digest.update(image.tobytes())
        samples.append(Sample(source, image, label, mask))
    classes = {label for _, label in rows}
    if require_both_classes and len(classes) < 2:
        only = LABELS[classes.pop()]
        raise DatasetError(
            f"{labels_csv}: every frame is labelled {only}; expected both clean and artifact frames"
        )
    logger.info(
        "loaded %d frames (%d artifact, %d with masks) from %s",
        len(samples), sum(s.label for s in samples),
        sum(s.mask is not None for s in samples), frames,
    )
    return Dataset(tuple(samples), digest.hexdigest())


def split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation split of indices, reproducible from the seed."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for value in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == value))
        n_val = max(1, round(len(idx) * val_fraction)) if len(idx) > 1 else 0
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))
