"""What the U-Net learns from: the given masks (supervised), or ScoreCAM pseudo-masks (weak),
with the ScoreCAM maps cached on disk and, when fine-tuning, the initial U-Net's own outlines
as the regions the maps choose among."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engines.data.dataset import Dataset
from engines.evaluation.scoring import pooled_iou
from engines.files import replace_atomically
from engines.pytorch.models import Detector, UNet, pad_multiple
from engines.runtime.postprocess import clean
from engines.training.batches import predict, to_tensor
from engines.training.options import Starting, TrainOptions
from engines.training.scorecam import (
    PseudoMaskRule,
    candidate_rules,
    image_evidence,
    pseudo_mask,
    scorecam,
)

logger = logging.getLogger(__name__)


def initial_outliner(starting: Starting | None, segmenter: UNet) -> Outliner | None:
    """The --init U-Net with its card's threshold and minimum area, to outline pseudo-masks
    (None when training from scratch)."""
    if starting is None:
        return None
    return Outliner(segmenter, starting.segment_threshold, starting.min_area_px)


class CamCache:
    """ScoreCAM maps on disk, one file per (detector weights, frame, top-k); no folder, no cache.

    Files are replaced atomically, so an interrupted run leaves only whole maps behind."""

    def __init__(self, folder: Path | None, detector: Detector, top_k: int) -> None:
        self.folder = folder
        digest = hashlib.sha256(str(top_k).encode())
        for name, tensor in sorted(detector.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().numpy().tobytes())
        self.detector_key = digest.hexdigest()[:16]

    def _path(self, image: np.ndarray) -> Path:
        frame = hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:24]
        return self.folder / self.detector_key / f"{frame}.npy"

    def get(self, image: np.ndarray) -> np.ndarray | None:
        if self.folder is None:
            return None
        try:
            cam = np.load(self._path(image))
        except (OSError, ValueError):  # missing, or damaged: made again
            return None
        return cam if cam.shape == image.shape[-2:] else None

    def put(self, image: np.ndarray, cam: np.ndarray) -> None:
        if self.folder is None:
            return
        path = self._path(image)
        path.parent.mkdir(parents=True, exist_ok=True)

        def write(tmp: Path) -> None:
            with tmp.open("wb") as f:  # a handle: np.save would add ".npy" to the name
                np.save(f, cam.astype(np.float32))

        replace_atomically(path, write)


@dataclass(frozen=True, slots=True)
class Outliner:
    """The U-Net being fine-tuned, as its model card runs it: in labels-only fine-tuning its own
    outlines, where ScoreCAM points, are the pseudo-masks (self-training). Clean frames then
    teach it what is not an artifact on the new images; the image-evidence rule of a
    from-scratch run outlines dark cells of unfamiliar images as readily as debris."""

    segmenter: UNet
    threshold: float
    min_area_px: int

    def outline(self, image: np.ndarray, multiple: int, device: torch.device) -> np.ndarray:
        found = predict(self.segmenter, image, multiple, device) >= self.threshold
        return clean(found, min_area_px=self.min_area_px, fill_holes=False)


def weak_targets(dataset: Dataset, detector: Detector, train_idx: np.ndarray, val_idx: np.ndarray,
                 options: TrainOptions, device: torch.device, notes: list[str],
                 outliner: Outliner | None = None) -> dict[int, np.ndarray]:
    """ScoreCAM pseudo-masks for artifact frames, empty masks for clean ones. The regions the
    map chooses among are the image evidence, or the outlines of `outliner` when given."""
    multiple = pad_multiple(options.arch)
    if outliner is not None:
        outliner.segmenter.to(device).eval()
    artifact = [int(i) for i in np.concatenate([train_idx, val_idx])
                if dataset.samples[i].label == 1]
    cams, evidence = {}, {}
    cache = CamCache(options.cam_cache, detector, options.cam_top_k)
    for i in tqdm(artifact, desc="scorecam", unit="frame"):
        image = dataset.samples[i].image
        cams[i] = cache.get(image)
        if cams[i] is None:
            x = to_tensor([image], multiple)[0].to(device)
            cam = scorecam(detector, x, top_k=options.cam_top_k)
            cams[i] = cam[: image.shape[-2], : image.shape[-1]]
            cache.put(image, cams[i])
        evidence[i] = (image_evidence(image) if outliner is None
                       else outliner.outline(image, multiple, device))
    judged = [i for i in val_idx if dataset.samples[i].mask is not None and i in cams]
    rule = PseudoMaskRule()
    if judged:
        truths = [dataset.samples[i].mask > 0 for i in judged]
        scored = [
            (pooled_iou([pseudo_mask(cams[i], evidence[i], r) for i in judged], truths), r)
            for r in candidate_rules()
        ]
        iou, rule = max(scored, key=lambda pair: pair[0])
        notes.append(f"pseudo-mask rule chosen on {len(judged)} validation masks: "
                     f"{rule.describe()} (pseudo-mask IoU {iou:.3f})")
    elif outliner is not None:
        notes.append("pseudo-masks: whole regions the initial U-Net outlines (probability >= "
                     f"{outliner.threshold}, at least {outliner.min_area_px} px) where ScoreCAM "
                     f">= {rule.threshold:.2f}")
    else:
        notes.append(f"no validation masks: default pseudo-mask rule {rule.describe()}")
    logger.info(notes[-1])
    targets = {i: pseudo_mask(cams[i], evidence[i], rule) for i in artifact}
    for i in np.concatenate([train_idx, val_idx]):
        if dataset.samples[i].label == 0:
            targets[int(i)] = np.zeros(dataset.samples[i].image.shape[-2:], dtype=bool)
    return targets


def segmenter_targets(dataset: Dataset, detector: Detector, mode: str, train_idx: np.ndarray,
                      val_idx: np.ndarray, options: TrainOptions, device: torch.device,
                      notes: list[str], outliner: Outliner | None = None) -> dict[int, np.ndarray]:
    """What the U-Net learns from: ScoreCAM pseudo-masks (weak) or the given masks."""
    if mode == "weak":
        return weak_targets(dataset, detector, train_idx, val_idx, options, device, notes,
                            outliner)
    return {
        int(i): (s.mask > 0 if s.mask is not None else np.zeros(s.image.shape[-2:], dtype=bool))
        for i, s in enumerate(dataset.samples)
    }
