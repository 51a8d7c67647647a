"""Does the detector's ranking across renderers come from its capacity, its training or its
variance? Later layers trained several ways on the same frames, judged on nine sets.

    python -m bench.detector_variants --variant wide [--work runs/variants] [--steps 3000]
    python -m bench.detector_variants --report [--work runs/variants]

Every variant keeps the shipped detector's stem and first stage (their output stored once per
training frame in its 8 orientations, as `artifactd train --fixed-layers 2` does) and trains
what comes after on 700 new halo, wave and monolayer frames (the shipped model's training
renderers, new seeds), with labels only, batches of 8, Adam with the learning rate decaying to
zero:

- shipped: nothing trained (the baseline);
- shipped-8: nothing trained; each frame's logit averaged over its 8 orientations;
- continue: the shipped later stages and head, trained on;
- scratch: the same layers as shipped, trained from a random start;
- wide: three times the channels after the first stage (48, 96, 192) and two blocks per stage,
  from a random start.

Each variant's logits go to <work>/scores-<variant>-<set>.npy and its ROC AUC (clean against
artifact frames) is printed; --report prints the markdown table of bench/RESULTS.md, with the
shipped and wide detectors' logits added ("shipped + wide", an ensemble of the two).
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bench.adapt import rendered
from engines.data.dataset import Dataset, load_dataset
from engines.evaluation.scoring import ranking_auc
from engines.pytorch.models import BasicBlock, Detector
from engines.pytorch.weights import load_torch_models
from engines.runtime.modelcard import load_model
from engines.training.batches import balanced_batch, to_tensor
from engines.training.fixed_layers import ORIENTATIONS, oriented

FIXED = 2  # the stem and the first stage
# (folder, renderer, seed, frames, artifact probability), 1080 x 1080 uint16
TRAIN = (("t-halo", "halo", 131, 200, 0.5), ("t-wave", "wave", 231, 200, 0.5),
         ("t-monolayer", "monolayer", 331, 200, 0.5), ("t-monolayer2", "monolayer", 332, 100, 0.5))
JUDGE = (("v-relief", "relief", 501, 200, 0.5), ("heldout-halo", "halo", 9001, 200, 0.5),
         ("heldout-wave", "wave", 9201, 200, 0.5),
         ("heldout-monolayer-50", "monolayer", 9301, 200, 0.5),
         ("heldout-relief-50", "relief", 9501, 200, 0.5),
         ("heldout-relief-10", "relief", 9502, 200, 0.1),
         ("heldout-particle-50", "particle", 9801, 200, 0.5),
         ("heldout-particle-10", "particle", 9802, 200, 0.1),
         ("heldout-caustic", "caustic", 9401, 200, 0.5))
VARIANTS = ("shipped", "shipped-8", "continue", "scratch", "wide")


class Later(nn.Module):
    """The layers after the fixed ones: stages of `depth` blocks, then mean+max pooling and a
    linear head, as the detector has them."""

    def __init__(self, cin: int, widths: tuple[int, ...], depth: int) -> None:
        super().__init__()
        blocks = []
        for width in widths:
            blocks += [BasicBlock(cin, width, 2), *(BasicBlock(width, width, 1)
                                                     for _ in range(depth - 1))]
            cin = width
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(2 * cin, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = self.body(z)
        return self.head(torch.cat([z.mean(dim=(2, 3)), z.amax(dim=(2, 3))], 1)).squeeze(1)


class ShippedLater(nn.Module):
    """The shipped detector's own layers after the fixed ones."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector
        self.trained = nn.ModuleList([*detector._layers()[FIXED:], detector.head])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.detector.logits_from(z, FIXED)


def later_layers(variant: str) -> nn.Module:
    if variant in ("shipped", "shipped-8", "continue"):
        return ShippedLater(shipped_detector())
    if variant == "scratch":
        return Later(16, (32, 64, 128), 1)
    return Later(16, (48, 96, 192), 2)


def shipped_detector() -> Detector:
    bundle = load_model("default")
    return load_torch_models(bundle.folder, bundle.card)[0].eval()


