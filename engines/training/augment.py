"""Training augmentation on batches of raw frames (N, C, H, W) float32 and masks (N, 1, H, W).

Geometric changes apply to frames and masks alike; photometric ones only to frames. They
mimic what differs between instruments and days: orientation, gain/offset, gamma,
uneven illumination, faint interference fringes, Gaussian read noise and multiplicative speckle
(seed 004), softer or crisper fine texture. Fringes of ~1 % are invisible to the eye but a
U-Net that never saw them strong enough took them for out-of-focus dirt over half a field; they
are drawn a little stronger than any optics should make them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True, slots=True)
class AugmentOptions:
    flips: bool = True
    rotations: bool = True
    gain: tuple[float, float] = (0.5, 2.0)
    offset: tuple[float, float] = (-0.2, 0.2)  # fraction of the frame's mean
    gamma: tuple[float, float] = (0.8, 1.25)
    gradient: float = 0.3  # peak relative change of a linear illumination ramp
    fringes: float = 0.012  # peak relative amplitude of straight interference fringes
    fringe_period_px: tuple[float, float] = (40.0, 600.0)
    gaussian_noise: float = 0.03  # std as a fraction of the frame's mean
    speckle: float = 0.05  # std of the multiplicative noise
    # Fine texture made softer or crisper, x + a (x - blur(x)) with a in `texture`: instruments
    # and cell lines differ in focus and in how sharp cell texture looks, and a model that
    # learned one renderer's texture took another's cells for debris.
    texture: tuple[float, float] = (-0.7, 1.0)
    texture_sigma_px: tuple[float, float] = (0.8, 3.0)
    probability: float = 0.8  # chance each photometric change is applied to a frame


def _uniform(n: int, bounds: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(n, 1, 1, 1, generator=gen)


def geometric(
    frames: torch.Tensor, masks: torch.Tensor | None, gen: torch.Generator, options: AugmentOptions
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One random flip/rotation for the whole batch (cheap, and enough over many steps)."""
    if options.flips and torch.rand(1, generator=gen) < 0.5:
        frames = frames.flip(-1)
        masks = masks.flip(-1) if masks is not None else None
    if options.rotations and frames.shape[-1] == frames.shape[-2]:
        k = int(torch.randint(0, 4, (1,), generator=gen))
        frames = torch.rot90(frames, k, dims=(-2, -1))
        masks = torch.rot90(masks, k, dims=(-2, -1)) if masks is not None else None
    return frames, masks


def photometric(frames: torch.Tensor, gen: torch.Generator,
                options: AugmentOptions) -> torch.Tensor:
    n, _, h, w = frames.shape
    mean = frames.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1.0)

    def chosen() -> torch.Tensor:
        return (torch.rand(n, 1, 1, 1, generator=gen) < options.probability).float()

    x = frames / mean  # work around 1.0 so the changes are independent of bit depth
    gamma = 1 + chosen() * (_uniform(n, options.gamma, gen) - 1)
    x = x.clamp_min(0).pow(gamma)
    ys = torch.linspace(-1, 1, h).view(1, 1, h, 1)
    xs = torch.linspace(-1, 1, w).view(1, 1, 1, w)
    angle = torch.rand(n, 1, 1, 1, generator=gen) * 6.2832
    ramp = torch.cos(angle) * xs + torch.sin(angle) * ys
    x = x * (1 + chosen() * options.gradient * _uniform(n, (0.0, 1.0), gen) * ramp)
    x = x * (1 + chosen() * options.fringes * _uniform(n, (0.0, 1.0), gen)
             * _fringes(n, h, w, gen, options))
    x = x + chosen() * _uniform(n, options.texture, gen) * (x - _blur(x, options, gen))
    x = x * (1 + chosen() * options.speckle * torch.randn(x.shape, generator=gen))
    x = x + chosen() * options.gaussian_noise * torch.randn(x.shape, generator=gen)
    x = x + chosen() * _uniform(n, options.offset, gen)
    gain = 1 + chosen() * (_uniform(n, options.gain, gen) - 1)
    return (x * mean * gain).clamp_min(0)


def _blur(x: torch.Tensor, options: AugmentOptions, gen: torch.Generator) -> torch.Tensor:
    """Separable Gaussian blur of the whole batch, one random width per batch."""
    low, high = options.texture_sigma_px
    sigma = low + (high - low) * float(torch.rand(1, generator=gen))
    radius = max(1, round(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x.dtype)
    c = x.shape[1]
    flat = x.reshape(-1, 1, *x.shape[-2:])
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return flat.reshape(-1, c, *x.shape[-2:])


def _fringes(n: int, h: int, w: int, gen: torch.Generator, options: AugmentOptions) -> torch.Tensor:
    """Unit-amplitude straight sinusoidal stripes, random period (log-uniform), angle, phase."""
    low, high = (torch.tensor(b).log() for b in options.fringe_period_px)
    period = (low + (high - low) * torch.rand(n, 1, 1, 1, generator=gen)).exp()
    angle = torch.rand(n, 1, 1, 1, generator=gen) * 6.2832
    phase = torch.rand(n, 1, 1, 1, generator=gen) * 6.2832
    ys = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w)
    along = torch.cos(angle) * xs + torch.sin(angle) * ys
    return torch.sin(6.2832 * along / period + phase)


def augment(
    frames: torch.Tensor,
    masks: torch.Tensor | None,
    gen: torch.Generator,
    options: AugmentOptions | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    options = options or AugmentOptions()
    frames, masks = geometric(frames, masks, gen, options)
    return photometric(frames, gen, options), masks
