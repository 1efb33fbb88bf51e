"""Networks: resnet18 (reference variant), mobilenetv2, vgg16 ('like'), lenet5, mlp.

Every net is a `features` module mapping (B, C, H, W) images to (B, F) features and a
`classifier = nn.Linear(F, num_classes)`. House conventions, relied on by the DST engine
and by parameter isolation:

1. BatchNorm is `affine=False, track_running_stats=False`: batch statistics in train and
   eval, so BN holds no parameters and no buffers (no task state).
2. No biases except `classifier.bias`, and that one only where the reference's head has it
   (mobilenetv2, vgg16, mlp; resnet18 and lenet5 heads have none): a shared hidden bias cannot be
   split between tasks by weight masks, while a head bias entry belongs to its class's task.
3. Maskable weights are exactly the parameters with ndim > 1 (conv and linear weights).
4. Global average pooling (or a flatten sized from the input) before the head, so any
   input size at or above the net's minimum works.

Batch statistics need at least 2 values per channel: mobilenetv2 and vgg16 at 32x32 end in
1x1 maps (as the reference), so they reject a batch of 1 in train and eval alike.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

# mobilenetv2 stages, as in the reference: (expansion, out channels, blocks, first stride)
MOBILENETV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                      (6, 320, 1, 1))
# vgg16 'like' conv stack: numbers are 3x3 conv widths, "M" a 2x2 max-pool
VGG16_STACK = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _bn2d(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, affine=False, track_running_stats=False)


def _bn1d(features: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(features, affine=False, track_running_stats=False)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Bias-free 'same'-padded conv followed by batch-statistics BN."""
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)
    return nn.Sequential(conv, _bn2d(cout))


def _global_pool() -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (B, C, H, W) -> (B, C)


class Net(nn.Module):
    """`features` (images -> (B, feature_dim)) followed by the linear `classifier`."""

    def __init__(self, features: nn.Module, feature_dim: int, num_classes: int, head_bias: bool = True):
        super().__init__()
        self.features = features
        self.classifier = nn.Linear(feature_dim, num_classes, bias=head_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # (B, C, H, W) -> (B, num_classes)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, identity or 1x1 conv-BN shortcut, ReLU after the sum."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(cin, cout, 3, stride), nn.ReLU(inplace=True), _conv_bn(cout, cout, 3))
        self.shortcut = _conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))  # (B, cout, H/stride, W/stride)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, linear 1x1 project; residual when shapes match.

    As in the reference, the 1x1 expansion conv is present even for expansion 1.
    """

    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        self.body = nn.Sequential(
            _conv_bn(cin, hidden, 1), nn.ReLU6(inplace=True),
            _conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(inplace=True),
            _conv_bn(hidden, cout, 1),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)  # (B, cout, H/stride, W/stride)
        return x + out if self.residual else out


def _resnet18(in_channels: int, image_size: int, num_classes: int) -> Net:
    # 7x7 stride-2 stem without max-pool, then [2, 2, 2, 2] basic blocks of widths 64-128-256-512
    layers = OrderedDict(stem=nn.Sequential(_conv_bn(in_channels, 64, 7, stride=2), nn.ReLU(inplace=True)))
    cin = 64
    for stage, width in enumerate((64, 128, 256, 512)):
        stride = 1 if stage == 0 else 2
        layers[f"layer{stage + 1}"] = nn.Sequential(BasicBlock(cin, width, stride), BasicBlock(width, width, 1))
        cin = width
    layers["pool"] = _global_pool()  # (B, 512, H/16, W/16) -> (B, 512)
    return Net(nn.Sequential(layers), 512, num_classes, head_bias=False)  # the reference's head has no bias


def _mobilenetv2(in_channels: int, image_size: int, num_classes: int) -> Net:
    blocks: list[nn.Module] = [_conv_bn(in_channels, 32, 3, stride=2), nn.ReLU6(inplace=True)]
    cin = 32
    for expansion, cout, repeats, first_stride in MOBILENETV2_STAGES:
        for i in range(repeats):
            blocks.append(InvertedResidual(cin, cout, first_stride if i == 0 else 1, expansion))
            cin = cout
    blocks += [_conv_bn(cin, 1280, 1), nn.ReLU6(inplace=True), _global_pool()]  # (B, 1280)
    return Net(nn.Sequential(*blocks), 1280, num_classes)


def _vgg16(in_channels: int, image_size: int, num_classes: int) -> Net:
    layers: list[nn.Module] = []
    cin = in_channels
    for item in VGG16_STACK:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [_conv_bn(cin, item, 3), nn.ReLU(inplace=True)]
            cin = item
    # 'like' head: one hidden linear layer, with BN in place of dropout (after the ReLU, as the reference)
    layers += [_global_pool(), nn.Linear(512, 512, bias=False), nn.ReLU(inplace=True), _bn1d(512)]  # (B, 512)
    return Net(nn.Sequential(*layers), 512, num_classes)


def _lenet5_side(image_size: int) -> int:
    """Side of lenet5's last feature map: two rounds of 5x5 valid conv then 2x2 max-pool."""
    return ((image_size - 4) // 2 - 4) // 2


def _lenet5(in_channels: int, image_size: int, num_classes: int) -> Net:
    side = _lenet5_side(image_size)  # 4 for 28x28 (as the reference's MNIST net), 5 for 32x32
    features = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, bias=False), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, bias=False), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(),  # (B, 16, side, side) -> (B, 16 * side * side)
        nn.Linear(16 * side * side, 120, bias=False), nn.ReLU(inplace=True),
        nn.Linear(120, 84, bias=False), nn.ReLU(inplace=True),
    )
    return Net(features, 84, num_classes, head_bias=False)  # the reference's head has no bias


def _mlp(in_channels: int, image_size: int, num_classes: int) -> Net:
    features = nn.Sequential(
        nn.Flatten(),  # (B, C, H, W) -> (B, C * H * W)
        nn.Linear(in_channels * image_size * image_size, 256, bias=False), nn.ReLU(inplace=True),
        nn.Linear(256, 256, bias=False), nn.ReLU(inplace=True),
    )
    return Net(features, 256, num_classes)


# name -> (builder, smallest image side the net accepts)
# vgg16: five 2x2 max-pools need 2**5; lenet5: _lenet5_side(16) == 1 and _lenet5_side(15) == 0
NETS: dict[str, tuple[Callable[[int, int, int], Net], int]] = {
    "resnet18": (_resnet18, 1),
    "mobilenetv2": (_mobilenetv2, 1),
    "vgg16": (_vgg16, 32),
    "lenet5": (_lenet5, 16),
    "mlp": (_mlp, 1),
}


def build_model(name: str, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """Build net `name` for square (in_channels, image_size, image_size) inputs and num_classes outputs."""
    if name not in NETS:
        raise ValueError(f"unknown net {name!r}; choose one of {', '.join(NETS)}")
    builder, min_size = NETS[name]
    if image_size < min_size:
        raise ValueError(f"{name} needs inputs of at least {min_size}x{min_size}, got {image_size}x{image_size}")
    if in_channels < 1 or num_classes < 1:
        raise ValueError(f"{name} needs in_channels >= 1 and num_classes >= 1, got {in_channels} and {num_classes}")
    return builder(in_channels, image_size, num_classes)
