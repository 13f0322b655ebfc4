"""The one table of export formats: name -> how to build the artifact and how to run it for verification."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str
    description: str
    # (job, lowered onnx path, staging dir) -> artifact path, extra manifest fields
    build: Callable | None
    # (artifact, job) -> callable(NCHW float32 batch) -> logits
    runner: Callable[..., Callable[[np.ndarray], np.ndarray]]
    input_layout: str = "NCHW"
    gcc_default: str = "conv"  # GCC formulation, chosen per format by measurement (BENCHMARKS.md)
    requires: tuple[str, ...] = field(default_factory=tuple)


def _onnx_runner(path: Path, job) -> Callable[[np.ndarray], np.ndarray]:
    from .onnx_format import onnx_runner

    return onnx_runner(path, None if job.dynamic_batch else job.batch)


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat("onnx", ".onnx", "ONNX (lowered, static shapes) for onnxruntime", build=None,
                         runner=_onnx_runner, requires=("onnx", "onnxruntime", "onnxsim"),
                         gcc_default="matmul"),  # circulant MatMul measured faster in onnxruntime
}
