"""What the benchmark ran on: CPU, board, kernel, Python, affinity; and the process's resident memory.

Standard library only (board side); every probe is best effort and returns None when the OS hides it.
"""
from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Optional

# ARM "CPU part" ids (implementer 0x41) -> core name, for /proc/cpuinfo without a "model name"
ARM_PARTS = {
    0xc07: "Cortex-A7", 0xc09: "Cortex-A9", 0xc0d: "Cortex-A17", 0xc0e: "Cortex-A17", 0xc0f: "Cortex-A15",
    0xd03: "Cortex-A53", 0xd04: "Cortex-A35", 0xd05: "Cortex-A55", 0xd07: "Cortex-A57", 0xd08: "Cortex-A72",
    0xd09: "Cortex-A73", 0xd0a: "Cortex-A75", 0xd0b: "Cortex-A76", 0xd0d: "Cortex-A77", 0xd41: "Cortex-A78",
    0xd44: "Cortex-X1", 0xd46: "Cortex-A510", 0xd47: "Cortex-A710", 0xd48: "Cortex-X2", 0xd4d: "Cortex-A715",
}

# backend name (Backend.name) -> (distribution, module) for its version
BACKEND_PACKAGES = {"onnxruntime": ("onnxruntime", "onnxruntime"),
                    "ai-edge-litert": ("ai-edge-litert", "ai_edge_litert"),
                    "tflite-runtime": ("tflite-runtime", "tflite_runtime"),
                    "tensorflow": ("tensorflow", "tensorflow"),
                    "rknn-toolkit-lite2": ("rknn-toolkit-lite2", "rknnlite")}


def _read(path: str) -> Optional[str]:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def cpu_model(cpuinfo: Optional[str] = None) -> Optional[str]:
    """"Intel(R) Xeon(R) …" on x86; "4x Cortex-A55 + 4x Cortex-A76" on ARM (from the CPU part ids)."""
    text = _read("/proc/cpuinfo") if cpuinfo is None else cpuinfo
    if not text:
        return platform.processor() or None
    names, parts, hardware = [], [], None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "model name" and value:
            names.append(value)
        elif key == "cpu part" and value:
            try:
                parts.append(ARM_PARTS.get(int(value, 16), f"part {value}"))
            except ValueError:
                pass
        elif key == "hardware" and value:
            hardware = value
    if parts and (not names or all(n.startswith("ARMv") for n in names)):
        counts: Dict[str, int] = {}
        for part in parts:
            counts[part] = counts.get(part, 0) + 1
        return " + ".join(f"{n}x {part}" for part, n in counts.items())
    if names:
        return names[0]
    return hardware or platform.processor() or None


def board_model() -> Optional[str]:
    """The device-tree model ("Radxa ROCK 5B", "Rockchip RK3288 Tinker Board"), when the kernel has one."""
    text = _read("/proc/device-tree/model")
    return text.strip("\x00\n ") or None if text else None


def affinity() -> Optional[List[int]]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def package_version(distribution: str, module: Optional[str] = None) -> Optional[str]:
    loaded = sys.modules.get(module) if module else None
    version = getattr(loaded, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def backend_version(backend_name: str) -> Optional[str]:
    distribution, module = BACKEND_PACKAGES.get(backend_name, (backend_name, None))
    return package_version(distribution, module)


def describe(label: Optional[str] = None) -> dict:
    """The ``system`` object of a result document."""
    import numpy as np

    from .. import __version__

    board = board_model()
    cpu = cpu_model()
    return {
        "label": label or board or f"{cpu or 'unknown CPU'} ({platform.machine()})",
        "board": board,
        "cpu_model": cpu,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "os": _os_name(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "edgeformer_deploy": __version__,
    }


def _os_name() -> Optional[str]:
    text = _read("/etc/os-release")
    for line in (text or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip().strip('"') or None
    return platform.platform() or None


# -- memory ----------------------------------------------------------------------------------------
def _status_kib(field: str) -> Optional[int]:
    for line in (_read("/proc/self/status") or "").splitlines():
        if line.startswith(field + ":"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1])
    return None


def peak_rss() -> tuple:
    """(peak resident set size of this process in bytes, source): VmHWM from /proc/self/status, else
    getrusage's ru_maxrss (KiB on Linux, bytes on macOS); (None, None) when neither exists."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024, "VmHWM"
    try:
        import resource
    except ImportError:
        return None, None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (maxrss if sys.platform == "darwin" else maxrss * 1024), "ru_maxrss"


def current_rss() -> Optional[int]:
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else None
