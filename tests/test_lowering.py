"""The lowering pass on its own: exact, static, and free of what it promises to remove."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeformer_deploy.export.formats import GCC_FORMS
from edgeformer_deploy.export.lowering import (GCC_FORMULATIONS, ConcatZeroPad, GCCSpatialConv, GCCSpatialGroupedGemm,
                                               GCCSpatialMatMul, LoweredGCCBlock, MatMulLayerNorm, PairMulAdd, Relu6Mul,
                                               TanhSiLU, circulant, lower_model, pair_halves_order)
from edgeformer_deploy.models import GCCBlock, create_model
from edgeformer_deploy.models.edgeformer import circular_conv
from helpers import randomize_norms

FORMULATIONS = list(GCC_FORMS)


def test_cli_gcc_choices_are_the_lowering_formulations():
    assert tuple(GCC_FORMULATIONS) == GCC_FORMS


@pytest.fixture(scope="module")
def official_io(official_dir):
    return {name: (create_model(name, weights=official_dir / f"{name}.pt"),
                   torch.load(official_dir / f"{name}_io.pt", weights_only=True))
            for name in ("edgeformer_s", "mobilevit_s")}


@pytest.mark.parametrize("gcc", FORMULATIONS)
@pytest.mark.parametrize("name", ["edgeformer_s", "mobilevit_s"])
@pytest.mark.parametrize("imgsz", [256, 224])
def test_lowered_model_reproduces_official_logits(official_io, name, imgsz, gcc):
    model, io = official_io[name]
    with torch.no_grad():
        logits = lower_model(model, imgsz, gcc)(io[f"input_{imgsz}"])
    assert (logits - io[f"logits_{imgsz}"]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("imgsz", [256, 224])
def test_matmul_layer_norm_reproduces_official_logits(official_io, imgsz):
    """The int8 TFLite form of MobileViT's LayerNorms (centring and variance as matrix products, the affine
    folded into the next Linear) computes the official logits as closely as the native form."""
    model, io = official_io["mobilevit_s"]
    lowered = lower_model(model, imgsz, layer_norm="matmul")
    assert not [m for m in lowered.modules() if isinstance(m, nn.LayerNorm)]
    norms = [m for m in lowered.modules() if isinstance(m, MatMulLayerNorm)]
    assert len(norms) == 2 * (2 + 4 + 3) + 3 and sum(m.weight is not None for m in norms) == 3  # 3 blocks' last
    with torch.no_grad():
        logits = lowered(io[f"input_{imgsz}"])
    assert (logits - io[f"logits_{imgsz}"]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name", ["edgeformer_s", "mobilevit_s"])
def test_tanh_silu_reproduces_official_logits(official_io, name):
    """armv7's SiLU form, x/2 + x/2 * tanh(x/2), is SiLU: the lowered model still computes the official logits."""
    model, io = official_io[name]
    lowered = lower_model(model, 256, "matmul", layer_norm="native", silu="tanh")
    assert not [m for m in lowered.modules() if isinstance(m, nn.SiLU)] and any(
        isinstance(m, TanhSiLU) for m in lowered.modules())
    with torch.no_grad():
        assert (lowered(io["input_256"]) - io["logits_256"]).abs().max().item() <= 1e-4
        x = torch.linspace(-40, 40, 20001)
        assert (TanhSiLU()(x) - nn.functional.silu(x)).abs().max().item() <= 1e-7 * 40 * 2


def test_relu6_mul_hardswish_reproduces_official_logits(official_io):
    """int8 TFLite's HardSwish form, x * relu6(x + 3) with the 1/6 folded into the next 1x1 conv: every one of
    EdgeFormer-S's 18 HardSwishes (each GCC block's FFN and channel attention) has a conv after it, and the
    lowered model still computes the official logits."""
    model, io = official_io["edgeformer_s"]
    lowered = lower_model(model, 256, "conv", 16, hardswish="relu6_mul")
    forms = [m for m in lowered.modules() if isinstance(m, Relu6Mul)]
    assert not [m for m in lowered.modules() if isinstance(m, nn.Hardswish)]
    assert len(forms) == sum(isinstance(m, nn.Hardswish) for m in model.modules()) == 18
    assert all(m.scale == 1 for m in forms)
    with torch.no_grad():
        assert (lowered(io["input_256"]) - io["logits_256"]).abs().max().item() <= 1e-4
        x = torch.linspace(-10, 10, 20001)
        assert (Relu6Mul()(x) - nn.functional.hardswish(x)).abs().max().item() <= 1e-6
        alone = lower_model(nn.Sequential(nn.Conv2d(3, 4, 1), nn.Hardswish()), 8, hardswish="relu6_mul")
        assert isinstance(alone[1], Relu6Mul) and alone[1].scale == 1 / 6  # nothing to fold into: keeps the 1/6


