"""Synthetic brightfield frames with artifact ground truth: what every model trains and tests on.

What every renderer shares lives here: the options (``SynthOptions``), a frame with its instance
mask and object table (``SynthFrame``, ``SynthObject``), the registry of renderers and
``frame_for`` (frame ``index`` of dataset ``seed``, always the same arrays), and writing a
dataset to disk. The renderers are the packages beside this module: ``render_halo`` (the
default), ``render_wave``, ``render_monolayer``, ``render_relief``, ``render_caustic`` and
``render_particle``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tifffile

from engines.files import replace_atomically

logger = logging.getLogger(__name__)

ARTIFACT_KINDS = ("dust", "debris", "fibre", "bubble", "clump", "precipitate", "dirt", "scratch")
DTYPES = ("uint16", "uint8")
MIN_OBJECT_PX = 20  # an artifact whose footprint (inside the frame) is smaller is not drawn
OBJECT_COLUMNS = (
    "source",
    "kind",
    "label",
    "area_px",
    "equivalent_diameter_px",
    "centroid_y",
    "centroid_x",
)


@dataclass(frozen=True, slots=True)
class SynthOptions:
    height: int = 1080
    width: int = 1080
    pixel_size_um: float | None = None  # None -> drawn per frame, uniform in [0.3, 1.0]
    dtype: str = "uint16"  # "uint16" | "uint8"
    artifact_probability: float = 0.5  # chance a frame holds >= 1 artifact
    kinds: tuple[str, ...] = ARTIFACT_KINDS
    channels: int = 1  # >1: defocused copies stacked as (C, H, W); channel 0 is the nominal image
    planes: int = 1  # >1: a z-stack (Z, H, W) through focus; the mask is the in-focus truth
    # Frames of one plate: the cells' kind, their stain, the pixel size and the optics drawn
    # from this seed, alike in every frame; only the field (where cells and artifacts lie,
    # noise) differs. None: each frame draws its own, as a mixture of plates. Renderers in
    # PLATE_RENDERERS.
    plate_seed: int | None = None

    def __post_init__(self) -> None:
        if self.height < 16 or self.width < 16:
            raise ValueError(
                f"height and width must be at least 16 px, got {self.height}x{self.width}"
            )
        if self.pixel_size_um is not None and not 0.05 <= self.pixel_size_um <= 20:
            raise ValueError(f"pixel_size_um must be in [0.05, 20] um, got {self.pixel_size_um}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if not 0.0 <= self.artifact_probability <= 1.0:
            raise ValueError(
                f"artifact_probability must be in [0, 1], got {self.artifact_probability}"
            )
        unknown = [k for k in self.kinds if k not in ARTIFACT_KINDS]
        if unknown or not self.kinds:
            raise ValueError(
                f"kinds must be a non-empty subset of {ARTIFACT_KINDS}, got {self.kinds}"
            )
        if self.channels < 1 or self.planes < 1:
            raise ValueError(
                f"channels and planes must be >= 1, got {self.channels}, {self.planes}"
            )
        if self.channels > 1 and self.planes > 1:
            raise ValueError(
                "channels and planes cannot both be > 1: a frame is (C, H, W) or (Z, H, W)"
            )


DEFAULT_OPTIONS = SynthOptions()  # what a renderer draws when it is given no options
# Those that draw frames of one plate (plate_seed).
PLATE_RENDERERS = ("relief", "caustic", "particle")


def plate_look(rng: np.random.Generator, options: SynthOptions) -> np.random.Generator:
    """Where a frame's plate-wide draws (cells' kind, stain, pixel size, optics) come from: a
    generator started afresh from the plate's seed, so every frame draws the same; without a
    plate seed, the frame's own generator."""
    return rng if options.plate_seed is None else np.random.default_rng(options.plate_seed)


def frame_pixel_size(rng: np.random.Generator, options: SynthOptions,
                     range_um: tuple[float, float]) -> float:
    """The options' pixel size, or one drawn log-uniformly in `range_um` (um per px)."""
    if options.pixel_size_um is not None:
        return float(options.pixel_size_um)
    lo, hi = range_um
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


