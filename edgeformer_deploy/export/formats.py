"""The exporter's view of each format: the runtime's row (runtime/formats.py: suffix, backends, precisions,
options) plus how to build the artifact and how to run it for verification."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

from ..errors import ExportError
from ..runtime.formats import FORMATS as RUNTIME_FORMATS
from ..runtime.formats import FormatInfo


@dataclass
class BuildResult:
    """What a format's build hands back to the pipeline (the ONNX format's is the lowered ONNX itself)."""
    artifact: Path
    ops: Optional[dict] = None  # op census as the target runtime sees it (None: the ONNX census)
    input: Optional[dict] = None  # input spec as the runtime reports it (None: the ONNX one)
    outputs: Optional[List[dict]] = None  # output specs, in the ONNX output order (None: the ONNX ones)
    parity_limits: dict = field(default_factory=lambda: {"max_abs": 1e-4, "cosine": 0.99999})
    files: List[Path] = field(default_factory=list)  # reports kept beside the artifact
    versions: tuple = ()  # packages whose versions go into the manifest
    section: dict = field(default_factory=dict)  # the format's own manifest section, e.g. {"tflite": {…}}


# (artifact, job) -> callable(NCHW float32 batch) -> every output, in the ONNX output order
Runner = Callable[..., Callable[[np.ndarray], List[np.ndarray]]]


@dataclass(frozen=True)
class ExportFormat:
    info: FormatInfo
    description: str
    build: Optional[Callable]  # (job, lowered onnx path, staging dir, log) -> BuildResult
    runner: Runner
    gcc_default: str = "conv"  # GCC formulation, chosen per format by measurement (BENCHMARKS.md)
    gcc_taps_default: Optional[int] = None  # cut depthwise GCC kernels into chunks of at most this many taps
    requires: tuple = ("onnx", "onnxruntime", "onnxsim")
    # detectors: "rows" = the official (confidences, locations); "levels" = each head's conv map, laid out on
    # the board (runtime.detect.assemble_levels) — the NPU runs the row layout's Reshapes on its CPU otherwise
    detection_outputs: str = "rows"
    # LayerNorm form of full-integer artifacts (lowering.LAYER_NORMS): "matmul" where the int8 runtime runs
    # the native form in slow reference kernels (TFLite: BENCHMARKS.md, --profile)
    int8_layer_norm: str = "native"

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def input_layout(self) -> str:
        return self.info.input_layout

    @property
    def static_batch_only(self) -> bool:
        return self.info.static_batch


def _onnx_runner(path: Path, job):
    from .onnx_format import onnx_runner

    return onnx_runner(path, None if job.dynamic_batch else job.batch)


def _tflite_build(job, onnx_path, staging, log):
    from .tflite_format import build

    return build(job, onnx_path, staging, log)


def _tflite_runner(path: Path, job):
    from .tflite_format import VERIFY_ENV, VERIFY_KERNELS, VERIFY_RUNTIME, tflite_runner

    return tflite_runner(path, job, runtime=VERIFY_RUNTIME, env_name=VERIFY_ENV, kernels=VERIFY_KERNELS)


def _rknn_build(job, onnx_path, staging, log):
    from .rknn_format import build

    return build(job, onnx_path, staging, log)


def _rknn_runner(path: Path, job):
    from .rknn_format import simulator_runner

    return simulator_runner(path, job)


FORMATS: dict[str, ExportFormat] = {fmt.name: fmt for fmt in (
    ExportFormat(RUNTIME_FORMATS["onnx"], "ONNX (lowered, static shapes) for onnxruntime", build=None,
                 runner=_onnx_runner, gcc_default="matmul"),  # circulant MatMul measured faster in onnxruntime
    # Every GCC is a DEPTHWISE_CONV_2D in TFLite, cut into <=16-tap chunks: XNNPACK's static depthwise conv
    # falls off a cliff above ~25 taps (32 taps: 10.4 ms, 16 taps: 0.32 ms for the same layer; BENCHMARKS.md).
    ExportFormat(RUNTIME_FORMATS["tflite"], "TFLite fp32/fp16/int8 via onnx2tf (managed environment)",
                 build=_tflite_build, runner=_tflite_runner, gcc_default="conv", gcc_taps_default=16,
                 int8_layer_norm="matmul"),
    # The NPU's depthwise kernels are at most 16 taps per side; cutting them in the lowering gives the graph
    # rknn-toolkit2 would make itself (BENCHMARKS.md: RKNN), so what runs is what we verified in ONNX.
    ExportFormat(RUNTIME_FORMATS["rknn"], "RKNN fp16/int8 for Rockchip NPUs via rknn-toolkit2 (managed environment)",
                 build=_rknn_build, runner=_rknn_runner, gcc_default="conv", gcc_taps_default=16,
                 detection_outputs="levels"),
)}


# --calibration: int8 activation ranges (tflite_worker.mse_activation_ranges; RKNN: rknn_format.QUANTIZED_ALGORITHM)
CALIBRATIONS = ("minmax", "mse")

# --gcc: lowering.GCC_FORMULATIONS by name (here without torch, for the CLI and the job's validation)
GCC_FORMS = ("conv", "matmul", "gemm")


# what an artifact without a --target (or a target without an entry) gets: lowering.LAYER_NORMS (int8 formats:
# their int8_layer_norm), SILU_FORMS, PAIR_CONV_FORMS, STRIDED_PAD_FORMS, HARDSWISH_FORMS; manifests from before
# a field was recorded had its default
LOWERING_DEFAULTS = {"layer_norm": "native", "silu": "native", "pair_conv": "conv", "strided_pad": "conv",
                     "hardswish": "native"}


@dataclass(frozen=True)
class CpuTarget:
    """A TFLite artifact's CPU class (``--format tflite --target``): per precision, the GCC formulation and op
    forms measured cheapest there — on the ARM boards in emulated instructions per inference (EdgeFormer-S 256,
    official weights, one thread; BENCHMARKS.md: ARM kernels, ``edgeformer-bench --emulate --profile``), on
    x86-64 by latency and a perf profile on the host."""
    name: str
    runtime: str
    gcc: dict  # precision -> (formulation, max taps)
    measured: dict  # precision -> the measurement behind the choice, recorded in the manifest
    silu: dict = field(default_factory=dict)  # precision -> SiLU form (default: LOWERING_DEFAULTS)
    pair_conv: dict = field(default_factory=dict)  # precision -> pair-conv form
    strided_pad: dict = field(default_factory=dict)  # precision -> strided convs' zero-padding form
    hardswish: dict = field(default_factory=dict)  # precision -> HardSwish form
    conv_upto: dict = field(default_factory=dict)  # precision -> GCC maps up to this size as conv (lower_model)

    def choice(self, precision: str) -> tuple:
        return self.gcc.get(precision, self.gcc["fp32"])


TFLITE_TARGETS: dict[str, CpuTarget] = {t.name: t for t in (
    # int8: the circulant MatMul's int8 BATCH_MATMUL runs in TFLite's reference kernel (not XNNPACK), the same
    # products as grouped 1x1 convs run in XNNPACK's int8 GEMMs; fp16: XNNPACK cannot run the MatMul in fp16
    # arithmetic at all (tflite_format.FP16_ARITHMETIC_MATMUL). Chunks of <= 25 taps fit XNNPACK's unipass 25-tap
    # depthwise kernel (a 16-tap chunk wastes 9 of its 25 taps; a 32-tap kernel is an IGEMM)
    CpuTarget("aarch64", "ai-edge-litert 2.3 (XNNPACK)",
              gcc={"fp32": ("matmul", None), "fp16": ("conv", 25), "int8": ("gemm", None)},
              measured={"fp32": "Cortex-A76: matmul 720.0 M vs conv/16 taps 743.2 M, conv/25 734.7 M, conv/9 740.0 M "
                                 "instructions (floor 699.0 M)",
                        "fp16": "Cortex-A76, fp16 arithmetic: conv/25 taps 383.8 M vs conv/16 388.3 M, conv/9 386.2 M "
                                "instructions; gemm 380.7 M, not taken for 0.8 % (13.4 MB vs 10.6 MB); matmul does "
                                "not load in fp16 arithmetic (720.1 M in fp32)",
                        "int8": "Cortex-A76: gemm (grouped 1x1 convs) 228.8 M vs conv/25 taps 246.6 M, conv/16 "
                                "253.8 M, conv/9 253.4 M, unsplit 531.7 M, matmul 369.2 M instructions "
                                "(floor 216.2 M); HardSwish kept native: as ADD(RELU6) + MUL 244.5 M with conv/25, "
                                "but int8 gate cosine at 64 px 0.9944 -> 0.9924 (mse 0.9925 -> 0.9889)"}),
    CpuTarget("armv7", "tflite-runtime 2.14 (no XNNPACK: Eigen / gemmlowp kernels)",
              gcc={"fp32": ("matmul", None), "fp16": ("matmul", None), "int8": ("matmul", None)},
              measured={"fp32": "Cortex-A15: matmul 1.603 G vs conv/16 taps 1.660 G instructions (floor 1.560 G); "
                                 "with the 8x8 maps as conv 1,521.50 M vs all matmul 1,523.58 M, 16x16 too 1,530.10 M; "
                                 "the whole recipe with gemm 1.718 G vs 1.519 G (grouped CONV_2D: a reference kernel)",
                        "fp16": "fp32 arithmetic on armv7 (no FP16 unit): the fp32 choice",
                        "int8": "Cortex-A15: matmul 1.205 G vs conv/16 taps 1.240 G instructions (floor 1.138 G); "
                                "strided convs' padding as concatenated zeros and the channel-adaptive pairs as "
                                "MUL/ADD halves: 1.205 G -> 1.115 G; HardSwish kept native (a NEON kernel here): "
                                "1.115 G vs 1.122 G as ADD(RELU6) + MUL; gemm 1.425 G (reference ConvPerChannel)"},
              # float SiLU as tanh: EdgeFormer-S 1.603 G -> 1.538 G, MobileViT-S 2.044 G -> 1.973 G; the grouped
              # channel-adaptive convs (a reference kernel here) as slices + MUL/ADD: EdgeFormer-S 1.538 -> 1.524 G,
              # and with the GCC stack's channels reordered so those slices are halves (no stride-2 reference
              # STRIDED_SLICE): 1,521.50 -> 1,519.04 M. int8: the same pairs (reference ConvPerChannel 19.5 M -> 0)
              # and the stride-2 convs' PAD (int8 pad::EvalInt, 70 M) as CONCATENATIONs of zeros: 1.205 -> 1.115 G;
              # in fp32 that PAD is a memcpy and the concatenations cost more (1,519.04 -> 1,523.30 M)
              silu={"fp32": "tanh", "fp16": "tanh"},
              pair_conv={"fp32": "mul_add", "fp16": "mul_add", "int8": "mul_add"},
              conv_upto={"fp32": 8, "fp16": 8}, strided_pad={"int8": "concat"}),
    # x86 hosts (development machines, x86 edge boxes): TFLite's int8 HARD_SWISH is no XNNPACK op and its kernel
    # is NEON-only, a scalar loop here (32 % of EdgeFormer-S int8 on an AVX-512 VNNI host, perf); int8 GCC as
    # grouped 1x1 convs for the reason it is on aarch64 (XNNPACK's int8 GEMMs, no int8 BATCH_MATMUL kernel)
    CpuTarget("x86_64", "ai-edge-litert 2.3 (XNNPACK)",
              gcc={"fp32": ("matmul", None), "fp16": ("matmul", None), "int8": ("gemm", None)},
              measured={"fp32": "AMD EPYC, one thread, interleaved: matmul 19.96 ms vs gemm 20.35 ms, conv/16 taps "
                                 "20.87 ms",
                        "fp16": "fp32 arithmetic on x86: the fp32 choice",
                        "int8": "AMD EPYC with AVX-512 VNNI, one thread: gemm 8.18 ms vs conv/16 taps 8.74 ms (fp32 "
                                "21.35 ms); HardSwish as ADD(RELU6) + MUL 9.22 ms vs native 14.01 ms with conv/16"},
              hardswish={"int8": "relu6_mul"}),
)}
# boards by SoC: the RK3288 is the armv7 (Cortex-A17) one; the others have 64-bit cores (and x86 by its other names)
TFLITE_TARGET_ALIASES = {"rk3288": "armv7", "x86": "x86_64", "amd64": "x86_64", **{chip: "aarch64" for chip in (
    "rk3588", "rk3576", "rk3566", "rk3568", "rk3562", "rk3399", "rk3328")}}


def tflite_target(name: str) -> CpuTarget:
    key = TFLITE_TARGET_ALIASES.get(name.lower(), name.lower())
    if key not in TFLITE_TARGETS:
        raise ExportError(f"unknown TFLite --target {name!r}; choose one of {', '.join(TFLITE_TARGETS)} (or a chip: "
                          f"{', '.join(TFLITE_TARGET_ALIASES)})")
    return TFLITE_TARGETS[key]

