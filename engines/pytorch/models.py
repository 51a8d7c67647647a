"""The two models, in plain torch: a ResNet-style detector and a U-Net segmenter.

Both take raw frames (N, C, H, W) float32 at full resolution, H and W padded to
`pad_multiple(arch)`, and do their preprocessing inside the graph, so every backend (ONNX
Runtime, torch, TensorRT) runs exactly what was trained:

- per-frame, per-channel standardisation by the frame's own mean and standard deviation
  (gain, offset and bit depth differ between instruments and frames);
- space-to-depth (pixel unshuffle) by `arch.unshuffle`: the networks work on a grid 4x
  coarser but still see every full-resolution pixel, as channels. That keeps a 1080x1080 frame
  affordable on a 2-core CPU without blurring away specks of ~150 px (measured: bench/).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True, slots=True)
class Architecture:
    in_channels: int = 1
    unshuffle: int = 4  # full-resolution pixels folded into channels per side
    detector_widths: tuple[int, ...] = (16, 32, 64, 128)
    unet_widths: tuple[int, ...] = (16, 32, 64, 128)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> Architecture:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def pad_multiple(arch: Architecture) -> int:
    """Frames are padded to this so every pooling step of both models divides evenly."""
    return arch.unshuffle * 2 ** max(len(arch.detector_widths), len(arch.unet_widths) - 1)


def standardise(frames: torch.Tensor) -> torch.Tensor:
    mean = frames.mean(dim=(2, 3), keepdim=True)
    std = (frames - mean).square().mean(dim=(2, 3), keepdim=True).sqrt()
    return (frames - mean) / (std + 1e-6)


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and an identity or strided 1x1 shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(cin, cout, stride),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class Detector(nn.Module):
    """ResNet-style frame classifier: P(frame holds an artifact).

    Global max pooling sits beside average pooling because one small speck in a large field
    must be able to flag the frame. `cam_maps()` gives the activation maps ScoreCAM weighs.
    """

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.unshuffle = arch.unshuffle
        widths = arch.detector_widths
        self.stem = conv_bn_relu(arch.in_channels * arch.unshuffle**2, widths[0])
        self.stages = nn.ModuleList()
        cin = widths[0]
        for cout in widths:
            self.stages.append(BasicBlock(cin, cout, stride=2))
            cin = cout
        self.head = nn.Linear(2 * cin, 1)

    def _run(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features_before(frames, 1)  # through the stem
        maps = x
        for i, stage in enumerate(self.stages):
            x = stage(x)
            # ScoreCAM uses the second-to-last stage: 1/32 of full resolution localises
            # artifacts twice as finely as the last stage for the same network.
            if i == len(self.stages) - 2:
                maps = x
        return x, maps

    def cam_maps(self, frames: torch.Tensor) -> torch.Tensor:
        return self._run(frames)[1]

    def logits(self, frames: torch.Tensor) -> torch.Tensor:
        return self._pooled_logits(self._run(frames)[0])

    # A fine-tune that keeps the first layers fixed computes their output once per frame
    # (engines.training.fixed_layers): `logits` split after the first `layers` of the stem and
    # the stages, in that order.
    def features_before(self, frames: torch.Tensor, layers: int) -> torch.Tensor:
        x = F.pixel_unshuffle(standardise(frames), self.unshuffle)
        for layer in self._layers()[:layers]:
            x = layer(x)
        return x

    def logits_from(self, features: torch.Tensor, layers: int) -> torch.Tensor:
        x = features
        for layer in self._layers()[layers:]:
            x = layer(x)
        return self._pooled_logits(x)

    def _layers(self) -> list[nn.Module]:
        return [self.stem, *self.stages]

    def _pooled_logits(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return self.head(pooled).squeeze(1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(frames))


class UNet(nn.Module):
    """U-Net segmenter after ArtSeg's (encoder, bottleneck, decoder, skip links), narrower.

    Predicts `unshuffle**2` sub-pixel logits per grid cell and shuffles them back, so the
    mask comes out at full resolution without interpolation.
    """

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.unshuffle = arch.unshuffle
        widths = arch.unet_widths
        self.down = nn.ModuleList()
        cin = arch.in_channels * arch.unshuffle**2
        for w in widths:
            self.down.append(nn.Sequential(conv_bn_relu(cin, w), conv_bn_relu(w, w)))
            cin = w
        self.up = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.Sequential(conv_bn_relu(cin + w, w), conv_bn_relu(w, w)))
            cin = w
        self.out = nn.Conv2d(cin, arch.unshuffle**2, 1)

    def logits(self, frames: torch.Tensor) -> torch.Tensor:
        x = F.pixel_unshuffle(standardise(frames), self.unshuffle)
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return F.pixel_shuffle(self.out(x), self.unshuffle)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(frames))
