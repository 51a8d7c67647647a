"""`artifactd train`: detector + segmenter from a folder of frames and a labels CSV.

weak mode (ArtSeg's ScoreCAM-U-Net): image-level labels only. The detector learns clean vs
artifact; its ScoreCAM maps, binarised, become pseudo-masks; the U-Net learns from those
(clean frames contribute empty masks). The pseudo-mask rule is chosen on the validation split
by IoU against whatever pixel masks the user gave for a few frames; without any, the
documented default rule (whole regions of local image evidence that ScoreCAM >= 0.3 touches)
is used.

supervised mode: pixel masks for every artifact frame; the U-Net learns from them directly.

The model folder is written to a temporary name and renamed into place at the end, so a
failed or interrupted run never leaves a half-written model. Checkpoints (for --resume) live
beside it in <out>.checkpoints/ and are removed after success.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from scipy import ndimage as ndi
from torch.nn import functional as F
from tqdm import tqdm

from engines import __version__
from engines.data.dataset import Dataset, DatasetError, load_dataset, split
from engines.evaluation.scoring import pooled_iou
from engines.files import replace_atomically
from engines.pytorch.models import Architecture, Detector, UNet, pad_multiple
from engines.runtime.analyse import AnalysisOptions, measure
from engines.runtime.familiarity import Familiarity, appearance
from engines.runtime.modelcard import SEGMENT_MODES, frame_flagged, load_model
from engines.runtime.postprocess import PostprocessOptions
from engines.training.augment import augment
from engines.training.scorecam import (
    PseudoMaskRule,
    candidate_rules,
    image_evidence,
    pseudo_mask,
    scorecam,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrainOptions:
    mode: str = "auto"  # "weak" | "supervised" | "auto" (supervised when every artifact frame has a mask)
    detector_steps: int = 600
    segmenter_steps: int = 1200
    batch_size: int = 8
    crop: int = 256  # segmenter training crop, full-resolution px (multiple of the pad multiple)
    # Fraction of segmenter crops centred on an artifact. Artifacts are small, so some focus is
    # needed; too much teaches a prior far above a whole frame's and the U-Net over-segments.
    focus: float = 0.5
    learning_rate: float = 2e-3
    val_fraction: float = 0.2
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 100
    cam_top_k: int = 32
    # Folder of ScoreCAM maps kept between runs: the maps are the slow part of weak mode, and
    # a later stage with the same detector and frames needs the same ones.
    cam_cache: Path | None = None
    min_area_px: int = 40  # the smallest minimum area validation considers
    # Share of clean validation frames the chosen verdict may flag: a screen is ~90 % clean.
    max_false_flag_rate: float = 0.03
    # Frames the segmenter runs on in service: "all", "flagged", or "auto" (the one whose
    # verdict has the better image F1 on validation); validation chooses the detector
    # threshold for it (engines.runtime.modelcard.frame_flagged).
    segment: str = "auto"
    name: str = "artifactd"
    init: Path | None = None  # start both networks from this model folder (fine-tuning)
    detector_from: Path | None = None  # take this model's detector as is; train only the U-Net
    arch: Architecture = field(default_factory=Architecture)


DEFAULTS = TrainOptions()
# Fine-tuning (--init) starts from networks that already know artifacts, so it needs far fewer
# steps: on ~100 frames of 1024 x 1024 this fits in about 5 minutes on a 2-core CPU, where the
# detector (full frames, ~1 s a step) and ScoreCAM (~1.3 s per artifact frame) take most of it.
FINE_TUNE_STEPS = {"detector": 150, "segmenter": 600}
# Candidate pixel thresholds chosen among on validation. The high end matters: a U-Net trained
# on artifact-rich crops is over-confident on whole frames.
SEGMENT_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


@dataclass(slots=True)
class TrainedModels:
    detector: Detector
    segmenter: UNet
    detect_threshold: float
    segment_threshold: float
    mode: str
    segment: str  # frames the segmenter runs on: "all" | "flagged"
    validation: dict[str, float]
    notes: list[str]
    familiarity: dict = field(default_factory=dict)  # engines.runtime.familiarity statistics
    min_area_px: int = 40  # chosen on validation with the thresholds


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DatasetError("--device cuda: no CUDA device is available; expected --device cpu")
    return torch.device(name)


def resolve_mode(dataset: Dataset, mode: str) -> str:
    artifact_frames = [s for s in dataset.samples if s.label == 1]
    all_masked = all(s.mask is not None for s in artifact_frames)
    if mode == "auto":
        return "supervised" if all_masked else "weak"
    if mode == "supervised" and not all_masked:
        missing = next(s.source for s in artifact_frames if s.mask is None)
        raise DatasetError(
            f"supervised mode needs a mask for every artifact frame; none for {missing} "
            "(give --masks, or use --mode weak)"
        )
    return mode


# ---------------------------------------------------------------------------- batches


def to_tensor(images: list[np.ndarray], multiple: int) -> torch.Tensor:
    """(C, H, W) integer frames of one shape -> padded float32 batch (N, C, H', W')."""
    batch = np.stack(images).astype(np.float32)
    h, w = batch.shape[-2:]
    pad = ((0, 0), (0, 0), (0, (-h) % multiple), (0, (-w) % multiple))
    return torch.from_numpy(np.pad(batch, pad, mode="edge"))


def shape_groups(dataset: Dataset, indices: np.ndarray) -> dict[tuple[int, ...], np.ndarray]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for i in indices:
        groups.setdefault(dataset.samples[i].image.shape, []).append(int(i))
    return {k: np.array(v) for k, v in groups.items()}


def balanced_batch(labels: np.ndarray, indices: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Half clean, half artifact frames (as far as the group has both)."""
    picks = []
    for value in (0, 1):
        pool = indices[labels[indices] == value]
        if len(pool):
            picks.append(rng.choice(pool, size=size // 2 + size % 2 * value, replace=True))
    return np.concatenate(picks) if picks else rng.choice(indices, size=size)


def crop_batch(
    images: list[np.ndarray], targets: list[np.ndarray], crop: int, rng: np.random.Generator,
    focus: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops, a `focus` fraction of them centred on an artifact pixel."""
    xs, ys = [], []
    for image, target in zip(images, targets, strict=True):
        h, w = target.shape
        ph, pw = max(0, crop - h), max(0, crop - w)
        if ph or pw:
            image = np.pad(image, ((0, 0), (0, ph), (0, pw)), mode="edge")
            target = np.pad(target, ((0, ph), (0, pw)))
            h, w = target.shape
        fg = np.flatnonzero(target)
        if len(fg) and rng.random() < focus:
            cy, cx = divmod(int(rng.choice(fg)), w)
            top = int(np.clip(cy - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, h - crop))
            left = int(np.clip(cx - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1), 0, w - crop))
        else:
            top, left = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        xs.append(image[:, top : top + crop, left : left + crop])
        ys.append(target[top : top + crop, left : left + crop])
    x = torch.from_numpy(np.stack(xs).astype(np.float32))
    y = torch.from_numpy(np.stack(ys).astype(np.float32))[:, None]
    return x, y


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice (seed 003); Dice pooled over the batch so empty crops stay defined."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    dice = (2 * (p * target).sum() + 1.0) / (p.sum() + target.sum() + 1.0)
    return bce + (1 - dice)


# ---------------------------------------------------------------------------- checkpoints


class Checkpoints:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, stage: str) -> Path:
        return self.folder / f"{stage}.pt"

    def save(self, stage: str, step: int, model: nn.Module, optimiser: torch.optim.Optimizer,
             gen: torch.Generator, rng: np.random.Generator) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path(stage).with_suffix(".tmp")
        torch.save(
            {"step": step, "model": model.state_dict(), "optimiser": optimiser.state_dict(),
             "gen": gen.get_state(), "rng": rng.bit_generator.state}, tmp,
        )
        tmp.replace(self.path(stage))

    def restore(self, stage: str, model: nn.Module, optimiser: torch.optim.Optimizer,
                gen: torch.Generator, rng: np.random.Generator) -> int:
        if not self.path(stage).is_file():
            return 0
        state = torch.load(self.path(stage), weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        gen.set_state(state["gen"])
        rng.bit_generator.state = state["rng"]
        logger.info("resumed %s at step %d", stage, state["step"])
        return int(state["step"])


# ---------------------------------------------------------------------------- stages


def fit(
    stage: str,
    model: nn.Module,
    steps: int,
    make_batch,
    loss_fn,
    options: TrainOptions,
    device: torch.device,
    checkpoints: Checkpoints,
) -> None:
    """The training loop both models share: Adam, cosine decay, checkpoints, progress bar."""
    optimiser = torch.optim.Adam(model.parameters(), lr=options.learning_rate)
    gen = torch.Generator().manual_seed(options.seed)
    # crc32, not hash(): Python salts str hashes per process, and one seed must give one model.
    rng = np.random.default_rng([options.seed, zlib.crc32(stage.encode())])
    start = checkpoints.restore(stage, model, optimiser, gen, rng)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(steps, 1), last_epoch=-1)
    with warnings.catch_warnings():  # fast-forwarding the schedule on resume is intended
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(start):
            schedule.step()
    model.train()
    bar = tqdm(range(start, steps), desc=stage, unit="step", initial=start, total=steps)
    for step in bar:
        x, y = make_batch(rng)
        if y.ndim == 4:  # masks move with their frames
            x, y = augment(x, y, gen)
        else:
            x, _ = augment(x, None, gen)
        loss = loss_fn(model, x.to(device), y.to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % options.checkpoint_every == 0 or step + 1 == steps:
            checkpoints.save(stage, step + 1, model, optimiser, gen, rng)
    model.eval()


def initial_models(options: TrainOptions) -> tuple[Detector, UNet]:
    """Fresh networks, or those of an existing model folder (--init) to continue from."""
    if options.init is None:
        return fresh_models(options.arch, options.seed)
    from engines.pytorch.weights import load_torch_models

    bundle = load_model(options.init)
    if Architecture.from_dict(bundle.card.architecture) != options.arch:
        raise DatasetError(f"--init {options.init}: its architecture {bundle.card.architecture} "
                           f"differs from the one being trained {options.arch.to_dict()}")
    logger.info("starting from the networks of %s", options.init)
    return load_torch_models(bundle.folder, bundle.card)


def initial_outliner(options: TrainOptions, segmenter: UNet) -> Outliner | None:
    """The --init U-Net with its card's threshold and minimum area, to outline pseudo-masks
    (None when training from scratch)."""
    if options.init is None:
        return None
    card = load_model(options.init).card  # read before the U-Net trains: targets come first
    return Outliner(segmenter, card.segment_threshold, card.min_area_px)


def fresh_models(arch: Architecture, seed: int) -> tuple[Detector, UNet]:
    """Networks initialised from the seed alone. torch layers draw their initial weights from
    torch's global generator and take no other, so it is seeded for their construction only
    and restored after: nothing else run in the process changes them, and they change nothing."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Detector(arch), UNet(arch)


@contextmanager
def deterministic_kernels():
    """The same arithmetic on every run: CPU kernels are repeatable for a given thread count,
    but cuDNN's autotuner and some CUDA kernels are not. Where a CUDA operation has no
    repeatable kernel torch warns rather than stopping the training. The settings are global,
    so they are put back afterwards."""
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    # Read when CUDA's matrix library starts; without it its results vary between runs.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2:]


def train_detector(dataset: Dataset, train_idx: np.ndarray, options: TrainOptions,
                   device: torch.device, checkpoints: Checkpoints, model: Detector) -> Detector:
    model = model.to(device)
    multiple = pad_multiple(options.arch)
    labels = dataset.labels
    groups = shape_groups(dataset, train_idx)
    weights = np.array([len(v) for v in groups.values()], dtype=float)
    keys = list(groups)

    def make_batch(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        group = groups[keys[rng.choice(len(keys), p=weights / weights.sum())]]
        picks = balanced_batch(labels, group, options.batch_size, rng)
        x = to_tensor([dataset.samples[i].image for i in picks], multiple)
        return x, torch.from_numpy(labels[picks].astype(np.float32))

    def loss_fn(m: Detector, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(m.logits(x), y)

    fit("detector", model, options.detector_steps, make_batch, loss_fn, options, device, checkpoints)
    return model


def train_segmenter(dataset: Dataset, train_idx: np.ndarray, targets: dict[int, np.ndarray],
                    options: TrainOptions, device: torch.device, checkpoints: Checkpoints,
                    model: UNet) -> UNet:
    model = model.to(device)
    usable = np.array([i for i in train_idx if i in targets])
    labels = dataset.labels

    def make_batch(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        picks = balanced_batch(labels, usable, options.batch_size, rng)
        return crop_batch(
            [dataset.samples[i].image for i in picks], [targets[i] for i in picks],
            options.crop, rng, options.focus,
        )

    def loss_fn(m: UNet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return bce_dice_loss(m.logits(x), y)

    fit("segmenter", model, options.segmenter_steps, make_batch, loss_fn, options, device, checkpoints)
    return model


@torch.no_grad()
def predict(model: nn.Module, image: np.ndarray, multiple: int, device: torch.device) -> np.ndarray:
    """Full-frame forward pass of either model on one (C, H, W) frame."""
    x = to_tensor([image], multiple).to(device)
    out = model(x).float().cpu().numpy()
    if out.ndim == 1:
        return out
    return out[0, 0, : image.shape[-2], : image.shape[-1]]


# ---------------------------------------------------------------------------- choices on validation


def best_f1_threshold(scores: np.ndarray, truth: np.ndarray, found: np.ndarray | None = None,
                      max_false_flag_rate: float = 1.0) -> tuple[float, float]:
    """The detector threshold with the best image F1 of the verdict `frame_flagged` gives,
    among those flagging at most `max_false_flag_rate` of the clean frames (where none does:
    the one flagging fewest); `found` holds the segmenter's artifact count per frame (zeros:
    the detector alone)."""
    return verdict_quality(scores, truth, found, max_false_flag_rate)[:2]


def verdict_quality(scores: np.ndarray, truth: np.ndarray, found: np.ndarray | None,
                    max_false_flag_rate: float) -> tuple[float, float, float]:
    """(threshold, image F1, clean-field false-flag rate) of the best detector threshold.

    Where several thresholds are equally good (a small validation set), the middle one of the
    best run is taken: the widest margin on both sides, not the edge that just passes."""
    found = np.zeros(len(scores), dtype=np.int64) if found is None else found
    clean = max(1, int(np.sum(truth == 0)))
    candidates = []
    for t in np.arange(0.05, 0.96, 0.05):
        flagged = np.array([frame_flagged(s, n, t) for s, n in zip(scores, found, strict=True)])
        tp = np.sum(flagged & (truth == 1))
        f1 = 2 * tp / max(1, flagged.sum() + (truth == 1).sum())
        ffr = np.sum(flagged & (truth == 0)) / clean
        meets = ffr <= max_false_flag_rate + 1e-9
        candidates.append(((meets, f1 if meets else -ffr, f1), (float(round(t, 2)), float(f1), float(ffr))))
    best = max(key for key, _ in candidates)
    run = _first_run([key == best for key, _ in candidates])
    return candidates[run[len(run) // 2]][1]


def _first_run(hits: list[bool]) -> list[int]:
    """Indices of the first run of consecutive True values."""
    start = hits.index(True)
    end = start
    while end + 1 < len(hits) and hits[end + 1]:
        end += 1
    return list(range(start, end + 1))


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
        regions, count = ndi.label(found)
        if not count:
            return found
        areas = np.bincount(regions.ravel(), minlength=count + 1)
        keep = areas >= self.min_area_px
        keep[0] = False
        return keep[regions]


def weak_targets(dataset: Dataset, detector: Detector, train_idx: np.ndarray, val_idx: np.ndarray,
                 options: TrainOptions, device: torch.device, notes: list[str],
                 outliner: Outliner | None = None) -> dict[int, np.ndarray]:
    """ScoreCAM pseudo-masks for artifact frames, empty masks for clean ones. The regions the
    map chooses among are the image evidence, or the outlines of `outliner` when given."""
    multiple = pad_multiple(options.arch)
    if outliner is not None:
        outliner.segmenter.to(device).eval()
    artifact = [int(i) for i in np.concatenate([train_idx, val_idx]) if dataset.samples[i].label == 1]
    cams, evidence = {}, {}
    cache = CamCache(options.cam_cache, detector, options.cam_top_k)
    for i in tqdm(artifact, desc="scorecam", unit="frame"):
        image = dataset.samples[i].image
        cams[i] = cache.get(image)
        if cams[i] is None:
            x = to_tensor([image], multiple)[0].to(device)
            cams[i] = scorecam(detector, x, top_k=options.cam_top_k)[: image.shape[-2], : image.shape[-1]]
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


def validate(dataset: Dataset, models: tuple[Detector, UNet], val_idx: np.ndarray,
             options: TrainOptions, device: torch.device) -> Verdict:
    """Segment mode, thresholds and minimum artifact area chosen on the validation frames, for
    the model as the service runs it.

    The pixel threshold maximises pooled IoU over the frames with masks (every one segmented).
    Then, per segment mode and minimum area, the detector threshold with the best image F1 of
    the service's verdict among those flagging at most `max_false_flag_rate` of the clean
    frames: most real fields are clean, and a service that flags them is switched off.
    """
    detector, segmenter = models
    multiple = pad_multiple(options.arch)
    images = [dataset.samples[i].image for i in val_idx]
    scores = np.array([predict(detector, image, multiple, device)[0] for image in images])
    probs = [predict(segmenter, image, multiple, device) for image in images]
    results: dict[str, float] = {}
    masked = [k for k, i in enumerate(val_idx) if dataset.samples[i].mask is not None]
    segment_t = 0.5
    if masked:
        truths = [dataset.samples[val_idx[k]].mask > 0 for k in masked]
        by_t = {t: pooled_iou([probs[k] >= t for k in masked], truths) for t in SEGMENT_THRESHOLDS}
        segment_t = max(by_t, key=by_t.get)
        results["val_pixel_iou"] = round(by_t[segment_t], 4)
    # Artifact counts per minimum area, as the service would find them (every frame segmented).
    found = {}
    for area in min_area_candidates(options.min_area_px):
        service = AnalysisOptions(1.0, True, PostprocessOptions(threshold=segment_t,
                                                                min_area_px=area))
        found[area] = np.array([measure(s, p, image, service).n_artifacts
                                for s, p, image in zip(scores, probs, images, strict=True)])
    verdict = choose_verdict(scores, dataset.labels[val_idx], found, options.segment,
                             options.max_false_flag_rate)
    results["val_image_f1"] = round(verdict.f1, 4)
    results["val_false_flag_rate"] = round(verdict.false_flag_rate, 4)
    return replace(verdict, segment_threshold=segment_t, validation=results)


def min_area_candidates(least: int) -> tuple[int, ...]:
    """Minimum artifact areas validation chooses among: a U-Net that finds specks in clean
    fields of an unfamiliar plate is quieted by a larger one."""
    return (least, 2 * least, 4 * least, 8 * least)


@dataclass(frozen=True, slots=True)
class Verdict:
    """How the service turns the networks' outputs into a flag, as validation chose it."""

    segment: str
    detect_threshold: float
    min_area_px: int
    f1: float
    false_flag_rate: float
    segment_threshold: float = 0.5
    validation: dict[str, float] = field(default_factory=dict)


def choose_verdict(scores: np.ndarray, truth: np.ndarray, found: np.ndarray | dict[int, np.ndarray],
                   segment: str, max_false_flag_rate: float = 1.0) -> Verdict:
    """For "auto", "all" only where the U-Net's findings on every frame make the verdict
    better than the detector alone (a U-Net trained on pseudo-masks may find specks in clean
    frames; one trained on masks finds faint dirt). `found` is the segmenter's artifact count
    per frame, or such counts per candidate minimum area. Choices meeting the false-flag cap
    come first, then the better F1; ties go to the first: "flagged" (less work), smaller area."""
    by_area = found if isinstance(found, dict) else {40: found}
    smallest = min(by_area)
    modes = ("flagged", "all") if segment == "auto" else (segment,)
    chosen, best_key = None, None
    for mode in modes:
        for area, counts in sorted(by_area.items()):
            if mode == "flagged" and area != smallest:
                continue  # only the U-Net's findings on every frame change the verdict
            counted = counts if mode == "all" else np.zeros_like(counts)
            t, f1, ffr = verdict_quality(scores, truth, counted, max_false_flag_rate)
            meets = ffr <= max_false_flag_rate + 1e-9
            key = (meets, f1 if meets else -ffr, f1)
            if best_key is None or key > best_key:
                chosen, best_key = Verdict(mode, t, area, f1, ffr), key
    return chosen


def train_models(dataset: Dataset, options: TrainOptions, checkpoints: Checkpoints,
                 validation: Dataset | None = None) -> TrainedModels:
    """Both networks and their verdict. Every random choice comes from generators seeded by
    `options.seed` and handed to the code that draws, so one command gives one model, bit for
    bit on CPU, in any process."""
    with deterministic_kernels():
        return _train_models(dataset, options, checkpoints, validation)


def _train_models(dataset: Dataset, options: TrainOptions, checkpoints: Checkpoints,
                  validation: Dataset | None) -> TrainedModels:
    device = pick_device(options.device)
    mode = resolve_mode(dataset, options.mode)
    multiple = pad_multiple(options.arch)
    if options.crop % multiple:
        raise DatasetError(f"--crop {options.crop}: expected a multiple of {multiple}")
    for flag, value, least in (("--detector-steps", options.detector_steps, 0),
                               ("--segmenter-steps", options.segmenter_steps, 0),
                               ("--batch-size", options.batch_size, 1)):
        if value < least:
            raise DatasetError(f"{flag} {value}: expected at least {least}")
    train_idx, val_idx = split(dataset.labels, options.val_fraction, options.seed)
    logger.info("%s mode on %s: %d training, %d validation frames", mode, device, len(train_idx), len(val_idx))
    notes: list[str] = []
    if options.init is not None:
        notes.append(f"continued from the networks of {Path(options.init).name}")
    detector, segmenter = initial_models(options)
    if options.detector_from is not None:
        # The detector learns from image labels alone in every mode, so sharing one is fair.
        detector = initial_models(replace(options, init=options.detector_from))[0].to(device)
        notes.append(f"detector taken as is from {Path(options.detector_from).name}")
    else:
        detector = train_detector(dataset, train_idx, options, device, checkpoints, detector)
    if options.segmenter_steps == 0:  # a detector-only stage: the U-Net stays as it is
        segmenter = segmenter.to(device).eval()
        notes.append("U-Net taken as is (no segmenter steps)")
    else:
        targets = segmenter_targets(dataset, detector, mode, train_idx, val_idx, options, device,
                                    notes, initial_outliner(options, segmenter))
        segmenter = train_segmenter(dataset, train_idx, targets, options, device, checkpoints, segmenter)
    judge, judged_idx = dataset, val_idx
    if validation is not None:  # thresholds chosen on another domain's frames
        judge, judged_idx = validation, np.arange(len(validation.samples))
        notes.append(f"thresholds chosen on {len(judged_idx)} separate validation frames")
    verdict = validate(judge, (detector, segmenter), judged_idx, options, device)
    notes.append(f"segment {verdict.segment}, minimum area {verdict.min_area_px} px, detector "
                 f"threshold {verdict.detect_threshold}: the best validation image F1 "
                 f"({verdict.f1:.3f}) flagging at most {options.max_false_flag_rate:.0%} of "
                 f"clean frames (flagged {verdict.false_flag_rate:.1%})")
    familiarity = training_appearance(dataset, train_idx)
    return TrainedModels(detector, segmenter, verdict.detect_threshold, verdict.segment_threshold,
                         mode, verdict.segment, verdict.validation, notes, familiarity,
                         verdict.min_area_px)


def training_appearance(dataset: Dataset, train_idx: np.ndarray) -> dict:
    """What the training frames look like, so the service can tell frames unlike them."""
    vectors = [appearance(dataset.samples[i].image) for i in tqdm(train_idx, desc="appearance",
                                                                  unit="frame")]
    return Familiarity.fit(np.array(vectors)).to_dict()


# ---------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=Path, required=True, help="folder of training frames (TIFF)")
    parser.add_argument("--labels", type=Path, required=True, help="CSV with columns source,label (clean|artifact)")
    parser.add_argument("--masks", type=Path, help="folder of pixel masks under the same relative paths")
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--mode", choices=("auto", "weak", "supervised"), default="auto",
                        help="weak: image labels only (the U-Net learns from ScoreCAM "
                             "pseudo-masks); supervised: a mask for every artifact frame; auto: "
                             "supervised when every artifact frame has a mask")
    parser.add_argument("--detector-steps", type=int,
                        help=f"detector training steps (default {DEFAULTS.detector_steps}, or "
                             f"{FINE_TUNE_STEPS['detector']} when fine-tuning with --init)")
    parser.add_argument("--segmenter-steps", type=int,
                        help=f"U-Net training steps (default {DEFAULTS.segmenter_steps}, or "
                             f"{FINE_TUNE_STEPS['segmenter']} when fine-tuning with --init); 0 keeps "
                             "the U-Net of --init as it is")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size,
                        help="frames (detector) or crops (U-Net) per training step")
    parser.add_argument("--crop", type=int, default=DEFAULTS.crop,
                        help="side of the square U-Net training crops in px (a multiple of "
                             f"{pad_multiple(Architecture())})")
    parser.add_argument("--focus", type=float, default=DEFAULTS.focus,
                        help="fraction of segmenter crops centred on an artifact")
    parser.add_argument("--segment", choices=("auto", *SEGMENT_MODES), default=DEFAULTS.segment,
                        help="frames the segmenter runs on in service: all (a frame is also "
                             "flagged when the U-Net finds an artifact), only those the detector "
                             "flags, or auto (the better image F1 on validation); "
                             "validation chooses the thresholds for it")
    parser.add_argument("--learning-rate", type=float, default=DEFAULTS.learning_rate,
                        help="Adam's starting learning rate (it decays to 0 over the steps)")
    parser.add_argument("--val-fraction", type=float, default=DEFAULTS.val_fraction,
                        help="share of the frames held back to choose the thresholds on")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed,
                        help="one seed, one model: the same command gives the same weights "
                             "on CPU")
    parser.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda "
                                                          "or cuda:N")
    parser.add_argument("--channels", type=int, default=1, help="input channels per frame")
    parser.add_argument("--name", default=DEFAULTS.name, help="model name in its card")
    parser.add_argument("--resume", action="store_true", help="continue from <out>.checkpoints/")
    parser.add_argument("--init",
                        help="start from this model folder's networks: 'default' is the shipped "
                             "model (fine-tuning it on ~100 labelled frames takes minutes)")
    parser.add_argument("--detector-from",
                        help="use this model folder's detector as is and train only the segmenter")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    parser.add_argument("--val-frames", type=Path,
                        help="choose thresholds on these frames (e.g. another instrument or cell "
                             "line) instead of a split of the training frames")
    parser.add_argument("--val-labels", type=Path, help="labels CSV of --val-frames")
    parser.add_argument("--val-masks", type=Path, help="pixel masks of --val-frames")
    parser.add_argument("--max-false-flag-rate", type=float, default=DEFAULTS.max_false_flag_rate,
                        help="share of clean validation frames the chosen verdict may flag")
    parser.add_argument("--mixed-bit-depths", action="store_true",
                        help="accept frames of different pixel types (uint8 and uint16) together")
    parser.add_argument("--cam-cache", type=Path,
                        help="weak mode: folder keeping ScoreCAM maps for later runs with the "
                             "same detector and frames (the slow part of weak training)")


def main(args: argparse.Namespace) -> int:
    from engines.training.export import write_model_folder  # imports onnx only when training runs

    out: Path = args.out
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        logger.error("%s already holds a model; pass --overwrite to replace it", out)
        return 2
    steps = FINE_TUNE_STEPS if args.init is not None else {
        "detector": DEFAULTS.detector_steps, "segmenter": DEFAULTS.segmenter_steps}
    options = TrainOptions(
        mode=args.mode,
        detector_steps=steps["detector"] if args.detector_steps is None else args.detector_steps,
        segmenter_steps=steps["segmenter"] if args.segmenter_steps is None else args.segmenter_steps,
        batch_size=args.batch_size, crop=args.crop, focus=args.focus,
        learning_rate=args.learning_rate, segment=args.segment,
        val_fraction=args.val_fraction, seed=args.seed, device=args.device, name=args.name,
        init=args.init, detector_from=args.detector_from, cam_cache=args.cam_cache,
        max_false_flag_rate=args.max_false_flag_rate,
        arch=replace(Architecture(), in_channels=args.channels),
    )
    checkpoints = Checkpoints(out.with_name(out.name + ".checkpoints"))
    if not args.resume and checkpoints.folder.exists():
        shutil.rmtree(checkpoints.folder)
    try:
        for flag, folder in (("--init", args.init), ("--detector-from", args.detector_from)):
            check_model_folder(flag, folder)
        dataset = load_dataset(args.frames, args.labels, args.masks, in_channels=args.channels)
        check_trainable(dataset, args.labels, mixed_bit_depths=args.mixed_bit_depths)
        validation = validation_set(args)
        trained = train_models(dataset, options, checkpoints, validation)
    except DatasetError as exc:
        logger.error("%s", exc)
        return 2
    write_model_folder(out, trained, options, dataset.fingerprint, version=__version__)
    shutil.rmtree(checkpoints.folder, ignore_errors=True)
    logger.info("model written to %s (%s mode, validation %s)", out, trained.mode, trained.validation)
    return 0


def validation_set(args: argparse.Namespace) -> Dataset | None:
    if (args.val_frames is None) != (args.val_labels is None):
        raise DatasetError("--val-frames and --val-labels go together; expected both or neither")
    if not 0 <= args.max_false_flag_rate <= 1:
        raise DatasetError(f"--max-false-flag-rate {args.max_false_flag_rate}: expected 0 to 1")
    if args.val_frames is None:
        return None
    validation = load_dataset(args.val_frames, args.val_labels, args.val_masks,
                              in_channels=args.channels)
    return validation


def check_model_folder(flag: str, folder: str | Path | None) -> None:
    """A mistyped --init or --detector-from is named before any data is read."""
    from engines.runtime.modelcard import ModelError, load_model

    if folder is None:
        return
    try:
        load_model(folder)
    except ModelError as exc:
        raise DatasetError(f"{flag} {folder}: not a model ({exc}); expected 'default' (the "
                           "shipped model) or a folder written by artifactd train") from None


def check_trainable(dataset: Dataset, labels_csv: Path, *, mixed_bit_depths: bool) -> None:
    """Refuse, by name, data that cannot give a validated model or is most likely a mix-up."""
    counts = np.bincount(dataset.labels, minlength=2)
    if counts.min() < 2:
        raise DatasetError(
            f"{labels_csv}: {counts[0]} clean and {counts[1]} artifact frames; expected at least "
            "2 of each, so that one of each can be held back for validation")
    dtypes: dict[str, list[str]] = {}
    for sample in dataset.samples:
        dtypes.setdefault(str(sample.image.dtype), []).append(sample.source)
    if len(dtypes) > 1 and not mixed_bit_depths:
        rare = min(dtypes, key=lambda d: len(dtypes[d]))
        common = max(dtypes, key=lambda d: len(dtypes[d]))
        raise DatasetError(
            f"{dataset_path(labels_csv, dtypes[rare][0])} is {rare} but {len(dtypes[common])} "
            f"other frames are {common}; expected one bit depth (pass --mixed-bit-depths if "
            "the mix is intended)")


def dataset_path(labels_csv: Path, source: str) -> str:
    return f"{source} (listed in {labels_csv})"
