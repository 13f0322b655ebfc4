"""SSDLite-style detector of ml-cvnets v0.1 (``cvnets/models/detection/ssd.py:SingleShotDetector``) on an
EdgeFormer or MobileViT backbone, with module names kept so the official detection checkpoints load strictly.

Feature maps: the backbone's layer 4 (stride 16) and layer 5 (stride 32), then three stride-2 separable convs
(64, 128, 256) and a global pool + 1x1 conv; one separable-conv head per map whose channels are interleaved
per anchor (4 box values, then 81 class logits). ``forward`` returns the official raw outputs
``(confidences [B, N, 81], locations [B, N, 4])``; anchors and post-processing live outside the graph
(:meth:`SingleShotDetector.anchors`; the board's numpy post-processing in ``runtime.detect``).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .layers import Backbone, ConvLayer, SeparableConv

# The official configs (config/detection/*/ssd_*.yaml + argparse defaults; fixtures/official-det-seg/SPEC.md §1)
OUTPUT_STRIDES = (16, 32, 64, 128, 256, -1)
ASPECT_RATIOS = ((2, 3), (2, 3), (2, 3), (2, 3), (2, 3), (2,))
PROJ_CHANNELS = (512, 256, 256, 128, 128, 64)
MIN_RATIO, MAX_RATIO = 0.1, 1.05
CENTER_VARIANCE, SIZE_VARIANCE = 0.1, 0.2
NUM_CLASSES = 81  # 80 COCO classes + background at index 0
BOX_CODES = 4


class SSDHead(nn.Module):
    """Official ``SSDHead``: optional 1x1 projection, then a separable (or 1x1) conv to A * (4 + classes)."""

    def __init__(self, in_channels: int, n_anchors: int, n_classes: int, proj_channels: int, kernel_size: int):
        super().__init__()
        self.n_classes = n_classes
        self.proj_layer = None
        if proj_channels != in_channels and kernel_size > 1:
            self.proj_layer = ConvLayer(in_channels, proj_channels, 1, act=nn.ReLU)
            in_channels = proj_channels
        out_channels = n_anchors * (BOX_CODES + n_classes)
        if kernel_size > 1:
            self.loc_cls_layer = SeparableConv(in_channels, out_channels, kernel_size, use_norm=False,
                                               use_act=False, bias=True)
        else:
            self.loc_cls_layer = ConvLayer(in_channels, out_channels, 1, use_norm=False, use_act=False, bias=True)

    def head_map(self, x: torch.Tensor) -> torch.Tensor:
        """The head's conv output [B, A * (4 + classes), H, W], before the rows are laid out."""
        if self.proj_layer is not None:
            x = self.proj_layer(x)
        return self.loc_cls_layer(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.head_map(x)
        # rows (y, x, anchor) row-major; per anchor 4 box codes then the class logits
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, BOX_CODES + self.n_classes)
        locations, confidences = torch.split(x, [BOX_CODES, self.n_classes], dim=-1)
        return confidences, locations


def anchors_per_location(ratios: tuple[int, ...]) -> int:
    return 2 + 2 * len(ratios)


def prior_sizes(level: int) -> list[tuple[float, float]]:
    """(w, h) of the level's priors in the official order, as fractions of the image, before clamping
    (``SSDAnchorGenerator``: min, sqrt(min*max), then min*sqrt(ar) x min/sqrt(ar) and its transpose per ar)."""
    scales = np.linspace(MIN_RATIO, MAX_RATIO, len(OUTPUT_STRIDES) + 1)
    small, large = float(scales[level]), math.sqrt(float(scales[level]) * float(scales[level + 1]))
    sizes = [(small, small), (large, large)]
    for ratio in ASPECT_RATIOS[level]:  # the official list(set(ar)) iterates 2, 3 for {2, 3}
        root = math.sqrt(ratio)
        sizes += [(small * root, small / root), (small / root, small * root)]
    return sizes


class SingleShotDetector(nn.Module):
    """SSD on ``encoder`` (a :class:`Backbone` whose classifier is removed); official attribute names."""

    def __init__(self, encoder: Backbone, n_classes: int = NUM_CLASSES):
        super().__init__()
        self.encoder = encoder.headless()
        self.n_classes = n_classes
        l4, l5 = encoder.stage_channels(4), encoder.stage_channels(5)
        in_channels = [l4, l5] + list(PROJ_CHANNELS[2:5]) + [PROJ_CHANNELS[5]]
        self.extra_layers = nn.ModuleDict()
        previous = l5
        for stride, channels in zip(OUTPUT_STRIDES[2:], PROJ_CHANNELS[2:]):
            if stride == -1:
                layer = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                      ConvLayer(previous, channels, 1, use_norm=False, act=nn.ReLU))
            else:
                layer = SeparableConv(previous, channels, 3, stride=2)
            self.extra_layers[f"os_{stride}"] = layer
            previous = channels
        self.ssd_heads = nn.ModuleList(
            SSDHead(in_channels[k], anchors_per_location(ASPECT_RATIOS[k]), n_classes, PROJ_CHANNELS[k],
                    kernel_size=1 if stride == -1 else 3) for k, stride in enumerate(OUTPUT_STRIDES))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Official init of what the wrapper adds: xavier-uniform convs, zero biases."""
        for module in (self.extra_layers, self.ssd_heads):
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.xavier_uniform_(m.weight)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        points = self.encoder.end_points(x)
        maps = [points["out_l4"], points["out_l5"]]
        for layer in self.extra_layers.values():
            maps.append(layer(maps[-1]))
        return maps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        confidences, locations = zip(*(head(fm) for head, fm in zip(self.ssd_heads, self.feature_maps(x))))
        return torch.cat(confidences, dim=1), torch.cat(locations, dim=1)

    def head_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every head's conv output (NCHW), the form an NPU keeps entirely on the accelerator: the row
        layout of :meth:`forward` is pure data movement, done on the board (runtime.detect.assemble_levels)."""
        return [head.head_map(fm) for head, fm in zip(self.ssd_heads, self.feature_maps(x))]

    @torch.no_grad()
    def anchor_levels(self, imgsz: int) -> list[dict]:
        """Per feature map: its grid (h, w) and the clamped prior (w, h) pairs, for ``imgsz`` x ``imgsz``."""
        was_training = self.training
        maps = self.eval().feature_maps(torch.zeros(1, 3, imgsz, imgsz))
        self.train(was_training)
        levels = []
        for k, fm in enumerate(maps):
            sizes = torch.tensor(prior_sizes(k), dtype=torch.float32).clamp(0, 1)
            levels.append({"grid": [int(fm.shape[2]), int(fm.shape[3])], "sizes": sizes.tolist()})
        return levels

    @torch.no_grad()
    def anchors(self, imgsz: int) -> torch.Tensor:
        """The official priors [N, 4] (cx, cy, w, h; normalised, clamped to [0, 1]) for ``imgsz``."""
        rows = []
        for level in self.anchor_levels(imgsz):
            h, w = level["grid"]
            for y in range(h):
                for x in range(w):
                    cx, cy = (x + 0.5) / w, (y + 0.5) / h
                    rows += [[cx, cy, sw, sh] for sw, sh in level["sizes"]]
        return torch.tensor(rows, dtype=torch.float32).clamp(0, 1)



class HeadMapsOutput(nn.Module):
    """Deploy wrapper: a (lowered) detector whose outputs are the per-level head maps."""

    def __init__(self, detector: SingleShotDetector):
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.detector.head_maps(x))
