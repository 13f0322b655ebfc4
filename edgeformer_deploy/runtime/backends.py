"""Which runtime runs which artifact, and what to install when it is missing."""
from __future__ import annotations

import importlib
import platform
from typing import Callable

import numpy as np

from .artifact import SUFFIX_FORMATS, Artifact
from .errors import BackendMissing, PredictError

# backend name -> artifact format it runs
BACKEND_FORMATS = {"onnxruntime": "onnx", "tflite": "tflite", "ai-edge-litert": "tflite",
                   "tflite-runtime": "tflite", "tensorflow": "tflite", "rknn": "rknn"}
BACKEND_CHOICES = ("auto",) + tuple(BACKEND_FORMATS)


def install_hint(fmt: str, machine: str | None = None) -> str:
    """The package to install for ``fmt`` on this board (by CPU architecture)."""
    machine = (machine or platform.machine()).lower()
    armv7 = machine.startswith("armv7") or machine in ("armhf", "arm")
    if fmt == "onnx":
        if armv7:
            return ("PyPI has no onnxruntime wheel for 32-bit ARM: export to TFLite "
                    "(edgeformer-export --format tflite) and pip install tflite-runtime==2.14.0 --no-deps")
        return "pip install onnxruntime"
    if fmt == "tflite":
        if armv7:
            return ("pip install tflite-runtime==2.14.0 --no-deps "
                    "(with Debian's python3-numpy: apt install python3-numpy python3-pil)")
        return "pip install ai-edge-litert"
    return ("install Rockchip's rknn-toolkit-lite2 wheel for your Python (aarch64 RK3566/RK3568/RK3588 "
            "boards) and the librknnrt.so runtime")


def require(module: str, fmt: str):
    """Import ``module`` or fail with the one line saying what to install on this board."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BackendMissing(f"{module} is not installed — {install_hint(fmt)}") from None


def open_backend(artifact: Artifact, backend: str = "auto", threads: int | None = None,
                 npu_cores: str = "auto"):
    """Create the backend for ``artifact`` (``backend="auto"`` chooses by file format)."""
    fmt = SUFFIX_FORMATS[artifact.path.suffix.lower()]
    if backend not in BACKEND_CHOICES:
        raise PredictError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKEND_CHOICES)}")
    if backend != "auto" and BACKEND_FORMATS[backend] != fmt:
        raise PredictError(f"backend {backend} cannot run .{fmt} artifacts")
    if fmt == "onnx":
        from .onnx_backend import OnnxBackend

        return OnnxBackend(artifact.path, threads)
    if fmt == "tflite":
        from .tflite_backend import TFLiteBackend

        return TFLiteBackend(artifact.path, threads, interpreter=None if backend in ("auto", "tflite") else backend)
    from .rknn_backend import RknnBackend

    return RknnBackend(artifact, npu_cores)


def run_in_batches(run: Callable[[np.ndarray], np.ndarray], tensor: np.ndarray, batch: int | None) -> np.ndarray:
    """Run a fixed-batch model over any number of inputs: chunks of ``batch``, the last one padded by
    repeating its last item (``batch=None``: one call)."""
    if batch is None:
        return run(tensor)
    outputs = []
    for start in range(0, len(tensor), batch):
        chunk = tensor[start:start + batch]
        pad = batch - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        outputs.append(run(np.ascontiguousarray(chunk))[:batch - pad])
    return np.concatenate(outputs)
