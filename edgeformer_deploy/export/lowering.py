"""Lowering: swap the training-form modules for their static deploy form for one input size
(think timm's ``reparameterize_model``).  Every step is an exact rewrite:

* each GCC becomes slice + concat ("static" circular padding) + a depthwise ``Conv`` whose constant
  H x 1 or 1 x W kernel is the meta kernel interpolated once, here, not in the graph (or, optionally,
  the equivalent circulant MatMul);
* the pre-norm BatchNorm before a circular convolution folds into its kernel — exact because circular
  padding has no zero border that the BN shift would have reached;
* the position embeddings and BN shifts become one constant bias map added after the second convolution
  (the spatial path is affine, so that map is just the path evaluated at zero input);
* every Conv+BN pair, and every BN directly in front of a 1x1 conv, folds into the conv; dropout goes;
* DeepLab's image-pooling branch joins the ASPP projection as a per-image bias (no broadcast map);
* optionally (full-integer TFLite) each LayerNorm becomes matrix products — centring as ``x @ (I - 1/C)``,
  the variance as ``(c * c) @ 1/C`` — with its affine folded into the next Linear: int8 runtimes run
  those in their GEMM kernels, while the native form (MEAN over channels, broadcast SUB, SQUARED_DIFFERENCE)
  falls to slow int8 reference kernels (BENCHMARKS.md: ``--profile``);
* optionally (armv7 TFLite, whose LOGISTIC kernel is slow) SiLU becomes ``x/2 + x/2 * tanh(x/2)``;
* optionally (int8 TFLite on x86, where HARD_SWISH has only a scalar int8 kernel) HardSwish becomes
  ``x * relu6(x + 3)`` with its 1/6 folded into the next 1x1 conv;
* optionally the input channel order is reversed inside the stem convolution (its weights' input
  channels permuted — exact, the conv's zero padding is the same in every channel), so an artifact of a
  BGR-trained checkpoint takes RGB like every camera, decoder and NPU frame does.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import ExportError
from ..models.deeplab import ASPP
from ..models.edgeformer import GCCBlock, OuterFrame, circular_conv
from ..models.layers import ConvLayer
from ..models.mobilevit import MultiHeadAttention


def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """conv followed by bn -> one conv with bias."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = _clone_conv(conv, bias=True)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    conv_bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((conv_bias - bn.running_mean) * scale + bn.bias)
    return fused


