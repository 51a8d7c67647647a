"""Write a trained model folder: detector.onnx, segmenter.onnx, torch weights and model.json.

The ONNX files have a dynamic batch axis and dynamic frame height/width (multiples of the
card's pad_multiple) and carry the card's key facts as ONNX metadata, so an engine file found
on its own still says how it must be fed. The folder is assembled under a temporary name and
renamed into place: an interrupted export leaves no half-written model. A model it replaces is
renamed aside first and removed only once the new one is in place, so the folder's name is
without a model only between two renames, never while files are written or deleted.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import onnx
import torch
from torch import nn

from engines.files import sync_folder_entry, sync_tree
from engines.pytorch.models import Architecture, pad_multiple
from engines.runtime.modelcard import ModelCard

if TYPE_CHECKING:
    from engines.training.options import TrainedModels, TrainOptions

logger = logging.getLogger(__name__)
# The exporter's graph passes log every rewrite at INFO; users need none of it.
logging.getLogger("onnx_ir").setLevel(logging.WARNING)

FILES = {
    "detector": "detector.onnx",
    "segmenter": "segmenter.onnx",
    "detector_torch": "detector.pt",
    "segmenter_torch": "segmenter.pt",
}
OUTPUT_NAMES = {"detector": "score", "segmenter": "probability"}


def export_onnx(model: nn.Module, path: Path, output_name: str, arch: Architecture,
                metadata: dict[str, str]) -> None:
    """Export with dynamic batch, height and width (height/width multiples of pad_multiple)."""
    multiple = pad_multiple(arch)
    # Its own generator: exporting must not draw from (or depend on) torch's global one.
    gen = torch.Generator().manual_seed(0)
    example = torch.rand(2, arch.in_channels, 2 * multiple, 3 * multiple, generator=gen) * 1000
    batch, h, w = torch.export.Dim("batch"), torch.export.Dim("h"), torch.export.Dim("w")
    model = model.cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(path), input_names=["frames"], output_names=[output_name],
            dynamic_shapes={"frames": {0: batch, 2: multiple * h, 3: multiple * w}},
            external_data=False, verbose=False,
        )
    proto = onnx.load(str(path))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def onnx_metadata(card: ModelCard) -> dict[str, str]:
    return {
        "artifactd.name": card.name,
        "artifactd.version": card.version,
        "artifactd.analysis_scale": str(card.analysis_scale),
        "artifactd.pad_multiple": str(card.pad_multiple),
        "artifactd.normalisation": card.normalisation,
        "artifactd.segment_threshold": str(card.segment_threshold),
        "artifactd.detect_threshold": str(card.detect_threshold),
        "artifactd.segment": card.segment,
        "artifactd.training_data_hash": card.training_data_hash,
        "artifactd.architecture": json.dumps(card.architecture),
    }


def make_card(trained: TrainedModels, options: TrainOptions, data_hash: str,
              version: str) -> ModelCard:
    arch = options.arch
    return ModelCard(
        name=options.name,
        version=version,
        in_channels=arch.in_channels,
        analysis_scale=1.0 / arch.unshuffle,
        pad_multiple=pad_multiple(arch),
        normalisation=(
            "inside the model: per-frame, per-channel (x - mean) / std, then space-to-depth "
            f"by {arch.unshuffle} (every full-resolution pixel is seen)"
        ),
        segment_threshold=trained.segment_threshold,
        detect_threshold=trained.detect_threshold,
        min_area_px=trained.min_area_px,
        segment=trained.segment,
        training_data_hash=data_hash,
        mode=trained.mode,
        files=dict(FILES),
        evaluation=dict(trained.validation),
        architecture=arch.to_dict(),
        notes=list(trained.notes),
        familiarity=dict(trained.familiarity),
    )


def write_model_folder(out: Path, trained: TrainedModels, options: TrainOptions,
                       data_hash: str, *, version: str) -> ModelCard:
    card = make_card(trained, options, data_hash, version)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        metadata = onnx_metadata(card)
        for part, model in (("detector", trained.detector), ("segmenter", trained.segmenter)):
            export_onnx(model, staging / FILES[part], OUTPUT_NAMES[part], options.arch, metadata)
            torch.save(model.cpu().state_dict(), staging / FILES[f"{part}_torch"])
        (staging / "model.json").write_text(card.to_json() + "\n")
        staging.chmod(0o755)  # mkdtemp makes it private; a service user must read the model
        swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("wrote %s", out)
    return card


def swap_in(staging: Path, out: Path) -> None:
    """Rename the complete folder `staging` to `out`. An existing `out` is renamed aside, beside
    it under a hidden name, and deleted after the new folder is in; should the second rename
    fail, the old folder is put back, so `out` holds the old model or the new one. The new
    files are on disk before either rename, and the renames before the old folder goes, so a
    power cut leaves a whole model too."""
    sync_tree(staging)
    if not out.exists():
        staging.rename(out)
        sync_folder_entry(out.parent)
        return
    aside = out.with_name(f".{out.name}.old.{os.getpid()}.{secrets.token_hex(4)}")
    out.rename(aside)
    try:
        staging.rename(out)
    except BaseException:
        aside.rename(out)
        raise
    sync_folder_entry(out.parent)
    shutil.rmtree(aside, ignore_errors=True)
