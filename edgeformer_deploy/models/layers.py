"""Building blocks shared by EdgeFormer and MobileViT, named exactly like ml-cvnets so that
official state dicts load strictly (``block.conv`` / ``block.norm`` / ``block.act``)."""
from __future__ import annotations

import torch
from torch import nn


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """ml-cvnets/MobileNetV2 channel rounding: nearest multiple of ``divisor``, never below 90 %."""
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


class ConvLayer(nn.Module):
    """Conv2d (+ BatchNorm) (+ activation), 'same' padding for odd kernels, no conv bias with a norm."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, dilation: int = 1, use_norm: bool = True, use_act: bool = True,
                 act: type[nn.Module] = nn.SiLU, bias: bool = False):
        super().__init__()
        padding = (kernel_size - 1) // 2 * dilation
        self.block = nn.Sequential()
        self.block.add_module("conv", nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                                dilation=dilation, groups=groups, bias=bias and not use_norm))
        if use_norm:
            self.block.add_module("norm", nn.BatchNorm2d(out_channels))
        if use_act:
            self.block.add_module("act", act())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class SeparableConv(nn.Module):
    """ml-cvnets ``SeparableConv``: depthwise k x k conv + BN (always, no activation), then a pointwise 1x1
    conv with the requested norm / activation / bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 use_norm: bool = True, use_act: bool = True, bias: bool = False,
                 act: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.dw_conv = ConvLayer(in_channels, in_channels, kernel_size, stride, groups=in_channels, use_act=False)
        self.pw_conv = ConvLayer(in_channels, out_channels, 1, use_norm=use_norm, use_act=use_act, act=act,
                                 bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw_conv(self.dw_conv(x))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project; residual when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: float,
                 dilation: int = 1):
        super().__init__()
        hidden = make_divisible(int(round(in_channels * expand_ratio)), 8)
        self.use_res_connect = stride == 1 and in_channels == out_channels
        self.block = nn.Sequential()
        if expand_ratio != 1:
            self.block.add_module("exp_1x1", ConvLayer(in_channels, hidden, 1))
        self.block.add_module("conv_3x3", ConvLayer(hidden, hidden, 3, stride=stride, groups=hidden,
                                                    dilation=dilation))
        self.block.add_module("red_1x1", ConvLayer(hidden, out_channels, 1, use_act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res_connect else y


def make_mv2_stage(in_channels: int, out_channels: int, num_blocks: int, stride: int,
                   expand_ratio: float) -> nn.Sequential:
    blocks = [InvertedResidual(in_channels if i == 0 else out_channels, out_channels,
                               stride if i == 0 else 1, expand_ratio) for i in range(num_blocks)]
    return nn.Sequential(*blocks)


def stage_stride(index: int, output_stride: int) -> int:
    """Stride of stage ``index``'s first block. Output stride 16 (the official segmentation backbone) removes
    layer 5's downsampling and nothing else: the official code's dilation for it comes out as 1."""
    if output_stride not in (16, 32):
        raise ValueError(f"output_stride must be 16 or 32 (got {output_stride})")
    return 1 if index == 5 and output_stride == 16 else 2


class Backbone(nn.Module):
    """The ml-cvnets encoder layout shared by EdgeFormer and MobileViT: ``conv_1``, ``layer_1``…``layer_5``,
    then (classification only) ``conv_1x1_exp`` + ``classifier``. Detection and segmentation wrappers set
    those two to None, as the official code does, and read the stage outputs instead."""

    def headless(self) -> "Backbone":
        """Drop the classification head, as the official detection/segmentation wrappers do."""
        self.conv_1x1_exp = None
        self.classifier = None
        return self

    def stage_channels(self, index: int) -> int:
        """Output channels of stage ``index`` (its last convolution)."""
        convs = [m for m in getattr(self, f"layer_{index}").modules() if isinstance(m, nn.Conv2d)]
        return convs[-1].out_channels

    def end_points(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outputs of every stage, keyed like ml-cvnets' ``extract_end_points_all`` (out_l1 … out_l5)."""
        points = {}
        x = self.conv_1(x)
        for index in range(1, 6):
            x = getattr(self, f"layer_{index}")(x)
            points[f"out_l{index}"] = x
        return points

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            raise RuntimeError("this backbone's classifier was removed: use end_points()")
        return self.classifier(self.conv_1x1_exp(self.end_points(x)["out_l5"]))


class Classifier(nn.Sequential):
    """Global mean pool, dropout, linear — keys ``classifier.fc.*`` as in ml-cvnets."""

    def __init__(self, in_features: int, num_classes: int, dropout: float):
        super().__init__()
        self.add_module("global_pool", GlobalMeanPool())
        if 0.0 < dropout < 1.0:
            self.add_module("dropout", nn.Dropout(dropout))
        self.add_module("fc", nn.Linear(in_features, num_classes))


class GlobalMeanPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


def init_weights(model: nn.Module) -> None:
    """ml-cvnets initialisation: kaiming-normal convs, trunc-normal(0.02) linears, unit norms."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