def fold_bn_into_next_conv(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> nn.Conv2d:
    """bn followed by a 1x1 (possibly grouped) conv -> one conv with bias (exact: no padding)."""
    if conv.kernel_size != (1, 1):
        raise ExportError("a BatchNorm folds into the next conv only when that conv is 1x1")
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    out_c, in_per_group = conv.weight.shape[:2]
    group = torch.arange(out_c) // (out_c // conv.groups)
    in_index = group[:, None] * in_per_group + torch.arange(in_per_group)[None, :]
    fused = _clone_conv(conv, bias=True)
    fused.weight.copy_(conv.weight * scale[in_index][..., None, None])
    bias = conv.bias if conv.bias is not None else torch.zeros(out_c)
    fused.bias.copy_(bias + (conv.weight[..., 0, 0] * shift[in_index]).sum(1))
    return fused


def _clone_conv(conv: nn.Conv2d, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     conv.dilation, conv.groups, bias=bias)


class CircularPad(nn.Module):
    """Static circular padding for a kernel as long as the axis: append the first n-1 rows/columns.

    Exported as Slice + Concat with constant indices (no ``Pad(mode=wrap)``, which few runtimes support).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, x.narrow(self.dim, 0, x.shape[self.dim] - 1)), dim=self.dim)


def circulant(kernel: torch.Tensor, left: bool) -> torch.Tensor:
    """Per-channel circulant matrices (C, n, n) of a circular kernel (C, 1, n, 1) or (C, 1, 1, n).

    ``left``:  y = M @ x  convolves along H:  y[h] = sum_k K[k] x[(h + k) % n]  ->  M[h, j] = K[(j - h) % n]
    else:      y = x @ M  convolves along W:  M[j, w] = K[(j - w) % n]
    """
    k = kernel.reshape(kernel.shape[0], -1)
    n = k.shape[1]
    i = torch.arange(n)
    index = (i[None, :] - i[:, None]) % n  # index[a, b] = (b - a) % n
    return k[:, index] if left else k[:, index.T]


class CircularDepthwise(nn.Module):
    """Circular depthwise convolution along ``dim`` with a kernel as long as that axis, statically padded.

    With ``max_taps`` the kernel is cut into chunks of at most that many taps, each a 'valid' depthwise conv
    over its own slice of the padded input, summed — exactly the same result. XNNPACK runs a 16-tap
    depthwise conv ~30x faster than a 32-tap one, and Rockchip NPUs take at most 16 taps per side.
    """

    def __init__(self, kernel: torch.Tensor, dim: int, bias: torch.Tensor | None = None,
                 max_taps: int | None = None):
        super().__init__()
        self.dim, self.size = dim, kernel.shape[dim]
        self.pad = CircularPad(dim)
        taps = min(max_taps or self.size, self.size)
        self.starts = list(range(0, self.size, taps))
        channels = kernel.shape[0]
        self.convs = nn.ModuleList()
        for start in self.starts:
            piece = kernel.narrow(dim, start, min(taps, self.size - start))
            last = start == self.starts[-1]
            conv = nn.Conv2d(channels, channels, tuple(piece.shape[2:]), groups=channels,
                             bias=last and bias is not None)
            conv.weight.copy_(piece)
            if conv.bias is not None:
                conv.bias.copy_(bias)
            self.convs.append(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = self.pad(x)
        if len(self.convs) == 1:
            return self.convs[0](padded)
        out = None
        for start, conv in zip(self.starts, self.convs):
            taps = conv.kernel_size[self.dim - 2]
            part = conv(padded.narrow(self.dim, start, self.size + taps - 1))
            out = part if out is None else out + part
        return out


class GCCSpatialConv(nn.Module):
    """Both global circular convolutions of a GCC block as static-padded depthwise convolutions.

    The official block convolves one channel half along H then W and the other along W then H. Convolutions
    along different axes commute, so every channel is "H-conv then W-conv" with its own kernels: one
    depthwise conv per axis over all channels — no split, no concat.
    """

    def __init__(self, kernel_h: torch.Tensor, kernel_w: torch.Tensor, bias: torch.Tensor | None,
                 max_taps: int | None = None):
        super().__init__()
        self.along_h = CircularDepthwise(kernel_h, 2, None, max_taps)
        self.along_w = CircularDepthwise(kernel_w, 3, bias, max_taps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.along_w(self.along_h(x))


class GCCSpatialMatMul(nn.Module):
    """The same computation as circulant matrix products: y = L @ x @ R (no padding copies at all)."""

    def __init__(self, kernel_h: torch.Tensor, kernel_w: torch.Tensor, bias: torch.Tensor | None,
                 max_taps: int | None = None):  # noqa: ARG002 — a matrix product has no tap limit
        super().__init__()
        self.register_buffer("left", circulant(kernel_h, left=True).contiguous())
        self.register_buffer("right", circulant(kernel_w, left=False).contiguous())
        self.register_buffer("bias", None if bias is None else bias.reshape(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.matmul(torch.matmul(self.left, x), self.right)
        return y if self.bias is None else y + self.bias


class GCCSpatialGroupedGemm(nn.Module):
    """The circulant products as two grouped 1x1 convolutions, one group per channel: along H the map is
    viewed as (C*H) channels over W, along W as (C*W) channels over H. Each group is a dense H x H (W x W)
    product, which runs in a runtime's GEMM kernels instead of a depthwise one (int8 included, where
    BATCH_MATMUL has no optimised kernel)."""

    def __init__(self, kernel_h: torch.Tensor, kernel_w: torch.Tensor, bias: torch.Tensor | None,
                 max_taps: int | None = None):  # noqa: ARG002 — a product has no tap limit
        super().__init__()
        left, right = circulant(kernel_h, left=True), circulant(kernel_w, left=False)
        channels, n = left.shape[:2]
        self.size = n
        self.along_h = nn.Conv2d(channels * n, channels * n, 1, groups=channels, bias=False)
        self.along_w = nn.Conv2d(channels * n, channels * n, 1, groups=channels, bias=bias is not None)
        self.along_h.weight.copy_(left.reshape(channels * n, n, 1, 1))  # out (c, h) <- in (c, h')
        self.along_w.weight.copy_(right.transpose(1, 2).reshape(channels * n, n, 1, 1))  # out (c, w) <- (c, w')
        if bias is not None:
            self.along_w.bias.copy_(bias.repeat_interleave(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.along_h(x.reshape(b, c * h, w, 1)).reshape(b, c, h, w)
        y = y.transpose(2, 3).reshape(b, c * w, h, 1)
        return self.along_w(y).reshape(b, c, w, h).transpose(2, 3)


GCC_FORMULATIONS = {"conv": GCCSpatialConv, "matmul": GCCSpatialMatMul, "gemm": GCCSpatialGroupedGemm}


class LoweredGCCBlock(nn.Module):
    """Deploy form of :class:`GCCBlock` for a fixed ``size`` x ``size`` feature map."""

    def __init__(self, block: GCCBlock, size: int, formulation: str = "conv", max_taps: int | None = None):
        super().__init__()
        k_1h, k_1w, k_2h, k_2w = block.instance_kernels(size)
        s_1, s_2 = (bn.weight / torch.sqrt(bn.running_var + bn.eps) for bn in (block.pre_Norm_1, block.pre_Norm_2))
        # Channel half 1: H with k_1h (pre-norm scale folded in) then W with k_2w; half 2: W with k_1w (scaled)
        # then H with k_2h. Reordered as H then W for every channel.
        kernel_h = torch.cat((k_1h * s_1.reshape(-1, 1, 1, 1), k_2h))
        kernel_w = torch.cat((k_2w, k_1w * s_2.reshape(-1, 1, 1, 1)))
        bias_map = self._spatial_path_at_zero(block, size)  # (1, 2*dim, size, size)
        # Without position embeddings the constant term is one value per channel: a plain conv bias.
        spread = (bias_map.amax(dim=(2, 3)) - bias_map.amin(dim=(2, 3))).abs().max()
        constant = not block.use_pe and bool(spread <= 1e-6 * (1 + bias_map.abs().max()))
        self.spatial = GCC_FORMULATIONS[formulation](kernel_h, kernel_w, bias_map[0, :, 0, 0] if constant else None,
                                                     max_taps)
        self.register_buffer("bias_map", None if constant else bias_map.clone())
        ffn = block.ffn
        self.ffn = nn.Sequential(fold_bn_into_next_conv(ffn[0], ffn[1]), ffn[2], ffn[4])
        fc = block.ca.fc
        self.ca_pool = block.ca.gap
        self.ca_fc = nn.Sequential(fuse_conv_bn(fc[0], fc[1]), fc[2], fuse_conv_bn(fc[3], fc[4]), fc[5])

    @staticmethod
    def _spatial_path_at_zero(block: GCCBlock, size: int) -> torch.Tensor:
        """The affine spatial path's constant term: the official computation on a zero input."""
        k_1h, k_1w, k_2h, k_2w = block.instance_kernels(size)
        zero = torch.zeros(1, block.dim, size, size)
        y_1, y_2 = zero, zero
        if block.use_pe:
            pe_1h, pe_1w, pe_2h, pe_2w = block.instance_pes(size)
            y_1, y_2 = y_1 + pe_1h, y_2 + pe_1w
        y_1, y_2 = circular_conv(block.pre_Norm_1(y_1), k_1h, 2), circular_conv(block.pre_Norm_2(y_2), k_1w, 3)
        if block.use_pe:
            y_1, y_2 = y_1 + pe_2w, y_2 + pe_2h
        return torch.cat((circular_conv(y_1, k_2w, 3), circular_conv(y_2, k_2h, 2)), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x + self.spatial(x)
        if self.bias_map is not None:
            out = out + self.bias_map
        y = self.ffn(out)
        return out + y * self.ca_fc(self.ca_pool(y))


class MatMulLayerNorm(nn.Module):
    """LayerNorm over the last axis as matrix products (exact up to float rounding). ``affine=False`` when
    its scale and shift were folded into the next Linear (``fold_affine_into``)."""

    def __init__(self, norm: nn.LayerNorm, affine: bool = True):
        super().__init__()
        (channels,) = norm.normalized_shape
        self.center = nn.Linear(channels, channels, bias=False)  # x - mean(x) = x @ (I - 1/C)
        self.mean = nn.Linear(channels, 1, bias=False)
        with torch.no_grad():
            self.center.weight.copy_(torch.eye(channels) - 1.0 / channels)
            self.mean.weight.fill_(1.0 / channels)
        self.eps = norm.eps
        self.register_buffer("weight", norm.weight.detach().clone() if affine else None)
        self.register_buffer("bias", norm.bias.detach().clone() if affine else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centered = self.center(x)
        y = centered * torch.rsqrt(self.mean(centered * centered) + self.eps)
        return y if self.weight is None else y * self.weight + self.bias


def fold_affine_into(norm: nn.LayerNorm, linear: nn.Linear) -> nn.Linear:
    """``linear(norm.weight * y + norm.bias)`` as one Linear of ``y``."""
    folded = nn.Linear(linear.in_features, linear.out_features)
    with torch.no_grad():
        folded.weight.copy_(linear.weight * norm.weight)
        folded.bias.copy_((linear.bias if linear.bias is not None else 0) + linear.weight @ norm.bias)
    return folded


def _lower_layer_norms(sequence: nn.Sequential) -> None:
    """In a pre-norm ``Sequential(LayerNorm, Linear | MultiHeadAttention, …)`` fold the affine into the next
    Linear; a LayerNorm with nothing to fold into keeps it."""
    children = list(sequence.children())
    for index, child in enumerate(children):
        if not isinstance(child, nn.LayerNorm) or not child.elementwise_affine:
            continue
        after = children[index + 1] if index + 1 < len(children) else None
        if isinstance(after, nn.Linear):
            sequence[index + 1] = fold_affine_into(child, after)
        elif isinstance(after, MultiHeadAttention):
            after.qkv_proj = fold_affine_into(child, after.qkv_proj)
        else:
            sequence[index] = MatMulLayerNorm(child, affine=True)
            continue
        sequence[index] = MatMulLayerNorm(child, affine=False)


def _lower_conv_layer(layer: ConvLayer) -> nn.Module:
    block = layer.block
    conv = fuse_conv_bn(block.conv, block.norm) if hasattr(block, "norm") else block.conv
    return nn.Sequential(conv, block.act) if hasattr(block, "act") else conv


def _lower_outer_frame(frame: OuterFrame) -> None:
    """Fold the BatchNorm closing the GCC stack into the 1x1 channel-adaptive conv after it."""
    final_bn = frame.spatial_global_rep[-1]
    if isinstance(final_bn, nn.BatchNorm2d):
        conv = frame.channel_adaptive.block.conv
        frame.channel_adaptive.block.conv = fold_bn_into_next_conv(final_bn, conv)
        frame.spatial_global_rep[-1] = nn.Identity()


class LoweredASPP(nn.Module):
    """Deploy form of DeepLab's ASPP: the image-pooling branch is constant over the map, so its share of the
    1x1 projection is one vector per image — ``project(cat(b0..b3, broadcast(p)))`` becomes
    ``conv_rest(cat(b0..b3)) + conv_pool(p)`` with ``conv_pool(p)`` added as a [B, C, 1, 1] bias (exact; the
    broadcast map, its Expand/Resize, and a quarter of the projection's MACs are gone)."""

    def __init__(self, aspp: ASPP):
        super().__init__()
        *spatial, pooling = aspp.convs
        self.branches = nn.ModuleList(spatial)
        self.pool = pooling.aspp_pool
        project = fuse_conv_bn(aspp.project.block.conv, aspp.project.block.norm)
        split = project.in_channels - project.in_channels // len(aspp.convs)
        self.conv_rest = nn.Conv2d(split, project.out_channels, 1)
        self.conv_rest.weight.copy_(project.weight[:, :split])
        self.conv_rest.bias.copy_(project.bias)
        self.conv_pool = nn.Conv2d(project.in_channels - split, project.out_channels, 1, bias=False)
        self.conv_pool.weight.copy_(project.weight[:, split:])
        self.act = aspp.project.block.act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rest = self.conv_rest(torch.cat([branch(x) for branch in self.branches], dim=1))
        return self.act(rest + self.conv_pool(self.pool(x)))


def feature_sizes(model: nn.Module, imgsz: int, types: tuple) -> dict[nn.Module, tuple]:
    """Input (H, W) of every module of ``types`` at ``imgsz`` (one dry forward pass with hooks)."""
    sizes: dict[nn.Module, tuple] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args: sizes.__setitem__(mod, tuple(args[0].shape[2:])))
             for m in model.modules() if isinstance(m, types)]
    try:
        model(torch.zeros(1, 3, imgsz, imgsz))
    finally:
        for hook in hooks:
            hook.remove()
    return sizes



