"""Training augmentation: masks move with their frames; photometric changes stay in bounds."""

from __future__ import annotations

from dataclasses import replace

import torch

from engines.training.augment import AugmentOptions, augment

ONLY_FRINGES = AugmentOptions(flips=False, rotations=False, gain=(1.0, 1.0), offset=(0.0, 0.0),
                              gamma=(1.0, 1.0), gradient=0.0, gaussian_noise=0.0, speckle=0.0,
                              texture=(0.0, 0.0), probability=1.0)


def test_masks_turn_and_flip_with_their_frames():
    # values on a coarse grid, so dividing by the mean and multiplying back cannot move one
    # across the mask's cut-off
    gen = torch.Generator().manual_seed(1)
    frames = torch.randint(1, 20, (4, 1, 32, 32), generator=gen).float() * 50
    masks = (frames > 525).float()
    for seed in range(8):
        out, moved = augment(frames, masks, torch.Generator().manual_seed(seed),
                             AugmentOptions(probability=0.0))
        assert torch.equal(moved, (out > 525).float()), "the mask must cover the same pixels"


def test_fringes_are_faint_straight_stripes_and_leave_masks_alone():
    frames = torch.full((16, 1, 256, 256), 1000.0)
    masks = torch.zeros(16, 1, 256, 256)
    masks[:, :, 100:120, 100:120] = 1
    out, same = augment(frames, masks, torch.Generator().manual_seed(3), ONLY_FRINGES)
    assert torch.equal(same, masks)
    relative = out / 1000.0 - 1
    peak = relative.abs().flatten(1).amax(dim=1)
    assert float(peak.max()) <= ONLY_FRINGES.fringes + 1e-5
    assert int((peak > 0.002).sum()) >= 8, "most frames get visible-in-the-data fringes"
    # straight stripes sin(a x + b y + c) = sin(a x) cos(b y + c) + cos(a x) sin(b y + c): rank 2
    strongest = relative[peak.argmax(), 0].double()
    singular = torch.linalg.svdvals(strongest)
    assert float(singular[2] / singular[0]) < 1e-3


def test_without_photometric_changes_a_flat_frame_stays_flat():
    frames = torch.full((2, 1, 64, 64), 500.0)
    out, _ = augment(frames, None, torch.Generator().manual_seed(0),
                     replace(ONLY_FRINGES, fringes=0.0))
    assert torch.allclose(out, frames)


def test_texture_is_made_softer_or_crisper_and_a_flat_frame_stays_flat():
    base = replace(ONLY_FRINGES, fringes=0.0)
    texture = torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(2)) * 100 + 500
    flat = torch.full((2, 1, 64, 64), 500.0)
    for amount, softer in (((-0.7, -0.7), True), ((1.0, 1.0), False)):
        options = replace(base, texture=amount)
        out, _ = augment(texture, None, torch.Generator().manual_seed(0), options)
        assert (out.std() < texture.std()) == softer
        still, _ = augment(flat, None, torch.Generator().manual_seed(0), options)
        assert torch.allclose(still, flat)
