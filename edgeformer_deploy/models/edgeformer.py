"""EdgeFormer / ParC-Net (ECCV 2022) as defined by the official code's ``outer_frame_v1`` + ``gcc_ca``
configuration.  Attribute names follow the official modules so official checkpoints load strictly.

A GCC ("global circular convolution") block splits its channels in two halves: one half is convolved
circularly along H then W, the other along W then H, each with a depthwise kernel as long as the
feature map.  Kernels and position embeddings are learnt at a "meta" size (32/16/8 for 256x256 input)
and bilinearly resized to the actual feature size at run time — which is what makes the training
graph dynamic, and what :mod:`edgeformer_deploy.export.lowering` freezes for one input size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .layers import Backbone, Classifier, ConvLayer, InvertedResidual, init_weights, make_mv2_stage, stage_stride


class ChannelAttention(nn.Module):
    """Squeeze-excitation style gate (official ``CA_layer``): GAP, 1x1 reduce, 1x1 expand, hard-sigmoid."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1, bias=False),
            nn.BatchNorm2d(channels // reduction),
            nn.Hardswish(),
            nn.Conv2d(channels // reduction, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.Hardsigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(self.gap(x))


def circular_conv(x: torch.Tensor, kernel: torch.Tensor, dim: int, bias: torch.Tensor | None = None):
    """Depthwise circular convolution along ``dim`` (2 = H, 3 = W) with a kernel as long as that axis.

    The official formulation: append the first n-1 rows/columns, then a 'valid' convolution.
    """
    head = x.narrow(dim, 0, x.shape[dim] - 1)
    return F.conv2d(torch.cat((x, head), dim=dim), kernel, bias, groups=x.shape[1])


def resize_meta(meta: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Bilinear (align_corners) resize of a meta kernel / position embedding along ``dim``."""
    shape = [size, 1] if dim == 2 else [1, size]
    return F.interpolate(meta, shape, mode="bilinear", align_corners=True)


class GCCBlock(nn.Module):
    """Official ``gcc_ca_mf_block``: two-way global circular convolution + FFN + channel attention."""

    def __init__(self, dim: int, meta_kernel_size: int, ffn_dim: int, use_pe: bool,
                 ffn_dropout: float = 0.0, dropout: float = 0.1):
        super().__init__()
        self.dim = dim
        self.use_pe = use_pe
        self.pre_Norm_1 = nn.BatchNorm2d(dim)
        self.pre_Norm_2 = nn.BatchNorm2d(dim)
        # Created like the official code (Conv2d(...).weight) so the default initialisation matches.
        k = meta_kernel_size
        self.meta_kernel_1_H = nn.Conv2d(dim, dim, (k, 1), groups=dim).weight
        self.meta_kernel_1_W = nn.Conv2d(dim, dim, (1, k), groups=dim).weight
        self.meta_kernel_2_H = nn.Conv2d(dim, dim, (k, 1), groups=dim).weight
        self.meta_kernel_2_W = nn.Conv2d(dim, dim, (1, k), groups=dim).weight
        if use_pe:
            self.meta_pe_1_H = nn.Parameter(torch.randn(1, dim, k, 1))
            self.meta_pe_1_W = nn.Parameter(torch.randn(1, dim, 1, k))
            self.meta_pe_2_H = nn.Parameter(torch.randn(1, dim, k, 1))
            self.meta_pe_2_W = nn.Parameter(torch.randn(1, dim, 1, k))
        self.ffn = nn.Sequential(
            nn.BatchNorm2d(2 * dim),
            nn.Conv2d(2 * dim, ffn_dim, 1),
            nn.Hardswish(),
            nn.Dropout(ffn_dropout),
            nn.Conv2d(ffn_dim, 2 * dim, 1),
            nn.Dropout(dropout),
        )
        self.ca = ChannelAttention(2 * dim)

    def instance_kernels(self, size: int):
        """Kernels (1H, 1W, 2H, 2W) for a ``size`` x ``size`` feature map."""
        return (resize_meta(self.meta_kernel_1_H, size, 2), resize_meta(self.meta_kernel_1_W, size, 3),
                resize_meta(self.meta_kernel_2_H, size, 2), resize_meta(self.meta_kernel_2_W, size, 3))

    def instance_pes(self, size: int):
        """Position embeddings (1H, 1W, 2H, 2W), each broadcast to (1, dim, size, size)."""
        full = (1, self.dim, size, size)
        return (resize_meta(self.meta_pe_1_H, size, 2).expand(full),
                resize_meta(self.meta_pe_1_W, size, 3).expand(full),
                resize_meta(self.meta_pe_2_H, size, 2).expand(full),
                resize_meta(self.meta_pe_2_W, size, 3).expand(full))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_1, x_2 = torch.chunk(x, 2, 1)
        # The official code sizes every kernel from H: only square feature maps are supported.
        size = x_1.shape[2]
        k_1h, k_1w, k_2h, k_2w = self.instance_kernels(size)
        if self.use_pe:
            pe_1h, pe_1w, pe_2h, pe_2w = self.instance_pes(size)
            y_1, y_2 = self.pre_Norm_1(x_1 + pe_1h), self.pre_Norm_2(x_2 + pe_1w)
        else:
            y_1, y_2 = self.pre_Norm_1(x_1), self.pre_Norm_2(x_2)
        y_1, y_2 = circular_conv(y_1, k_1h, 2), circular_conv(y_2, k_1w, 3)
        if self.use_pe:
            y_1, y_2 = y_1 + pe_2w, y_2 + pe_2h
        y_1, y_2 = circular_conv(y_1, k_2w, 3), circular_conv(y_2, k_2h, 2)
        out = torch.cat((x_1 + y_1, x_2 + y_2), dim=1)
        return out + self.ca(self.ffn(out))


class OuterFrame(nn.Module):
    """Official ``outer_frame_v1``: local conv, a stack of GCC blocks, then add/concat fusion."""

    def __init__(self, in_channels: int, cf_s_channels: int, cf_ffn_channels: int, n_blocks: int,
                 meta_kernel_size: int, fusion: str, use_pe: bool = True, dropout: float = 0.1,
                 ffn_dropout: float = 0.0):
        super().__init__()
        groups = int(np.gcd(cf_s_channels, in_channels))
        self.fusion = fusion
        self.dim_adaptive = nn.Sequential(
            ConvLayer(in_channels, cf_s_channels, 3, groups=groups),
            ConvLayer(cf_s_channels, cf_s_channels, 1, use_norm=False, use_act=False),
        )
        blocks = [GCCBlock(cf_s_channels // 2, meta_kernel_size, cf_ffn_channels,
                           use_pe=use_pe and i == 0,  # official: PE only in the first block of a stage
                           ffn_dropout=ffn_dropout, dropout=dropout) for i in range(n_blocks)]
        self.spatial_global_rep = nn.Sequential(*blocks, nn.BatchNorm2d(cf_s_channels))
        self.channel_adaptive = ConvLayer(cf_s_channels, in_channels, 1, groups=groups)
        fusion_in = in_channels if fusion == "add" else 2 * in_channels
        self.local_global_fusion = ConvLayer(fusion_in, in_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.channel_adaptive(self.spatial_global_rep(self.dim_adaptive(x)))
        if self.fusion == "add":
            return self.local_global_fusion(x + y)
        return self.local_global_fusion(torch.cat((y, x), dim=1))


@dataclass(frozen=True)
class GCCStage:
    out_channels: int
    cf_s_channels: int
    cf_ffn_channels: int
    cf_blocks: int
    meta_kernel_size: int


@dataclass(frozen=True)
class EdgeFormerConfig:
    stem_channels: int
    stem_kernel: int
    layer1: int
    layer2: int
    stages: tuple[GCCStage, GCCStage, GCCStage]
    fusion: str


EDGEFORMER_CONFIGS = {
    "xs": EdgeFormerConfig(16, 3, 32, 64, (GCCStage(96, 96, 192, 2, 32), GCCStage(128, 128, 256, 3, 16),
                                           GCCStage(160, 160, 320, 2, 8)), fusion="add"),
    "s": EdgeFormerConfig(16, 3, 32, 64, (GCCStage(96, 192, 384, 2, 32), GCCStage(128, 256, 512, 4, 16),
                                          GCCStage(160, 320, 640, 3, 8)), fusion="concat"),
    "h": EdgeFormerConfig(48, 5, 96, 144, (GCCStage(216, 324, 648, 3, 32), GCCStage(288, 432, 864, 9, 16),
                                           GCCStage(432, 432, 864, 3, 8)), fusion="concat"),
}


class EdgeFormer(Backbone):
    """EdgeFormer classifier: MobileNetV2 stem + stages 1-2, three GCC stages, 1x1 expansion, head."""

    def __init__(self, variant: str = "s", num_classes: int = 1000, classifier_dropout: float = 0.2,
                 output_stride: int = 32):
        super().__init__()
        cfg = EDGEFORMER_CONFIGS[variant]
        self.variant = variant
        self.conv_1 = ConvLayer(3, cfg.stem_channels, cfg.stem_kernel, stride=2)
        self.layer_1 = make_mv2_stage(cfg.stem_channels, cfg.layer1, 1, 1, 4)
        self.layer_2 = make_mv2_stage(cfg.layer1, cfg.layer2, 3, 2, 4)
        channels = cfg.layer2
        for index, stage in enumerate(cfg.stages, start=3):
            layer = nn.Sequential(
                InvertedResidual(channels, stage.out_channels, stride=stage_stride(index, output_stride),
                                 expand_ratio=4),
                OuterFrame(stage.out_channels, stage.cf_s_channels, stage.cf_ffn_channels, stage.cf_blocks,
                           stage.meta_kernel_size, cfg.fusion),
            )
            setattr(self, f"layer_{index}", layer)
            channels = stage.out_channels
        exp_channels = min(4 * channels, 960)
        self.conv_1x1_exp = ConvLayer(channels, exp_channels, 1)
        self.classifier = Classifier(exp_channels, num_classes, classifier_dropout)
        init_weights(self)
