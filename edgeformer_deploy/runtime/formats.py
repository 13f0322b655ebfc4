"""The one torch-free table of artifact formats, read by the board runtime, the bench and the exporter
(``export/formats.py`` adds how to build each row). A new format is one row here plus its backend module.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple


@dataclass(frozen=True)
class Runtime:
    """One way to run a format on the board: a ``--backend`` name and the package behind it."""
    name: str  # what --backend takes and Backend.name reports
    distribution: str  # the pip distribution (its version goes into bench results)
    module: str  # the module that must import


@dataclass(frozen=True)
class FormatInfo:
    name: str
    suffix: str
    backend_module: str  # "module:Class" implementing runtime.backends.Backend
    runtimes: Tuple[Runtime, ...]  # in order of preference for --backend auto
    precisions: Tuple[str, ...]  # the first is the default
    input_layout: str
    options: Tuple[str, ...] = ()  # export options the format accepts beyond the common ones
    static_batch: bool = False  # batch 1 only

    def install_hint(self, machine: Optional[str] = None) -> str:
        """The package to install for this format on this board (by CPU architecture)."""
        machine = (machine or platform.machine()).lower()
        armv7 = machine.startswith("armv7") or machine in ("armhf", "arm")
        if self.name == "onnx":
            if armv7:
                return ("PyPI has no onnxruntime wheel for 32-bit ARM: export to TFLite "
                        "(edgeformer-export --format tflite) and pip install tflite-runtime==2.14.0 --no-deps")
            return "pip install onnxruntime"
        if self.name == "tflite":
            if armv7:
                return ("pip install tflite-runtime==2.14.0 --no-deps "
                        "(with Debian's python3-numpy: apt install python3-numpy python3-pil)")
            return "pip install ai-edge-litert"
        return ("install Rockchip's rknn-toolkit-lite2 wheel for your Python (aarch64 RK3566/RK3568/RK3588 "
                "boards) and the librknnrt.so runtime")


FORMATS: Dict[str, FormatInfo] = {info.name: info for info in (
    FormatInfo("onnx", ".onnx", "edgeformer_deploy.runtime.onnx_backend:OnnxBackend",
               (Runtime("onnxruntime", "onnxruntime", "onnxruntime"),), precisions=("fp32",),
               input_layout="NCHW", options=("batch", "dynamic_batch", "exporter", "opset")),
    FormatInfo("tflite", ".tflite", "edgeformer_deploy.runtime.tflite_backend:TFLiteBackend",
               (Runtime("ai-edge-litert", "ai-edge-litert", "ai_edge_litert"),
                Runtime("tflite-runtime", "tflite-runtime", "tflite_runtime"),
                Runtime("tensorflow", "tensorflow", "tensorflow")),
               precisions=("fp32", "fp16", "int8"), input_layout="NHWC", options=("data", "target", "opset"),
               static_batch=True),
    FormatInfo("rknn", ".rknn", "edgeformer_deploy.runtime.rknn_backend:RknnBackend",
               (Runtime("rknn-toolkit-lite2", "rknn-toolkit-lite2", "rknnlite"),),
               precisions=("fp16", "int8"), input_layout="NHWC", options=("data", "target", "analyze", "opset"),
               static_batch=True),
)}
SUFFIX_FORMATS = {info.suffix: name for name, info in FORMATS.items()}
# --backend names: "auto", every runtime, plus "tflite" (= the first TFLite interpreter that imports) and
# "rknn" (the old name of rknn-toolkit-lite2)
BACKEND_ALIASES = {"tflite": "tflite", "rknn": "rknn"}
BACKEND_FORMATS = {**{r.name: name for name, info in FORMATS.items() for r in info.runtimes},
                   **BACKEND_ALIASES}
BACKEND_CHOICES = ("auto",) + tuple(BACKEND_FORMATS)


def format_of(path: Path) -> Optional[FormatInfo]:
    """The format of an artifact file by its suffix, or None."""
    name = SUFFIX_FORMATS.get(Path(path).suffix.lower())
    return FORMATS[name] if name else None


def runtime_named(name: str) -> Optional[Runtime]:
    return next((r for info in FORMATS.values() for r in info.runtimes if r.name == name), None)
