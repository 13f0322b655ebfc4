"""DeepLabv3 of ml-cvnets v0.1 (``cvnets/models/segmentation/enc_dec.py:SegEncoderDecoder`` +
``heads/deeplabv3.py:DeeplabV3``) on an output-stride-16 EdgeFormer or MobileViT backbone, with module names
kept so the official segmentation checkpoints load strictly (fixtures/official-det-seg/SPEC.md §2).

ASPP on layer 5 (1x1, three dilated 3x3 at rates 6/12/18, image pooling; 256 channels, ReLU), a 1x1
projection, a 1x1 classifier with bias, then the x16 bilinear upsampling (align_corners False) as the
model's last layer. :meth:`DeepLabV3.logits_os16` stops before the upsampling: the deploy graph ends there
and the board computes the mask at the original image size (runtime.segment).
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import Backbone, ConvLayer, init_weights

ASPP_RATES = (6, 12, 18)
ASPP_CHANNELS = 256
NUM_CLASSES = 21  # PASCAL VOC: 20 classes + background
OUTPUT_STRIDE = 16


class ASPPPooling(nn.Module):
    """Image pooling branch: global average, 1x1 conv + BN + ReLU, broadcast back to the map's size."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.aspp_pool = nn.Sequential()
        self.aspp_pool.add_module("global_pool", nn.AdaptiveAvgPool2d(1))
        self.aspp_pool.add_module("conv_1x1", ConvLayer(in_channels, out_channels, 1, act=nn.ReLU))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the official F.interpolate(1x1 -> HxW, bilinear) of a 1x1 map is a broadcast: expand, no Resize op
        return self.aspp_pool(x).expand(-1, -1, x.shape[2], x.shape[3])


class ASPP(nn.Module):
    def __init__(self, in_channels: int, out_channels: int = ASPP_CHANNELS, rates=ASPP_RATES):
        super().__init__()
        branches = [ConvLayer(in_channels, out_channels, 1, act=nn.ReLU)]
        branches += [ConvLayer(in_channels, out_channels, 3, dilation=rate, act=nn.ReLU) for rate in rates]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = ConvLayer(len(branches) * out_channels, out_channels, 1, act=nn.ReLU)
        self.dropout = nn.Dropout(0.1)  # official ASPP default (the config's aspp_dropout never reaches it)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.project(torch.cat([branch(x) for branch in self.convs], dim=1)))


class _ASPPHolder(nn.Module):
    """``seg_head.aspp.aspp_layer``: the official wrapper level, kept for the checkpoint's key names."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.aspp_layer = ASPP(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aspp_layer(x)


class SegClassifier(nn.Module):
    """``seg_head.classifier``: Dropout2d, 1x1 conv with bias (``classifier``), x16 bilinear upsampling."""

    def __init__(self, in_channels: int, n_classes: int, scale: int = OUTPUT_STRIDE):
        super().__init__()
        self.drop = nn.Dropout2d(0.1)
        self.classifier = ConvLayer(in_channels, n_classes, 1, use_norm=False, use_act=False, bias=True)
        self.up_16 = nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=False)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up_16(self.logits(x))


class DeepLabHead(nn.Module):
    def __init__(self, in_channels: int, n_classes: int):
        super().__init__()
        self.aspp = _ASPPHolder(in_channels)
        self.classifier = SegClassifier(ASPP_CHANNELS, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.aspp(x))


class DeepLabV3(nn.Module):
    """DeepLabv3 on ``encoder`` (built with output_stride=16); official attribute names."""

    def __init__(self, encoder: Backbone, n_classes: int = NUM_CLASSES):
        super().__init__()
        self.encoder = encoder.headless()
        self.n_classes = n_classes
        self.seg_head = DeepLabHead(encoder.stage_channels(5), n_classes)
        init_weights(self.seg_head)  # official BaseSegHead.reset_head_parameters: kaiming fan-out, BN 1/0

    def logits_os16(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's logits at output stride 16 (before the x16 upsampling)."""
        return self.seg_head.classifier.logits(self.seg_head.aspp(self.encoder.end_points(x)["out_l5"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Official output: logits [B, classes, H, W] at the input size."""
        return self.seg_head.classifier.up_16(self.logits_os16(x))


class LogitsOS16Output(nn.Module):
    """Deploy wrapper: a (lowered) DeepLabV3 whose output is the stride-16 logits."""

    def __init__(self, segmenter: DeepLabV3):
        super().__init__()
        self.segmenter = segmenter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmenter.logits_os16(x)