def stem_conv(model: nn.Module) -> nn.Conv2d:
    """The convolution that reads the image: the first dense Conv2d with 3 input channels."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3 and module.groups == 1:
            return module
    raise ExportError("the model has no 3-channel stem convolution to fold the channel swap into")


@torch.no_grad()
def fold_channel_swap(model: nn.Module) -> None:
    """Make ``model`` take its input with the channel order reversed (RGB <-> BGR), in place."""
    conv = stem_conv(model)
    conv.weight.copy_(conv.weight.flip(1))


LAYER_NORMS = ("native", "matmul")
SILU_FORMS = ("native", "tanh")
HARDSWISH_FORMS = ("native", "relu6_mul")
PAIR_CONV_FORMS = ("conv", "mul_add")
STRIDED_PAD_FORMS = ("conv", "concat")


class PairMulAdd(nn.Module):
    """A 1x1 conv whose every output channel reads two input channels (``groups = out_channels``,
    ``in_channels = 2 * out_channels``: EdgeFormer-S's ``channel_adaptive``) as two products and a sum — the
    same function. tflite-runtime 2.14 on armv7 runs such a grouped CONV_2D in its reference kernel: 16.8 M
    instructions of EdgeFormer-S fp32 for 280 k multiply-adds (BENCHMARKS.md).

    ``halves``: the input arrives with its channels reordered as [the pairs' first channels | their second
    channels] (:func:`pair_halves_order`, applied upstream), so the pairs are two contiguous halves (one ONNX
    Split; stride-1 slices in TFLite, which take a memcpy path) instead of two stride-2 slices, which that
    runtime runs in a reference kernel (2.95 M instructions).
    """

    def __init__(self, conv: nn.Conv2d, halves: bool = False):
        super().__init__()
        weight = conv.weight[:, :, 0, 0]  # [C, 2]
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        self.halves = halves
        self.register_buffer("w_even", weight[:, 0].reshape(1, -1, 1, 1).clone())
        self.register_buffer("w_odd", weight[:, 1].reshape(1, -1, 1, 1).clone())
        self.register_buffer("bias", bias.reshape(1, -1, 1, 1).clone())

    @staticmethod
    def applies_to(module: nn.Module) -> bool:
        return (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.stride == (1, 1)
                and module.groups == module.out_channels and module.in_channels == 2 * module.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[1] // 2  # torch.split exports as one Split (chunk as two Slices)
        first, second = torch.split(x, [half, half], dim=1) if self.halves else (x[:, 0::2], x[:, 1::2])
        return first * self.w_even + (second * self.w_odd + self.bias)


def pair_halves_order(channels: int) -> torch.Tensor:
    """The channel order that puts every pair (2c, 2c + 1) of a :class:`PairMulAdd` into two halves."""
    return torch.cat((torch.arange(0, channels, 2), torch.arange(1, channels, 2)))


def _permute_out(conv: nn.Conv2d, order: torch.Tensor) -> None:
    conv.weight.data = conv.weight.data[order].clone()
    if conv.bias is not None:
        conv.bias.data = conv.bias.data[order].clone()


def _permute_gcc_block(block: "LoweredGCCBlock", order: torch.Tensor) -> None:
    """Reorder a lowered GCC block's channels (input and output alike; exact: every op of the block is
    per channel or a 1x1 conv over the channels)."""
    spatial = block.spatial
    if isinstance(spatial, GCCSpatialMatMul):
        spatial.left, spatial.right = spatial.left[order].clone(), spatial.right[order].clone()
        if spatial.bias is not None:
            spatial.bias = spatial.bias[:, order].clone()
    elif isinstance(spatial, GCCSpatialGroupedGemm):  # a channel is a group of `size` rows
        rows = (order[:, None] * spatial.size + torch.arange(spatial.size)).reshape(-1)
        for conv in (spatial.along_h, spatial.along_w):
            _permute_out(conv, rows)
    else:
        for conv in (*spatial.along_h.convs, *spatial.along_w.convs):
            _permute_out(conv, order)
    if block.bias_map is not None:
        block.bias_map = block.bias_map[:, order].clone()
    for first, last in ((block.ffn[0], block.ffn[2]), (block.ca_fc[0], block.ca_fc[2])):
        first.weight.data = first.weight.data[:, order].clone()
        _permute_out(last, order)


def _pair_conv_as_halves(frame: OuterFrame) -> None:
    """EdgeFormer's GCC stage feeds its channel-adaptive conv straight from the GCC stack, which starts at
    ``dim_adaptive``'s last 1x1 conv: reorder that conv's outputs and every GCC block so the conv's channel
    pairs become halves. Any other layout is left as it is."""
    conv = frame.channel_adaptive[0] if isinstance(frame.channel_adaptive, nn.Sequential) else frame.channel_adaptive
    source = frame.dim_adaptive[-1]
    blocks = [m for m in frame.spatial_global_rep if not isinstance(m, nn.Identity)]
    if not (PairMulAdd.applies_to(conv) and isinstance(source, nn.Conv2d)
            and blocks and all(isinstance(b, LoweredGCCBlock) for b in blocks)):
        return
    order = pair_halves_order(conv.in_channels)
    _permute_out(source, order)
    for block in blocks:
        _permute_gcc_block(block, order)
    pair = PairMulAdd(conv, halves=True)
    if isinstance(frame.channel_adaptive, nn.Sequential):
        frame.channel_adaptive[0] = pair
    else:
        frame.channel_adaptive = pair


class ConcatZeroPad(nn.Module):
    """The zero padding of a strided conv as constant zero rows and columns concatenated around the map (the
    same values). TensorFlow's SAME padding is asymmetric for stride 2, so onnx2tf writes PyTorch's symmetric
    padding of a stride-2 conv as a PAD op, which tflite-runtime 2.14 runs in int8 at ~17 instructions per
    element on armv7 (70 M of EdgeFormer-S int8; BENCHMARKS.md); int8 CONCATENATION is a row-wise memcpy."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.pad_h, self.pad_w = conv.padding
        self.conv = copy.deepcopy(conv)
        self.conv.padding = (0, 0)

    @staticmethod
    def applies_to(module: nn.Module) -> bool:
        return (isinstance(module, nn.Conv2d) and module.stride != (1, 1) and module.padding_mode == "zeros"
                and isinstance(module.padding, tuple) and module.padding != (0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_w:  # (static shapes once traced: the zeros are constants)
            side = torch.zeros(x.shape[0], x.shape[1], x.shape[2], self.pad_w, dtype=x.dtype)
            x = torch.cat((side, x, side), dim=3)
        if self.pad_h:
            side = torch.zeros(x.shape[0], x.shape[1], self.pad_h, x.shape[3], dtype=x.dtype)
            x = torch.cat((side, x, side), dim=2)
        return self.conv(x)


class TanhSiLU(nn.Module):
    """``x * sigmoid(x)`` as ``h + h * tanh(h)`` with ``h = x / 2`` (the same function): tflite-runtime 2.14
    on armv7 runs TANH in Eigen's vectorised kernel and LOGISTIC in a slower one of its own (BENCHMARKS.md)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = 0.5 * x
        return half + half * torch.tanh(half)


class Relu6Mul(nn.Module):
    """HardSwish ``x * relu6(x + 3) / 6`` as ``x * relu6(x + 3) * scale``: with ``scale = 1`` (the 1/6 folded
    into the next conv, :func:`_hardswish_as_relu6_mul`) an ADD with a fused RELU6 and a MUL, which XNNPACK
    runs in int8, where TFLite's int8 HARD_SWISH is a scalar loop off ARM (BENCHMARKS.md: x86 int8)."""

    def __init__(self, scale: float = 1 / 6):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * torch.clamp(x + 3, 0, 6)
        return y if self.scale == 1 else y * self.scale


def _hardswish_as_relu6_mul(sequence: nn.Sequential) -> None:
    """In a ``Sequential(…, Hardswish, Conv2d, …)`` fold the 1/6 into the conv's weights (exact: the conv is
    linear in its input and its bias is untouched); a HardSwish with no conv after it keeps the 1/6."""
    children = list(sequence.children())
    for index, child in enumerate(children):
        if not isinstance(child, nn.Hardswish):
            continue
        after = children[index + 1] if index + 1 < len(children) else None
        if isinstance(after, nn.Conv2d):
            folded = _clone_conv(after, bias=after.bias is not None)
            folded.weight.copy_(after.weight / 6)
            if after.bias is not None:
                folded.bias.copy_(after.bias)
            sequence[index], sequence[index + 1] = Relu6Mul(scale=1), folded
        else:
            sequence[index] = Relu6Mul()


@torch.no_grad()
def lower_model(model: nn.Module, imgsz: int, gcc: str = "conv", max_taps: int | None = None,
                swap_input_channels: bool = False, layer_norm: str = "native", silu: str = "native",
                pair_conv: str = "conv", conv_upto: int = 0, strided_pad: str = "conv",
                hardswish: str = "native") -> nn.Module:
    """A static deploy-form copy of ``model`` for ``imgsz`` x ``imgsz`` inputs (the original is untouched).

    ``gcc`` picks the formulation of the global circular convolutions: ``conv`` (static-padded depthwise
    convolutions) or ``matmul`` (circulant matrix products); both compute the same thing. ``max_taps`` cuts
    the depthwise kernels into chunks of at most that many taps (``conv`` only). ``swap_input_channels``
    folds an RGB <-> BGR swap into the stem convolution. ``layer_norm="matmul"`` writes every LayerNorm as
    matrix products (``MatMulLayerNorm``; for full-integer runtimes); ``silu="tanh"`` writes SiLU with tanh;
    ``pair_conv="mul_add"`` writes grouped 1x1 convs of two inputs per group as products (``PairMulAdd``).
    ``strided_pad="concat"`` writes the zero padding of strided convs as concatenated zeros (``ConcatZeroPad``).
    ``hardswish="relu6_mul"`` writes HardSwish as ``x * relu6(x + 3)``, the 1/6 in the next conv (``Relu6Mul``).
    ``conv_upto``: GCCs on maps of at most that many pixels per side take the ``conv`` formulation whatever
    ``gcc`` says (a per-size choice: on armv7 an 8x8 map is cheaper as a depthwise conv, BENCHMARKS.md).
    """
    if gcc not in GCC_FORMULATIONS:
        raise ExportError(f"unknown GCC formulation {gcc!r}; choose one of: {', '.join(GCC_FORMULATIONS)}")
    if layer_norm not in LAYER_NORMS:
        raise ExportError(f"unknown LayerNorm form {layer_norm!r}; choose one of: {', '.join(LAYER_NORMS)}")
    if silu not in SILU_FORMS:
        raise ExportError(f"unknown SiLU form {silu!r}; choose one of: {', '.join(SILU_FORMS)}")
    if pair_conv not in PAIR_CONV_FORMS:
        raise ExportError(f"unknown pair-conv form {pair_conv!r}; choose one of: {', '.join(PAIR_CONV_FORMS)}")
    if strided_pad not in STRIDED_PAD_FORMS:
        raise ExportError(f"unknown strided-pad form {strided_pad!r}; choose one of: {', '.join(STRIDED_PAD_FORMS)}")
    if hardswish not in HARDSWISH_FORMS:
        raise ExportError(f"unknown HardSwish form {hardswish!r}; choose one of: {', '.join(HARDSWISH_FORMS)}")
    model = copy.deepcopy(model).eval()
    if swap_input_channels:
        fold_channel_swap(model)
    sizes = feature_sizes(model, imgsz, (GCCBlock,))
    for frame in [m for m in model.modules() if isinstance(m, OuterFrame)]:
        _lower_outer_frame(frame)
    _replace(model, lambda m: LoweredGCCBlock(m, sizes[m][0], gcc if sizes[m][0] > conv_upto else "conv", max_taps)
             if isinstance(m, GCCBlock) else None)
    _replace(model, lambda m: LoweredASPP(m) if isinstance(m, ASPP) else None)
    _replace(model, lambda m: _lower_conv_layer(m) if isinstance(m, ConvLayer) else None)
    _replace(model, lambda m: nn.Identity() if isinstance(m, (nn.Dropout, nn.Dropout2d)) else None)
    if layer_norm == "matmul":
        for sequence in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
            _lower_layer_norms(sequence)
        _replace(model, lambda m: MatMulLayerNorm(m) if isinstance(m, nn.LayerNorm) else None)  # any left
    if silu == "tanh":
        _replace(model, lambda m: TanhSiLU() if isinstance(m, nn.SiLU) else None)
    if pair_conv == "mul_add":
        for frame in [m for m in model.modules() if isinstance(m, OuterFrame)]:
            _pair_conv_as_halves(frame)
        _replace(model, lambda m: PairMulAdd(m) if PairMulAdd.applies_to(m) else None)  # any others
    if strided_pad == "concat":
        _replace(model, lambda m: ConcatZeroPad(m) if ConcatZeroPad.applies_to(m) else None)
    if hardswish == "relu6_mul":
        for sequence in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
            _hardswish_as_relu6_mul(sequence)
        _replace(model, lambda m: Relu6Mul() if isinstance(m, nn.Hardswish) else None)  # any left
    return model


def _replace(module: nn.Module, swap) -> None:
    for name, child in module.named_children():
        new = swap(child)
        if new is not None:
            setattr(module, name, new)
        else:
            _replace(child, swap)
