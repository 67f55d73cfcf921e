"""CIFAR-style ResNets for small inputs (He et al., 2016, arXiv:1512.03385, §4.2).

Depth ``6n + 2`` with three stages of ``n`` basic blocks at widths ``w, 2w, 4w`` (w = 16 in the paper). A 3×3
stem without max-pooling keeps 28×28 / 32×32 inputs at full resolution in the first stage. Projection shortcuts
(1×1 conv + BN) are used where the shape changes, so torch-pruning can couple residual channels cleanly.

Recipe::

    teacher: {model: {name: resnet20}}                 # 0.27 M params, 31 MMAC at 28×28
    teacher: {model: {name: resnet_cifar, args: {depth: 32, width: 32}}}
"""

from __future__ import annotations

from torch import Tensor, nn

from edgekd.models import MODELS


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images. ``layer1..3`` and ``fc`` are stable names for hooks and ignores."""

    def __init__(self, depth: int = 20, width: int = 16, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        planes = width
        stages = []
        for i, out_planes in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(planes, out_planes, stride))
                planes = out_planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.pool(x).flatten(1))


@MODELS.register("resnet_cifar")
def resnet_cifar(
    num_classes: int = 10, in_channels: int = 3, depth: int = 20, width: int = 16
) -> CifarResNet:
    return CifarResNet(depth, width, num_classes, in_channels)


def _fixed_depth(depth: int):
    def build(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> CifarResNet:
        return CifarResNet(depth, width, num_classes, in_channels)

    build.__doc__ = f"CIFAR-style ResNet-{depth} (width 16/32/64 by default)."
    return build


for _depth in (20, 32, 44, 56, 110):
    MODELS.register(f"resnet{_depth}")(_fixed_depth(_depth))
