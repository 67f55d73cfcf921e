"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015, arXiv:1505.04597) with width and depth parameters.

``depth`` encoder levels, each two 3×3 conv–BN–ReLU layers, 2×2 max-pooling between levels; channels double
per level from ``width``. The decoder upsamples bilinearly (no transposed convolutions: fewer parameters and
no checkerboard artefacts), **concatenates** the encoder feature of the same level, and applies two 3×3
conv–BN–ReLU layers. A 1×1 convolution maps to ``num_classes`` logits at the input resolution.

Why this shape suits structural pruning: torch-pruning's dependency graph sees each ``torch.cat`` and maps
the skip's channels into the decoder convolution's input channels, so pruning an encoder layer also removes
the matching input channels of the decoder layer it feeds; the skips stay consistent at any ratio. The head
is found as an output layer and never pruned. Upsampling resizes to the skip's size (not a fixed ×2), so any
input size works, and the ONNX export keeps height and width dynamic.

Recipe::

    teacher: {model: {name: unet, args: {width: 16, depth: 3}}}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.errors import InputError
from edgekd.models import MODELS


class DoubleConv(nn.Sequential):
    """Two 3×3 conv–BN–ReLU layers."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """Bilinear upsampling to the skip's size, concatenation with the skip, then :class:`DoubleConv`."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_channels + skip_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """U-Net: ``depth`` down/up levels, ``width`` channels at full resolution, doubling per level."""

    def __init__(self, num_classes: int = 2, in_channels: int = 3, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        if width < 1 or depth < 1:
            raise InputError(f"unet: width and depth must be >= 1, got width={width}, depth={depth}")
        widths = [width * 2**level for level in range(depth + 1)]
        self.stem = DoubleConv(in_channels, widths[0])
        self.down = nn.ModuleList(DoubleConv(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(Up(widths[i + 1], widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        x = skips.pop()
        for block in self.up:
            x = block(x, skips.pop())
        return self.head(x)


@MODELS.register("unet")
def unet(num_classes: int = 2, in_channels: int = 3, width: int = 16, depth: int = 3) -> UNet:
    """U-Net for semantic segmentation (``width`` channels at full resolution, ``depth`` levels)."""
    return UNet(num_classes, in_channels, width, depth)
