"""MobileViT v1 (XXS/XS/S) as in apple/ml-cvnets (the version ParC-Net builds on), module names kept
so official checkpoints load strictly."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Backbone, Classifier, ConvLayer, InvertedResidual, init_weights, make_mv2_stage, stage_stride


class MultiHeadAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, attn_dropout: float = 0.0):
        super().__init__()
        self.qkv_proj = nn.Linear(embed_dim, 3 * embed_dim)
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.num_heads = num_heads
        self.scaling = (embed_dim // num_heads) ** -0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        # [B, N, 3, h, c] -> [B, h, 3, N, c]
        qkv = self.qkv_proj(x).reshape(b, n, 3, self.num_heads, -1).transpose(1, 3)
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        attn = torch.matmul(query * self.scaling, key.transpose(2, 3)).softmax(dim=-1)
        out = torch.matmul(self.attn_dropout(attn), value)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class TransformerEncoder(nn.Module):
    """Pre-norm transformer layer (``pre_norm_mha`` / ``pre_norm_ffn`` as in ml-cvnets)."""

    def __init__(self, embed_dim: int, ffn_dim: int, num_heads: int, attn_dropout: float = 0.0,
                 dropout: float = 0.1, ffn_dropout: float = 0.0):
        super().__init__()
        self.pre_norm_mha = nn.Sequential(nn.LayerNorm(embed_dim),
                                          MultiHeadAttention(embed_dim, num_heads, attn_dropout),
                                          nn.Dropout(dropout))
        self.pre_norm_ffn = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, ffn_dim), nn.SiLU(),
                                          nn.Dropout(ffn_dropout), nn.Linear(ffn_dim, embed_dim),
                                          nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pre_norm_mha(x)
        return x + self.pre_norm_ffn(x)


class MobileViTBlock(nn.Module):
    """Local 3x3 + 1x1, unfold into 2x2 patches, transformers, fold, 1x1 projection, 3x3 fusion."""

    def __init__(self, in_channels: int, transformer_dim: int, ffn_dim: int, n_blocks: int,
                 num_heads: int = 4, patch: int = 2, dropout: float = 0.1, attn_dropout: float = 0.0):
        super().__init__()
        self.local_rep = nn.Sequential()
        self.local_rep.add_module("conv_3x3", ConvLayer(in_channels, in_channels, 3))
        self.local_rep.add_module("conv_1x1", ConvLayer(in_channels, transformer_dim, 1, use_norm=False,
                                                        use_act=False))
        self.global_rep = nn.Sequential(
            *[TransformerEncoder(transformer_dim, ffn_dim, num_heads, attn_dropout, dropout) for _ in range(n_blocks)],
            nn.LayerNorm(transformer_dim))
        self.conv_proj = ConvLayer(transformer_dim, in_channels, 1)
        self.fusion = ConvLayer(2 * in_channels, in_channels, 3)
        self.patch = patch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        fm = self.local_rep(x)
        p = self.patch
        new_h, new_w = math.ceil(h / p) * p, math.ceil(w / p) * p
        resized = (new_h, new_w) != (h, w)
        if resized:  # official behaviour for sizes not divisible by the patch (e.g. 7x7 at 224 input)
            fm = F.interpolate(fm, size=(new_h, new_w), mode="bilinear", align_corners=False)
        c, n_h, n_w = fm.shape[1], new_h // p, new_w // p
        # [B, C, H, W] -> [B*P, N, C] with P = p*p pixels per patch and N = n_h*n_w patches
        patches = (fm.reshape(b * c * n_h, p, n_w, p).transpose(1, 2)
                   .reshape(b, c, n_h * n_w, p * p).transpose(1, 3).reshape(b * p * p, n_h * n_w, c))
        patches = self.global_rep(patches)
        fm = (patches.contiguous().view(b, p * p, n_h * n_w, c).transpose(1, 3)
              .reshape(b * c * n_h, n_w, p, p).transpose(1, 2).reshape(b, c, new_h, new_w))
        if resized:
            fm = F.interpolate(fm, size=(h, w), mode="bilinear", align_corners=False)
        return self.fusion(torch.cat((x, self.conv_proj(fm)), dim=1))


@dataclass(frozen=True)
class ViTStage:
    out_channels: int
    transformer_dim: int
    ffn_dim: int
    blocks: int


@dataclass(frozen=True)
class MobileViTConfig:
    layer1: int
    layer2: int
    stages: tuple[ViTStage, ViTStage, ViTStage]
    expand_ratio: int
    classifier_dropout: float


MOBILEVIT_CONFIGS = {
    "xxs": MobileViTConfig(16, 24, (ViTStage(48, 64, 128, 2), ViTStage(64, 80, 160, 4), ViTStage(80, 96, 192, 3)),
                           expand_ratio=2, classifier_dropout=0.1),
    "xs": MobileViTConfig(32, 48, (ViTStage(64, 96, 192, 2), ViTStage(80, 120, 240, 4), ViTStage(96, 144, 288, 3)),
                          expand_ratio=4, classifier_dropout=0.1),
    "s": MobileViTConfig(32, 64, (ViTStage(96, 144, 288, 2), ViTStage(128, 192, 384, 4),
                                  ViTStage(160, 240, 480, 3)), expand_ratio=4, classifier_dropout=0.1),
}


class MobileViT(Backbone):
    def __init__(self, variant: str = "s", num_classes: int = 1000, output_stride: int = 32):
        super().__init__()
        cfg = MOBILEVIT_CONFIGS[variant]
        self.variant = variant
        self.conv_1 = ConvLayer(3, 16, 3, stride=2)
        self.layer_1 = make_mv2_stage(16, cfg.layer1, 1, 1, cfg.expand_ratio)
        self.layer_2 = make_mv2_stage(cfg.layer1, cfg.layer2, 3, 2, cfg.expand_ratio)
        channels = cfg.layer2
        for index, stage in enumerate(cfg.stages, start=3):
            layer = nn.Sequential(
                InvertedResidual(channels, stage.out_channels, stride=stage_stride(index, output_stride),
                                 expand_ratio=cfg.expand_ratio),
                MobileViTBlock(stage.out_channels, stage.transformer_dim, stage.ffn_dim, stage.blocks),
            )
            setattr(self, f"layer_{index}", layer)
            channels = stage.out_channels
        exp_channels = min(4 * channels, 960)
        self.conv_1x1_exp = ConvLayer(channels, exp_channels, 1)
        self.classifier = Classifier(exp_channels, num_classes, cfg.classifier_dropout)
        init_weights(self)
