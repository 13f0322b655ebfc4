"""The one table of export formats: name -> how to build the artifact and how to run it for verification."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class ExportFormat:
    name: str
    description: str
    # (job, lowered onnx path, staging dir) -> artifact path, extra manifest fields
    build: Callable | None
    # (artifact, job) -> callable(NCHW float32 batch) -> logits
    runner: Callable[..., Callable[[np.ndarray], np.ndarray]]
    input_layout: str = "NCHW"
    gcc_default: str = "conv"  # GCC formulation, chosen per format by measurement (BENCHMARKS.md)
    gcc_taps_default: int | None = None  # cut depthwise GCC kernels into chunks of at most this many taps
    static_batch_only: bool = False
    requires: tuple[str, ...] = field(default_factory=tuple)


def _onnx_runner(path: Path, job) -> Callable[[np.ndarray], np.ndarray]:
    from .onnx_format import onnx_runner

    return onnx_runner(path, None if job.dynamic_batch else job.batch)


def _tflite_build(job, onnx_path, staging, log):
    from .tflite_format import build

    return build(job, onnx_path, staging, log)


def _tflite_runner(path: Path, job) -> Callable[[np.ndarray], np.ndarray]:
    from .tflite_format import VERIFY_ENV, VERIFY_RUNTIME, tflite_runner

    return tflite_runner(path, job, runtime=VERIFY_RUNTIME, env_name=VERIFY_ENV)


def _rknn_build(job, onnx_path, staging, log):
    from .rknn_format import build

    return build(job, onnx_path, staging, log)


def _rknn_runner(path: Path, job) -> Callable[[np.ndarray], np.ndarray]:
    from .rknn_format import simulator_runner

    return simulator_runner(path, job)


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat("onnx", "ONNX (lowered, static shapes) for onnxruntime", build=None,
                         runner=_onnx_runner, requires=("onnx", "onnxruntime", "onnxsim"),
                         gcc_default="matmul"),  # circulant MatMul measured faster in onnxruntime
    # Every GCC is a DEPTHWISE_CONV_2D in TFLite, cut into <=16-tap chunks: XNNPACK's static depthwise conv
    # falls off a cliff above ~25 taps (32 taps: 10.4 ms, 16 taps: 0.32 ms for the same layer; BENCHMARKS.md).
    "tflite": ExportFormat("tflite", "TFLite fp32/fp16/int8 via onnx2tf (managed environment)",
                           build=_tflite_build, runner=_tflite_runner, input_layout="NHWC",
                           requires=("onnx", "onnxruntime", "onnxsim"), gcc_default="conv", gcc_taps_default=16,
                           static_batch_only=True),
    # The NPU's depthwise kernels are at most 16 taps per side; cutting them in the lowering gives the graph
    # rknn-toolkit2 would make itself (BENCHMARKS.md: RKNN), so what runs is what we verified in ONNX.
    "rknn": ExportFormat("rknn", "RKNN fp16/int8 for Rockchip NPUs via rknn-toolkit2 (managed environment)",
                         build=_rknn_build, runner=_rknn_runner, input_layout="NHWC",
                         requires=("onnx", "onnxruntime", "onnxsim"), gcc_default="conv", gcc_taps_default=16,
                         static_batch_only=True),
}
