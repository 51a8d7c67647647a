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

This module runs the stages in order and holds the command line; the stages live beside it:
options (what a run is asked to do), batches (frames into tensors), fitting (the training loop),
targets (masks or pseudo-masks for the U-Net) and validation (the verdict the service will use).
"""

from __future__ import annotations

import argparse
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engines import __version__
from engines.data.dataset import Dataset, DatasetError, load_dataset, split
from engines.pytorch.models import Architecture, pad_multiple
from engines.runtime.familiarity import Familiarity, appearance
from engines.runtime.modelcard import SEGMENT_MODES, load_model
from engines.training.fitting import (
    Checkpoints,
    Deadline,
    deterministic_kernels,
    initial_models,
    train_detector,
    train_segmenter,
)
from engines.training.options import (
    DEFAULTS,
    FINE_TUNE_MINUTES,
    FINE_TUNE_STEPS,
    FIXED_LAYERS_FINE_TUNE_DETECTOR_STEPS,
    LABELS_ONLY_FINE_TUNE_SEGMENTER_STEPS,
    Starting,
    TrainedModels,
    TrainOptions,
    pick_device,
    resolve_mode,
)
from engines.training.targets import initial_outliner, segmenter_targets
from engines.training.validation import Verdict, validate, within_cap

logger = logging.getLogger(__name__)


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
    layers = 1 + len(options.arch.detector_widths)  # the stem and the stages
    if not 0 <= options.fixed_layers < layers:
        raise DatasetError(f"--fixed-layers {options.fixed_layers}: expected 0 to {layers - 1} "
                           f"(the detector has {layers} layers, and the last must train)")
    if options.minutes is not None and options.minutes <= 0:
        raise DatasetError(f"--minutes {options.minutes:g}: expected more than 0")
    deadline = Deadline.after(options.minutes)
    train_idx, val_idx = split(dataset.labels, options.val_fraction, options.seed)
    logger.info("%s mode on %s: %d training, %d validation frames", mode, device,
                len(train_idx), len(val_idx))
    notes: list[str] = []
    if options.init is not None:
        notes.append(f"continued from the networks of {Path(options.init).name}")
    detector, segmenter = initial_models(options)
    starting = Starting.of(options)  # the --init card: pseudo-mask outlines and validation
    if options.detector_from is not None:
        # The detector learns from image labels alone in every mode, so sharing one is fair.
        detector = initial_models(replace(options, init=options.detector_from))[0].to(device)
        notes.append(f"detector taken as is from {Path(options.detector_from).name}")
    else:
        detector = train_detector(dataset, train_idx, options, device, checkpoints, detector,
                                  deadline.share(options.detector_steps,
                                                 options.segmenter_steps))
    if options.segmenter_steps == 0:  # a detector-only stage: the U-Net stays as it is
        segmenter = segmenter.to(device).eval()
        notes.append("U-Net taken as is (no segmenter steps)")
    else:
        targets = segmenter_targets(dataset, detector, mode, train_idx, val_idx, options, device,
                                    notes, initial_outliner(starting, segmenter))
        segmenter = train_segmenter(dataset, train_idx, targets, options, device, checkpoints,
                                    segmenter, deadline.share(options.segmenter_steps, 0))
    judge, judged_idx = dataset, val_idx
    if validation is not None:  # thresholds chosen on another domain's frames
        judge, judged_idx = validation, np.arange(len(validation.samples))
        notes.append(f"thresholds chosen on {len(judged_idx)} separate validation frames")
    verdict = validate(judge, (detector, segmenter), judged_idx, options, device, starting)
    notes.extend(verdict.kept)
    notes.append(verdict_note(verdict, options.max_false_flag_rate))
    familiarity = training_appearance(dataset, train_idx)
    return TrainedModels(detector, segmenter, verdict.detect_threshold, verdict.segment_threshold,
                         mode, verdict.segment, verdict.validation, notes, familiarity,
                         verdict.min_area_px)


def verdict_note(verdict: Verdict, cap: float) -> str:
    """What validation chose, for the card; says so where no choice met the false-flag cap."""
    chosen = (f"segment {verdict.segment}, minimum area {verdict.min_area_px} px, detector "
              f"threshold {verdict.detect_threshold}")
    if within_cap(verdict.false_flag_rate, cap):
        return (f"{chosen}: the best validation image F1 ({verdict.f1:.3f}) flagging at most "
                f"{cap:.0%} of clean frames (flagged {verdict.false_flag_rate:.1%})")
    return (f"{chosen}: no choice flagged at most {cap:.0%} of the clean validation frames; "
            f"this one flags fewest ({verdict.false_flag_rate:.1%}, image F1 {verdict.f1:.3f})")


def training_appearance(dataset: Dataset, train_idx: np.ndarray) -> dict:
    """What the training frames look like, so the service can tell frames unlike them."""
    vectors = [appearance(dataset.samples[i].image) for i in tqdm(train_idx, desc="appearance",
                                                                  unit="frame")]
    return Familiarity.fit(np.array(vectors)).to_dict()


# ---------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=Path, required=True,
                        help="folder of training frames (TIFF)")
    parser.add_argument("--labels", type=Path, required=True,
                        help="CSV with columns source,label (clean|artifact)")
    parser.add_argument("--masks", type=Path,
                        help="folder of pixel masks under the same relative paths")
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--mode", choices=("auto", "weak", "supervised"), default="auto",
                        help="weak: image labels only (the U-Net learns from ScoreCAM "
                             "pseudo-masks); supervised: a mask for every artifact frame; auto: "
                             "supervised when every artifact frame has a mask")
    parser.add_argument("--detector-steps", type=int,
                        help=f"detector training steps (default {DEFAULTS.detector_steps}, or "
                             f"{FINE_TUNE_STEPS['detector']} when fine-tuning with --init, "
                             f"{FIXED_LAYERS_FINE_TUNE_DETECTOR_STEPS} with --fixed-layers)")
    parser.add_argument("--segmenter-steps", type=int,
                        help=f"U-Net training steps (default {DEFAULTS.segmenter_steps}, or "
                             f"{FINE_TUNE_STEPS['segmenter']} when fine-tuning with --init); "
                             "0 keeps the U-Net of --init as it is")
    parser.add_argument("--minutes", type=float,
                        help="at most this many minutes of training steps: fewer steps where "
                             "the machine is slower, the learning rate still decaying to zero "
                             f"(default: {FINE_TUNE_MINUTES:g} when fine-tuning with --init and "
                             "the default steps, else no limit)")
    parser.add_argument("--fixed-layers", type=int, default=DEFAULTS.fixed_layers,
                        help="a quicker fine-tune: keep the detector's first N layers (its "
                             "stem, then its stages) as they are, their output computed once "
                             "per frame; each step is several times faster and --init then "
                             f"runs {FIXED_LAYERS_FINE_TUNE_DETECTOR_STEPS} detector steps "
                             "(default 0: every layer trains)")
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
    if args.init is not None and args.fixed_layers:
        steps = {**steps, "detector": FIXED_LAYERS_FINE_TUNE_DETECTOR_STEPS}
    options = TrainOptions(
        mode=args.mode,
        detector_steps=steps["detector"] if args.detector_steps is None else args.detector_steps,
        segmenter_steps=(steps["segmenter"] if args.segmenter_steps is None
                         else args.segmenter_steps),
        batch_size=args.batch_size, crop=args.crop, focus=args.focus,
        learning_rate=args.learning_rate, segment=args.segment,
        val_fraction=args.val_fraction, seed=args.seed, device=args.device, name=args.name,
        init=args.init, detector_from=args.detector_from, cam_cache=args.cam_cache,
        max_false_flag_rate=args.max_false_flag_rate,
        arch=replace(Architecture(), in_channels=args.channels),
        minutes=step_minutes(args),
        fixed_layers=args.fixed_layers,
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
        options = labels_only_fine_tune(options, dataset, args)
        trained = train_models(dataset, options, checkpoints, validation)
    except DatasetError as exc:
        logger.error("%s", exc)
        return 2
    write_model_folder(out, trained, options, dataset.fingerprint, version=__version__)
    shutil.rmtree(checkpoints.folder, ignore_errors=True)
    logger.info("model written to %s (%s mode, validation %s)", out, trained.mode,
                trained.validation)
    return 0


def step_minutes(args: argparse.Namespace) -> float | None:
    """--minutes, or the fine-tune's own limit when it runs with its default steps."""
    if args.minutes is not None:
        return args.minutes
    default_steps = args.detector_steps is None and args.segmenter_steps is None
    return FINE_TUNE_MINUTES if args.init is not None and default_steps else None


def labels_only_fine_tune(options: TrainOptions, dataset: Dataset,
                          args: argparse.Namespace) -> TrainOptions:
    """A fine-tune from image labels alone keeps the U-Net unless --segmenter-steps asks."""
    if (args.init is None or args.segmenter_steps is not None
            or resolve_mode(dataset, options.mode) != "weak"):
        return options
    logger.info("labels only: the U-Net of --init is kept as it is (--segmenter-steps N trains "
                "it on ScoreCAM pseudo-masks)")
    return replace(options, segmenter_steps=LABELS_ONLY_FINE_TUNE_SEGMENTER_STEPS)


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
    from engines.runtime.modelcard import ModelError

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
