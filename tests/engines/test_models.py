"""Model shapes: 1 channel by default, C channels as an option, full-resolution output."""

from __future__ import annotations

import pytest
import torch

from engines.pytorch.models import Architecture, Detector, UNet, pad_multiple, standardise


@pytest.mark.parametrize("channels", [1, 3])
def test_models_take_c_channels_and_answer_at_full_resolution(channels):
    arch = Architecture(in_channels=channels)
    multiple = pad_multiple(arch)
    frames = torch.rand(2, channels, 2 * multiple, 3 * multiple) * 4000
    with torch.no_grad():
        scores = Detector(arch).eval()(frames)
        probability = UNet(arch).eval()(frames)
    assert scores.shape == (2,)
    assert probability.shape == (2, 1, 2 * multiple, 3 * multiple)
    assert float(probability.min()) >= 0 and float(probability.max()) <= 1


def test_standardisation_removes_gain_and_offset():
    frame = torch.rand(1, 1, 64, 64)
    np_a = standardise(frame)
    np_b = standardise(frame * 7.5 + 300)
    assert torch.allclose(np_a, np_b, atol=1e-4)