def test_pair_mul_add_reproduces_official_logits(official_io):
    """armv7's form of the channel-adaptive grouped 1x1 conv with two inputs per output: products and a sum
    of the two halves of its input, whose channels the GCC stack upstream was reordered to deliver. It
    replaces exactly EdgeFormer-S's three (XS has one input per group, H three), and the lowered model still
    computes the official logits — in every GCC formulation, which the reordering touches differently."""
    model, io = official_io["edgeformer_s"]
    lowered = lower_model(model, 256, "matmul", pair_conv="mul_add")
    pairs = [m for m in lowered.modules() if isinstance(m, PairMulAdd)]
    assert len(pairs) == 3 and all(p.halves for p in pairs)
    as_conv = lower_model(model, 256, "conv", 16, pair_conv="mul_add")
    assert all(p.halves for p in as_conv.modules() if isinstance(p, PairMulAdd))
    as_gemm = lower_model(model, 256, "gemm", pair_conv="mul_add")
    assert all(p.halves for p in as_gemm.modules() if isinstance(p, PairMulAdd))
    for other in ("edgeformer_xs", "edgeformer_h"):
        assert not any(isinstance(m, PairMulAdd) for m in lower_model(create_model(other), 256,
                                                                       pair_conv="mul_add").modules())
    torch.manual_seed(0)
    conv, x = nn.Conv2d(8, 4, 1, groups=4), torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        assert (lowered(io["input_256"]) - io["logits_256"]).abs().max().item() <= 1e-4
        assert (as_conv(io["input_256"]) - io["logits_256"]).abs().max().item() <= 1e-4
        assert (as_gemm(io["input_256"]) - io["logits_256"]).abs().max().item() <= 1e-4
        assert (PairMulAdd(conv)(x) - conv(x)).abs().max().item() <= 1e-6
        order = pair_halves_order(8)
        halves = PairMulAdd(conv, halves=True)(x[:, order])
        assert order.tolist() == [0, 2, 4, 6, 1, 3, 5, 7] and (halves - conv(x)).abs().max().item() <= 1e-6


@pytest.mark.parametrize("name", ["edgeformer_s", "mobilevit_s"])
def test_concat_zero_pad_reproduces_official_logits(official_io, name):
    """armv7 int8's form of a strided conv's zero padding: zero rows and columns concatenated around the map,
    then the conv unpadded — the five stride-2 3x3 convs of both models (stem and the down-sampling
    depthwise convs; stride-1 convs keep their padding), and the official logits still."""
    model, io = official_io[name]
    lowered = lower_model(model, 256, "matmul", strided_pad="concat")
    pads = [m for m in lowered.modules() if isinstance(m, ConcatZeroPad)]
    assert len(pads) == 5 and all(p.conv.padding == (0, 0) and p.conv.stride == (2, 2) for p in pads)
    assert all(m.padding == (0, 0) or m.stride == (1, 1) for m in lowered.modules() if isinstance(m, nn.Conv2d))
    torch.manual_seed(0)
    conv, x = nn.Conv2d(4, 6, 3, 2, 1), torch.randn(2, 4, 10, 10)
    with torch.no_grad():
        assert (lowered(io["input_256"]) - io["logits_256"]).abs().max().item() <= 1e-4
        reference = conv(x)
        assert (ConcatZeroPad(conv)(x) - reference).abs().max().item() <= 1e-6


def test_gcc_formulation_per_map_size(official_io):
    """``conv_upto``: the GCCs on maps up to that size take the depthwise-conv form, the others the MatMul
    (armv7: the 8x8 maps, BENCHMARKS.md); the model still computes the official logits."""
    model, io = official_io["edgeformer_s"]
    lowered = lower_model(model, 256, "matmul", conv_upto=8)
    forms = {(type(b.spatial).__name__, b.spatial.along_h.size if hasattr(b.spatial, "along_h")
              else b.spatial.left.shape[-1]) for b in lowered.modules() if isinstance(b, LoweredGCCBlock)}
    assert forms == {("GCCSpatialMatMul", 32), ("GCCSpatialMatMul", 16), ("GCCSpatialConv", 8)}
    with torch.no_grad():
        assert (lowered(io["input_256"]) - io["logits_256"]).abs().max().item() <= 1e-4