@dataclass(frozen=True, slots=True)
class SynthObject:
    kind: str
    label: int
    area_px: int
    equivalent_diameter_px: float
    centroid_y: float
    centroid_x: float


@dataclass(frozen=True, slots=True)
class SynthFrame:
    image: np.ndarray  # (H, W) in the requested dtype; (C, H, W) or (Z, H, W) when stacked
    mask: np.ndarray  # (H, W) uint16 instance labels of artifacts, 0 = background
    label: str  # "clean" | "artifact"
    objects: tuple[SynthObject, ...]
    pixel_size_um: float


# Independently written renderers, each a different idea of how a brightfield image forms, so
# a model can be trained on some and judged on one it never saw (module: its make_frame).
RENDERERS = {
    "halo": "engines.data.render_halo",  # round cells, transport-of-intensity halos
    "wave": "engines.data.render_wave",  # wave optics: transmission, defocus, pupil, sCMOS
    "monolayer": "engines.data.render_monolayer",  # procedural intensity layers: adherent cells
    "relief": "engines.data.render_relief",  # height field under oblique light, Beer-Lambert stain
    "caustic": "engines.data.render_caustic",  # ray displacement and caustics, level-set cells
    "particle": "engines.data.render_particle",  # particle clouds as defocused shadows, rings
}


def renderer(name: str) -> Callable[[np.random.Generator, SynthOptions], SynthFrame]:
    if name not in RENDERERS:
        raise ValueError(f"renderer {name!r}: expected one of {', '.join(RENDERERS)}")
    import importlib

    return importlib.import_module(RENDERERS[name]).make_frame


def frame_for(seed: int, index: int, options: SynthOptions = DEFAULT_OPTIONS,
              renderer_name: str = "halo") -> SynthFrame:
    """The frame `index` of the dataset `seed`: the same arguments always give the same arrays."""
    return renderer(renderer_name)(np.random.default_rng([seed, index]), options)


# --------------------------------------------------------------------------------------------
# Datasets


def _write_text(path: Path, text: str) -> None:
    replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _write_tiff(path: Path, array: np.ndarray, pixel_size_um: float) -> None:
    resolution = (1 / pixel_size_um, 1 / pixel_size_um)
    replace_atomically(
        path,
        lambda tmp: tifffile.imwrite(
            tmp, array, resolution=resolution, resolutionunit="MICROMETER", metadata=None
        ),
    )


def write_dataset(
    out: Path,
    count: int,
    seed: int,
    options: SynthOptions = DEFAULT_OPTIONS,
    *,
    progress: bool = True,
    renderer_name: str = "halo",
) -> Path:
    """Write `count` frames with masks, labels.csv, objects.csv and dataset.json into `out`.

    `source` in the CSVs is relative to out/frames (masks share the names under out/masks),
    which is what `artifactd train/eval --frames out/frames --masks out/masks` expect.
    """
    from tqdm import tqdm

    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    out = Path(out)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    labels = io.StringIO()
    label_rows = csv.writer(labels, lineterminator="\n")
    label_rows.writerow(("source", "label"))
    objects = io.StringIO()
    object_rows = csv.writer(objects, lineterminator="\n")
    object_rows.writerow(OBJECT_COLUMNS)
    for index in tqdm(range(count), desc="synth", unit="frame", disable=not progress):
        frame = frame_for(seed, index, options, renderer_name)
        name = f"{index:05d}.tif"
        _write_tiff(out / "frames" / name, frame.image, frame.pixel_size_um)
        _write_tiff(out / "masks" / name, frame.mask, frame.pixel_size_um)
        source = name
        label_rows.writerow((source, frame.label))
        for obj in frame.objects:
            object_rows.writerow(
                (source, obj.kind, obj.label, obj.area_px, f"{obj.equivalent_diameter_px:.3f}",
                 f"{obj.centroid_y:.3f}", f"{obj.centroid_x:.3f}")
            )
    _write_text(out / "labels.csv", labels.getvalue())
    _write_text(out / "objects.csv", objects.getvalue())
    description = {
        "seed": seed, "count": count, "renderer": renderer_name, "options": asdict(options)
    }
    _write_text(out / "dataset.json", json.dumps(description, indent=2) + "\n")
    logger.info("wrote %d synthetic frames to %s", count, out)
    return out
