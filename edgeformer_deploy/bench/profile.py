"""``edgeformer-bench --emulate ARCH --profile``: where an emulated inference spends its instructions.

The counting plugin (``qemu/insn_count.c``, ``profile=``) reports, per counted region, every translated
block the inference's thread executed (guest address, instructions, executions); the runner saves the
guest's memory map (``marker.MAPS_ENV``). Here each block is mapped to its shared library (the map) and to
the function containing it (the library's symbol table, read with binutils' ``nm``/``readelf``, which come
with the gcc that ``--emulate`` needs anyway), then functions are grouped into kernel families (XNNPACK int8
/ fp32 micro-kernels, TFLite's optimized and reference kernels, ruy, quantize/dequantize, …).

A library without symbols for a function (XNNPACK's micro-kernels are local symbols, stripped from some
wheels) shows as ``<library>+0x<offset>`` ranges: the attribution to the library stays exact.
"""
from __future__ import annotations

import bisect
import re
import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

TOP_SYMBOLS = 25
UNNAMED_BUCKET = 0x1000  # unnamed code is grouped in 4 KiB ranges of its library

# (family, pattern on the demangled symbol); first match wins. Names as the runtimes spell them:
# XNNPACK micro-kernels are C (xnn_qs8_gemm_minmax_..., xnn_f32_dwconv_...), TFLite kernels C++.
FAMILIES: Tuple[Tuple[str, "re.Pattern[str]"], ...] = tuple((name, re.compile(pattern)) for name, pattern in (
    ("XNNPACK int8", r"^xnn_(qs8|qc8|qd8|qu8|qs16|s8|u8)_"),
    ("XNNPACK fp16", r"^xnn_(f16|f32_f16|f16_f32)_"),
    ("XNNPACK fp32", r"^xnn_(f32|x32|x16|x8)_"),
    ("XNNPACK (setup)", r"^(xnn_|pthreadpool)"),
    ("quantize / dequantize", r"ops::builtin::(quantize|dequantize)::|(optimized|reference)_ops::(Dequantize|"
                              r"AffineQuantize|Requantize)|\bRequantize"),
    ("requantize (scalar)", r"MultiplyByQuantizedMultiplier"),
    ("TFLite reference kernels", r"reference_(integer_)?ops::"),
    ("TFLite optimized int8 kernels", r"optimized_integer_ops::"),
    ("TFLite optimized kernels", r"optimized_ops::"),
    ("ruy GEMM", r"^(void )?ruy::|\bruy::"),
    ("gemmlowp", r"gemmlowp::"),
    ("Eigen", r"Eigen"),
    ("TFLite builtin {op}", r"tflite::ops::builtin::(?P<op>\w+)::"),
    ("TFLite (other)", r"tflite::|TfLite"),
    ("onnxruntime", r"onnxruntime::|Ort|mlas|Mlas|MLAS"),
))


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    offset: int
    path: str


def read_profile(path: Path) -> List[Dict[int, int]]:
    """Plugin profile -> per region, {guest block address: instructions executed there}."""
    regions: List[Dict[int, int]] = []
    for line in path.read_text().splitlines():
        if line.startswith("region "):
            regions.append(defaultdict(int))
        elif line.strip() and not line.startswith("#") and regions:
            vaddr, n_insns, runs = line.split()
            regions[-1][int(vaddr, 16)] += int(n_insns) * int(runs)
    return [dict(region) for region in regions]


def read_maps(path: Path) -> List[Mapping]:
    """``/proc/self/maps`` of the guest -> its file-backed mappings, by start address."""
    mappings = []
    for line in path.read_text().splitlines():
        fields = line.split(None, 5)
        if len(fields) < 6 or not fields[5].startswith("/"):
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        mappings.append(Mapping(start, end, int(fields[2], 16), fields[5].strip()))
    return sorted(mappings, key=lambda m: m.start)