def test_matmul_layer_norm_is_layer_norm():
    torch.manual_seed(0)
    norm = nn.LayerNorm(24)
    nn.init.normal_(norm.weight), nn.init.normal_(norm.bias)
    x = torch.randn(3, 7, 24) * 5 + 2
    with torch.no_grad():
        assert (MatMulLayerNorm(norm)(x) - norm(x)).abs().max().item() < 1e-5


@pytest.mark.parametrize("gcc", FORMULATIONS)
@pytest.mark.parametrize("name", ["edgeformer_xs", "edgeformer_h", "mobilevit_xxs"])
def test_lowering_is_exact_for_other_variants(name, gcc):
    torch.manual_seed(0)
    model = randomize_norms(create_model(name))
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        reference, lowered = model(x), lower_model(model, 256, gcc)(x)
    assert reference.abs().max() > 0.5  # logits large enough for the comparison to mean something
    assert ((lowered - reference).abs().max() / reference.abs().max()).item() < 1e-5


@pytest.mark.parametrize("gcc", FORMULATIONS)
def test_lowered_structure(gcc):
    model = create_model("edgeformer_s")
    lowered = lower_model(model, 224, gcc)
    kinds = {type(m) for m in lowered.modules()}
    assert not kinds & {nn.BatchNorm2d, nn.Dropout, GCCBlock}
    blocks = [m for m in lowered.modules() if isinstance(m, LoweredGCCBlock)]
    assert len(blocks) == 2 + 4 + 3
    # 224 / 8 = 28: instance kernels are resized from the 32/16/8 meta kernels once, at lowering time
    first = blocks[0].spatial
    if gcc == "conv":
        assert isinstance(first, GCCSpatialConv)
        assert first.along_h.convs[0].weight.shape == (192, 1, 28, 1)
        assert first.along_w.convs[0].weight.shape == (192, 1, 1, 28)
    elif gcc == "matmul":
        assert isinstance(first, GCCSpatialMatMul) and first.left.shape == (192, 28, 28)
    else:  # one dense 28 x 28 group per channel, along H and along W
        assert isinstance(first, GCCSpatialGroupedGemm)
        assert first.along_h.groups == first.along_w.groups == 192
        assert first.along_h.weight.shape == first.along_w.weight.shape == (192 * 28, 28, 1, 1)
    # position embeddings only in the first block of a stage: a bias map there, a plain bias elsewhere
    assert blocks[0].bias_map.shape == (1, 192, 28, 28) and blocks[1].bias_map is None
    assert any(isinstance(m, GCCBlock) for m in model.modules())  # the original is untouched


@pytest.mark.parametrize("dim", [2, 3])
def test_circulant_matrix_is_the_circular_convolution(dim):
    torch.manual_seed(1)
    x = torch.randn(1, 5, 7, 7)
    kernel = torch.randn(5, 1, 7, 1) if dim == 2 else torch.randn(5, 1, 1, 7)
    expected = circular_conv(x, kernel, dim)
    matrix = circulant(kernel, left=dim == 2)
    got = torch.matmul(matrix, x) if dim == 2 else torch.matmul(x, matrix)
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("name", ["ssd_edgeformer_s", "deeplabv3_edgeformer_s", "deeplabv3_mobilevit_s"])
def test_lowering_detectors_and_segmenters_is_exact(name):
    """In float64 the deploy form (GCC as convolutions, folded BNs, the ASPP pooling branch as a per-image
    bias of the projection) computes the training form's numbers to rounding."""
    from edgeformer_deploy.export.lowering import LoweredASPP

    torch.manual_seed(0)
    model = randomize_norms(create_model(name)).double().eval()
    x = torch.rand(1, 3, 256, 256, dtype=torch.float64)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the deploy modules are created in float64 too
    try:
        lowered = lower_model(model, 256)
    finally:
        torch.set_default_dtype(previous)
    with torch.no_grad():
        reference, got = model(x), lowered(x)
    reference, got = (reference, got) if isinstance(reference, tuple) else ((reference,), (got,))
    for r, g in zip(reference, got):
        assert r.abs().max() > 0.1 and ((g - r).abs().max() / r.abs().max()).item() < 1e-10
    assert any(isinstance(m, LoweredASPP) for m in lowered.modules()) == name.startswith("deeplab")
