"""The training loop both networks share (Adam, cosine decay, checkpoints for --resume, a time
budget for --minutes), the networks it starts from (fresh from the seed, or those of --init),
and the deterministic kernels that make one seed give one model."""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from engines.data.dataset import Dataset, DatasetError
from engines.files import replace_atomically
from engines.pytorch.models import Architecture, Detector, UNet, pad_multiple
from engines.runtime.modelcard import load_model
from engines.training.augment import augment
from engines.training.batches import (
    balanced_batch,
    crop_batch,
    shape_groups,
    to_tensor,
)
from engines.training.fixed_layers import FixedFeatures
from engines.training.options import TrainOptions

logger = logging.getLogger(__name__)


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice (seed 003); Dice pooled over the batch so empty crops stay defined."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits)
    dice = (2 * (p * target).sum() + 1.0) / (p.sum() + target.sum() + 1.0)
    return bce + (1 - dice)


class Checkpoints:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, stage: str) -> Path:
        return self.folder / f"{stage}.pt"

    def save(self, stage: str, step: int, model: nn.Module, optimiser: torch.optim.Optimizer,
             gen: torch.Generator, rng: np.random.Generator, cut_to: int | None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        state = {"step": step, "cut_to": cut_to, "model": model.state_dict(),
                 "optimiser": optimiser.state_dict(), "gen": gen.get_state(),
                 "rng": rng.bit_generator.state}
        # A checkpoint cut short by a crash must not be what --resume finds.
        replace_atomically(self.path(stage), lambda tmp: torch.save(state, tmp))

    def restore(self, stage: str, model: nn.Module, optimiser: torch.optim.Optimizer,
                gen: torch.Generator, rng: np.random.Generator, steps: int) -> tuple[int, int]:
        """(steps done, steps in all): a run whose budget cut its steps (--minutes) resumes
        with that cut; otherwise the steps asked for now."""
        if not self.path(stage).is_file():
            return 0, steps
        state = torch.load(self.path(stage), weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        gen.set_state(state["gen"])
        rng.bit_generator.state = state["rng"]
        logger.info("resumed %s at step %d", stage, state["step"])
        return int(state["step"]), int(state.get("cut_to") or steps)


def fit(
    stage: str,
    model: nn.Module,
    steps: int,
    make_batch,
    loss_fn,
    options: TrainOptions,
    device: torch.device,
    checkpoints: Checkpoints,
    budget_s: float | None = None,
    augmented: bool = True,
) -> None:
    """The training loop both models share: Adam, cosine decay, checkpoints, progress bar.
    With `budget_s`, the steps are cut to what fits in that many seconds (StepBudget); with
    `augmented` False the batches are used as made (stored features, not frames)."""
    optimiser = torch.optim.Adam(model.parameters(), lr=options.learning_rate)
    gen = torch.Generator().manual_seed(options.seed)
    # crc32, not hash(): Python salts str hashes per process, and one seed must give one model.
    rng = np.random.default_rng([options.seed, zlib.crc32(stage.encode())])
    start, steps = checkpoints.restore(stage, model, optimiser, gen, rng, steps)
    budget = StepBudget(stage, steps, budget_s)
    # Cosine decay to zero over however many steps the budget leaves (read at every step).
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda t: 0.5 * (1 + math.cos(math.pi * min(t / max(budget.steps, 1), 1.0))))
    with warnings.catch_warnings():  # fast-forwarding the schedule on resume is intended
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(start):
            schedule.step()
    model.train()
    bar = tqdm(desc=stage, unit="step", initial=start, total=budget.steps)
    step = start
    while step < budget.steps:
        x, y = make_batch(rng)
        if augmented and y.ndim == 4:  # masks move with their frames
            x, y = augment(x, y, gen)
        elif augmented:
            x, _ = augment(x, None, gen)
        loss = loss_fn(model, x.to(device), y.to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        step += 1
        if budget.check(step - start):
            bar.total = budget.steps
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % options.checkpoint_every == 0 or step == budget.steps:
            checkpoints.save(stage, step, model, optimiser, gen, rng, budget.cut_to)
    bar.close()
    model.eval()


@dataclass(frozen=True, slots=True)
class Deadline:
    """When the training steps of a run must end (--minutes); None: no limit."""

    at: float | None

    @classmethod
    def after(cls, minutes: float | None) -> Deadline:
        return cls(None if minutes is None else time.monotonic() + 60 * minutes)

    def share(self, steps_here: int, steps_after: int) -> float | None:
        """Seconds for a stage: the time left, in proportion to the steps still planned."""
        if self.at is None:
            return None
        left = max(self.at - time.monotonic(), 0.0)
        return left * steps_here / max(steps_here + steps_after, 1)


class StepBudget:
    """A stage's step count under a wall-clock budget: after a few steps, and again every few,
    the steps left are cut to what the time left allows at the measured pace (never raised),
    so a fine-tune keeps to its minutes on a slower machine instead of running over."""

    FIRST_LOOK = 6  # steps timed before the first estimate (the first is slow: warm-up)
    EVERY = 20

    def __init__(self, stage: str, steps: int, budget_s: float | None) -> None:
        self.stage, self.steps, self.planned, self.budget_s = stage, steps, steps, budget_s
        self.started = time.monotonic()

    @property
    def cut_to(self) -> int | None:
        return self.steps if self.steps != self.planned else None

    def check(self, done: int) -> bool:
        """True when the step count changed; `done` steps were run in this process."""
        if self.budget_s is None or done < self.FIRST_LOOK or (
                done - self.FIRST_LOOK) % self.EVERY:
            return False
        elapsed = time.monotonic() - self.started
        fits = done + int((self.budget_s - elapsed) / (elapsed / done))
        if fits >= self.steps:
            return False
        self.steps = max(fits, done)  # time already up: stop here
        logger.info("%s: %d steps fit in %.1f min at %.2f s a step; training %d of the %d "
                    "planned (--minutes)", self.stage, self.steps, self.budget_s / 60,
                    elapsed / done, self.steps, self.planned)
        return True


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
                   device: torch.device, checkpoints: Checkpoints, model: Detector,
                   budget_s: float | None = None) -> Detector:
    model = model.to(device)
    multiple = pad_multiple(options.arch)
    labels = dataset.labels
    groups = shape_groups(dataset, train_idx)
    weights = np.array([len(v) for v in groups.values()], dtype=float)
    keys = list(groups)

    fixed = options.fixed_layers
    stored = (FixedFeatures(model, dataset, train_idx, fixed, multiple, device)
              if fixed and options.detector_steps else None)

    def make_batch(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        group = groups[keys[rng.choice(len(keys), p=weights / weights.sum())]]
        picks = balanced_batch(labels, group, options.batch_size, rng)
        y = torch.from_numpy(labels[picks].astype(np.float32))
        if stored is not None:
            return stored.batch(picks, rng), y
        return to_tensor([dataset.samples[i].image for i in picks], multiple), y

    def loss_fn(m: Detector, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = m.logits(x) if stored is None else m.logits_from(x, fixed)
        return F.binary_cross_entropy_with_logits(logits, y)

    fit("detector", model, options.detector_steps, make_batch, loss_fn, options, device,
        checkpoints, budget_s, augmented=stored is None)
    return model


def train_segmenter(dataset: Dataset, train_idx: np.ndarray, targets: dict[int, np.ndarray],
                    options: TrainOptions, device: torch.device, checkpoints: Checkpoints,
                    model: UNet,
                    budget_s: float | None = None) -> UNet:
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

    fit("segmenter", model, options.segmenter_steps, make_batch, loss_fn, options, device,
        checkpoints, budget_s)
    return model