def training_frames(work: Path) -> Dataset:
    samples = []
    for folder, *spec in TRAIN:
        part = rendered(work / folder, spec[0], spec[1], spec[2], None, spec[3])
        samples += load_dataset(part / "frames", part / "labels.csv", None).samples
    return Dataset(tuple(samples), "")


def stored_features(work: Path, fixed: Detector) -> tuple[dict, np.ndarray]:
    """The fixed layers' output per training frame and orientation (float16, kept on disk)."""
    store = work / "fixed-features.pt"
    dataset = training_frames(work)
    if store.is_file():
        return torch.load(store), dataset.labels
    features = {}
    with torch.no_grad():
        for i, sample in enumerate(dataset.samples):
            x = to_tensor([sample.image], 64)
            features[i] = [fixed.features_before(oriented(x, k), FIXED).half()
                           for k in range(ORIENTATIONS)]
    torch.save(features, store)
    return features, dataset.labels


def train(later: nn.Module, features: dict, labels: np.ndarray, steps: int, lr: float) -> None:
    params = list(later.trained.parameters() if isinstance(later, ShippedLater)
                  else later.parameters())
    optimiser = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda t: 0.5 * (1 + math.cos(math.pi * min(t / steps, 1))))
    rng = np.random.default_rng(1)
    everything = np.arange(len(labels))
    later.train()
    started = time.perf_counter()
    for step in range(1, steps + 1):
        picks = balanced_batch(labels, everything, 8, rng)
        k = int(rng.integers(ORIENTATIONS))
        z = torch.cat([features[int(i)][k] for i in picks]).float()
        y = torch.from_numpy(labels[picks].astype(np.float32))
        loss = F.binary_cross_entropy_with_logits(later(z), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 250 == 0:
            print(f"step {step}/{steps} loss {loss.item():.3f} "
                  f"{(time.perf_counter() - started) / step:.2f} s/step", flush=True)
    later.eval()


def logit(fixed: Detector, later: nn.Module, image: np.ndarray, orientations: int) -> float:
    """The frame's logit, averaged over its first `orientations` orientations."""
    x = to_tensor([image], 64)
    with torch.no_grad():
        return float(np.mean([later(fixed.features_before(oriented(x, k), FIXED)).item()
                              for k in range(orientations)]))


def judge(work: Path, variant: str, fixed: Detector, later: nn.Module) -> None:
    orientations = ORIENTATIONS if variant == "shipped-8" else 1
    for folder, *spec in JUDGE:
        part = rendered(work / folder, spec[0], spec[1], spec[2], None, spec[3])
        dataset = load_dataset(part / "frames", part / "labels.csv", None)
        logits = np.array([logit(fixed, later, s.image, orientations) for s in dataset.samples])
        np.save(work / f"scores-{variant}-{folder}.npy", logits)
        print(f"{variant:10s} {folder:22s} ROC AUC {ranking_auc(logits, dataset.labels):.3f}",
              flush=True)


def report(work: Path) -> None:
    print("| detector | " + " | ".join(folder for folder, *_ in JUDGE) + " |")
    print("|---|" + "---:|" * len(JUDGE))
    for variant in (*VARIANTS, "shipped + wide"):
        cells = []
        for folder, *_ in JUDGE:
            files = [work / f"scores-{part}-{folder}.npy" for part in variant.split(" + ")]
            if not all(f.is_file() for f in files):  # that variant has not been run
                cells.append("–")
                continue
            with (work / folder / "labels.csv").open() as f:
                truth = np.array([r["label"] == "artifact" for r in csv.DictReader(f)])
            cells.append(f"{ranking_auc(sum(np.load(f) for f in files), truth):.3f}")
        print(f"| {variant} | " + " | ".join(cells) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("runs/variants"))
    parser.add_argument("--variant", choices=VARIANTS)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--report", action="store_true", help="print the table and stop")
    args = parser.parse_args()
    if args.report or args.variant is None:
        report(args.work)
        return 0
    torch.manual_seed(0)  # the random start of scratch and wide
    fixed = shipped_detector()
    later = later_layers(args.variant)
    if args.variant not in ("shipped", "shipped-8"):
        features, labels = stored_features(args.work, fixed)
        train(later, features, labels, args.steps, args.learning_rate)
    judge(args.work, args.variant, fixed, later)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
