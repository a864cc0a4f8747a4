"""ResNet-18 for 32x32 images (CIFAR-style) and its average-pool and Tiny ImageNet variants.

Source: papers.md §1.1, "Evaluation architectures" (the DC/MTT/DATM/SelMatch ``networks.py``):
a 3x3 stride-1 stem without max-pool, four stages of two basic blocks (64/128/256/512 channels),
``avg_pool2d(4)`` and one ``Linear``. Norm is instance norm (``GroupNorm(C, C)``) by default or
batch norm. Attribute names (``conv1``, ``bn1``, ``layer1``..``layer4``, ``shortcut``,
``classifier``) and registration order follow the reference, so ``parameters()`` order, and with
it the flat-parameter layout of expert trajectories, is the same.

Used in: networks.get_network (ResNet18, ResNet18BN, ResNet18_AP, ResNet18BN_AP, *_Tiny).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ResNet18", "BasicBlock"]

RESNET_NORMS = ("instance", "batch")


def resnet_norm(norm: str, channels: int) -> nn.Module:
    """Return the norm layer of a ResNet block: instance (GroupNorm(C, C)) or batch norm."""
    if norm == "instance":
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"unknown ResNet norm {norm!r}; valid: {list(RESNET_NORMS)}")


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection; downsamples by 2 when ``stride == 2``.

    Source: He et al. 2016 basic block as in the reference ``BasicBlock`` / ``BasicBlock_AP``.
    With ``avg_pool=True`` (ResNet18_AP) every strided conv becomes a stride-1 conv followed by a
    2x2 average pool, in the main path and in the 1x1 shortcut (conv, pool, norm).
    Used in: ResNet18.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, norm: str = "instance",
                 avg_pool: bool = False):
        super().__init__()
        self.pool = avg_pool and stride != 1
        conv_stride = 1 if avg_pool else stride
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=conv_stride, padding=1, bias=False)
        self.bn1 = resnet_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = resnet_norm(norm, planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            layers = [nn.Conv2d(in_planes, planes, 1, stride=conv_stride, bias=False)]
            if self.pool:
                layers.append(nn.AvgPool2d(2, stride=2))
            self.shortcut = nn.Sequential(*layers, resnet_norm(norm, planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (B, planes, H/stride, W/stride) unless pooled
        if self.pool:
            out = F.avg_pool2d(out, 2, stride=2)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18 returning logits ``(B, num_classes)``.

    Source: papers.md §1.1. ``stem_stride=2`` is the ``*_Tiny`` variant for 64x64 input (DATM,
    SelMatch); ``avg_pool=True`` is ResNet18_AP, whose final pool is the identity, so its
    classifier sees ``512 * (H/8) * (W/8)`` features (8192 on 32x32) as in the reference.
    Other input sizes work wherever the reference's arithmetic does (classifier sized from
    ``im_size``; the reference hard-codes 32x32).
    Used in: networks.get_network; the cross-architecture and SelMatch evaluation notebooks.
    """

    def __init__(self, channels: int = 3, num_classes: int = 10, norm: str = "instance",
                 avg_pool: bool = False, stem_stride: int = 1, im_size: tuple = (32, 32)):
        super().__init__()
        self.avg_pool = avg_pool
        self.conv1 = nn.Conv2d(channels, 64, 3, stride=stem_stride, padding=1, bias=False)
        self.bn1 = resnet_norm(norm, 64)
        in_planes = 64
        for i, (planes, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)]):
            blocks = [BasicBlock(in_planes, planes, stride, norm, avg_pool),
                      BasicBlock(planes, planes, 1, norm, avg_pool)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            in_planes = planes
        h, w = (_after_stages(s, stem_stride, avg_pool) for s in im_size)
        if not avg_pool:
            h, w = h // 4, w // 4  # avg_pool2d(4)
        if h < 1 or w < 1:
            raise ValueError(f"im_size {tuple(im_size)} is too small for ResNet-18")
        self.classifier = nn.Linear(512 * h * w, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, 512 * h * w)`` of images ``x`` ``(B, C, H, W)``."""
        out = F.relu(self.bn1(self.conv1(x)))  # (B, 64, H/s, W/s)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))  # (B, 512, H/8s, W/8s)
        if not self.avg_pool:
            out = F.avg_pool2d(out, 4)  # (B, 512, 1, 1) on the native size
        return torch.flatten(out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def _after_stages(size: int, stem_stride: int, avg_pool: bool) -> int:
    """Spatial size after the stem and the three downsampling stages of ResNet-18."""
    if stem_stride == 2:
        size = (size + 1) // 2  # 3x3 conv, stride 2, padding 1 rounds up
    for _ in range(3):
        size = size // 2 if avg_pool else (size + 1) // 2  # a 2x2 pool rounds down
    return size
