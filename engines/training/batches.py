"""Frames into tensors: padded batches, shape groups, balanced picks and random crops for the
training steps, and one frame's whole-frame prediction back out as an array."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from engines.data.dataset import Dataset


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


def balanced_batch(labels: np.ndarray, indices: np.ndarray, size: int,
                   rng: np.random.Generator) -> np.ndarray:
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
            top = int(np.clip(cy - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1),
                              0, h - crop))
            left = int(np.clip(cx - crop // 2 + rng.integers(-crop // 4, crop // 4 + 1),
                               0, w - crop))
        else:
            top, left = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
        xs.append(image[:, top : top + crop, left : left + crop])
        ys.append(target[top : top + crop, left : left + crop])
    x = torch.from_numpy(np.stack(xs).astype(np.float32))
    y = torch.from_numpy(np.stack(ys).astype(np.float32))[:, None]
    return x, y


@torch.no_grad()
def predict(model: nn.Module, image: np.ndarray, multiple: int, device: torch.device) -> np.ndarray:
    """Full-frame forward pass of either model on one (C, H, W) frame."""
    x = to_tensor([image], multiple).to(device)
    out = model(x).float().cpu().numpy()
    if out.ndim == 1:
        return out
    return out[0, 0, : image.shape[-2], : image.shape[-1]]
