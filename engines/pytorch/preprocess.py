"""The torch backend's preprocessing on the device: the same steps as the TensorRT wrapper graph
(engines/gpu/preprocess.py) as tensor ops. uint16 frames travel as int16 bits and are widened
there; H and W are edge-padded to the card's multiple (zeros would look like an artifact).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def widen_uint16(bits: torch.Tensor) -> torch.Tensor:
    """int16 tensor holding uint16 bit patterns -> float32 values 0..65535."""
    return (bits.to(torch.int32) & 0xFFFF).to(torch.float32)


def pad_on_device(batch: torch.Tensor, pad_multiple: int) -> torch.Tensor:
    """Edge-pad H and W up to a multiple (same rule as base.pad_to_multiple)."""
    h, w = batch.shape[-2:]
    ph, pw = (-h) % pad_multiple, (-w) % pad_multiple
    if ph == 0 and pw == 0:
        return batch
    return F.pad(batch, (0, pw, 0, ph), mode="replicate")