class Library:
    """One ELF file's load segments and function symbols (binutils on the host reads ARM ELF)."""

    def __init__(self, path: Path):
        self.path = path
        self.segments = self._segments(path)
        self.addresses, self.symbols = self._symbols(path)

    @staticmethod
    def _segments(path: Path) -> List[Tuple[int, int, int]]:
        out = _run(["readelf", "-lW", str(path)])
        segments = []
        for line in out.splitlines():
            fields = line.split()
            if fields[:1] == ["LOAD"]:
                offset, vaddr, _, filesz = (int(x, 16) for x in fields[1:5])
                segments.append((offset, vaddr, filesz))
        return segments

    @staticmethod
    def _symbols(path: Path) -> Tuple[List[int], List[Tuple[int, str]]]:
        entries = []
        for flags in (["-S", "-C", "--defined-only"], ["-D", "-S", "-C", "--defined-only"]):
            for line in _run(["nm", *flags, str(path)]).splitlines():
                fields = line.split(None, 3)
                # "address size type name": functions only (t/T/W), sized (not ARM's $a/$t/$d markers)
                if len(fields) == 4 and fields[2] in "tTwWiI" and not fields[3].startswith("$"):
                    entries.append((int(fields[0], 16) & ~1, int(fields[1], 16), fields[3]))  # &~1: Thumb bit
            if entries:
                break
        entries.sort()
        return [e[0] for e in entries], [(e[1], e[2]) for e in entries]

    def to_vaddr(self, file_offset: int) -> int:
        for offset, vaddr, filesz in self.segments:
            if offset <= file_offset < offset + filesz:
                return file_offset - offset + vaddr
        return file_offset

    def symbol(self, vaddr: int) -> Optional[str]:
        index = bisect.bisect_right(self.addresses, vaddr) - 1
        if index >= 0:
            size, name = self.symbols[index]
            if vaddr < self.addresses[index] + max(size, 1):
                return name
        return None


@lru_cache(maxsize=None)
def _library(path: str) -> Optional[Library]:
    try:
        return Library(Path(path))
    except (OSError, subprocess.CalledProcessError, ValueError):
        return None


def _run(command: Sequence[str]) -> str:
    return subprocess.run(list(command), capture_output=True, text=True, check=False).stdout


def family_of(symbol: str, library: str) -> str:
    for name, pattern in FAMILIES:
        found = pattern.search(symbol)
        if found:
            return name.format(**found.groupdict())
    if re.match(r"lib(m|c)[.-]", library) or library.startswith("ld-linux"):
        return "libc / libm"
    if "python" in library or library.endswith((".cpython-311-arm-linux-gnueabihf.so",
                                                  ".cpython-311-aarch64-linux-gnu.so")):
        return "Python / numpy"
    return "other"


class Symbolizer:
    def __init__(self, mappings: Sequence[Mapping], root: Optional[Path] = None):
        self.mappings = list(mappings)
        self.starts = [m.start for m in self.mappings]
        self.root = root

    def _file(self, guest_path: str) -> str:
        if Path(guest_path).is_file() or self.root is None:
            return guest_path
        return str(self.root / guest_path.lstrip("/"))

    def locate(self, address: int) -> Tuple[str, str]:
        """Guest address -> (library file name, function or ``+0x..`` range)."""
        index = bisect.bisect_right(self.starts, address) - 1
        if index < 0 or address >= self.mappings[index].end:
            return "[anonymous]", "(JIT or unmapped)"
        mapping = self.mappings[index]
        name = Path(mapping.path).name
        file_offset = address - mapping.start + mapping.offset
        library = _library(self._file(mapping.path))
        vaddr = library.to_vaddr(file_offset) if library else file_offset
        symbol = library.symbol(vaddr) if library else None
        return name, symbol or f"+{vaddr - vaddr % UNNAMED_BUCKET:#x}"


def tools_available() -> Optional[str]:
    """None when nm and readelf are here; else what is missing."""
    missing = [tool for tool in ("nm", "readelf") if shutil.which(tool) is None]
    return " and ".join(missing) or None


def summarize_profile(regions: Sequence[Dict[int, int]], symbolizer: Symbolizer, top: int = TOP_SYMBOLS) -> dict:
    """Blocks of an artifact's timed regions -> per-inference instructions by kernel family and by function."""
    per_function: Dict[Tuple[str, str], int] = defaultdict(int)
    for region in regions:
        for address, instructions in region.items():
            per_function[symbolizer.locate(address)] += instructions
    total = sum(per_function.values())
    runs = max(len(regions), 1)
    families: Dict[str, int] = defaultdict(int)
    rows = []
    for (library, symbol), instructions in per_function.items():
        family = family_of(symbol, library)
        families[family] += instructions
        rows.append({"library": library, "symbol": symbol, "family": family,
                     "instructions": instructions // runs, "share": instructions / total if total else 0.0})
    rows.sort(key=lambda row: -row["instructions"])
    return {
        "instructions_per_inference": total // runs, "regions": len(regions), "functions": len(rows),
        "families": sorted(({"family": name, "instructions": count // runs,
                             "share": count / total if total else 0.0} for name, count in families.items()),
                            key=lambda row: -row["instructions"]),
        "top": rows[:top],
    }
