"""``edgeformer-bench --emulate armv7|aarch64``: an ARM cost proxy without a board.

The benchmark runner runs unchanged inside an emulated Debian bookworm board (``scripts/arm/make_board.sh``,
the same sysroots as ``tests/test_arm_boards.py``) under Debian's *dynamic* ``qemu-user``
(``qemu-arm`` / ``qemu-aarch64`` — the ``-static`` builds cannot load plugins) with the counting TCG
plugin ``qemu/insn_count.c``, built here with gcc. The runner marks each timed inference
(``marker.counted_region``, ``EDGEFORMER_INSN_MARKERS=1``); the plugin counts the guest instructions the
inference's thread executes between the marks. With one runtime thread, ``PYTHONHASHSEED=0`` and no
address randomisation the model's work counts the same in every run; the little that varies (CPython
specialising the timed loop's own code during the first runs, clock reads: a few thousand instructions)
is reported as the ``spread``. So a few runs suffice, and the counts are the number to compare:
wall-clock times under emulation measure the emulator, not an ARM core.

Needs a source checkout (the board scripts), gcc and qemu-user (``apt-get install qemu-user gcc``), plus
what the board scripts need the first time (network, ``qemu-user-static``, ``debian-archive-keyring``).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..errors import EdgeformerError
from . import marker

PACKAGE_DIR = Path(__file__).resolve().parents[1]        # .../edgeformer_deploy
PLUGIN_DIR = Path(__file__).resolve().parent / "qemu"
PLUGIN_SOURCES = ("insn_count.c", "qemu_plugin_api.h")
GCC_FLAGS = ("-shared", "-fPIC", "-O2", "-fvisibility=hidden", "-Wall")
INSTALL_HINT = "apt-get install qemu-user gcc"
DEFAULT_WARMUP, DEFAULT_RUNS = 1, 3
LATENCY_NOTE = ("wall-clock times under --emulate are those of the qemu emulator on this host, not of an ARM "
                "core: compare instructions per inference")


class EmulationError(EdgeformerError):
    """--emulate cannot run here (tools, board or guest run failed)."""


@dataclass(frozen=True)
class Arch:
    name: str          # what --emulate takes
    board: str         # make_board.sh's board name
    qemu: str          # dynamic qemu-user binary (loads TCG plugins)
    cpu: str           # qemu CPU model, as the board's run-python uses it
    formats: tuple     # artifact suffixes the board has a runtime for


ARCHES = {
    "armv7": Arch("armv7", "armhf", "qemu-arm", "cortex-a15", (".tflite",)),
    "aarch64": Arch("aarch64", "aarch64", "qemu-aarch64", "cortex-a76", (".tflite", ".onnx")),
}
EMULATE_CHOICES = tuple(ARCHES)


# -- host tools and caches ------------------------------------------------------------------------
def arm_cache() -> Path:
    """The boards' cache, exactly as make_board.sh computes it."""
    if os.environ.get("EDGEFORMER_ARM_CACHE"):
        return Path(os.environ["EDGEFORMER_ARM_CACHE"]).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(base) / "edgeformer-deploy" / "arm").resolve()


def make_board_script() -> Path:
    script = PACKAGE_DIR.parent / "scripts" / "arm" / "make_board.sh"
    if not script.is_file():
        raise EmulationError("--emulate needs a source checkout of edgeformer-deploy (scripts/arm/make_board.sh "
                             "builds the emulated boards); this one is installed without it")
    return script


def check_tools(arch: Arch) -> None:
    missing = [tool for tool in ("gcc", arch.qemu) if shutil.which(tool) is None]
    if missing:
        raise EmulationError(f"--emulate {arch.name} needs {' and '.join(missing)} (Debian's dynamic qemu-user "
                             f"binaries load TCG plugins, the -static ones cannot): {INSTALL_HINT}")


def check_artifacts(paths: Sequence[Path], arch: Arch) -> None:
    for path in paths:
        if path.suffix.lower() == ".onnx" and ".onnx" not in arch.formats:
            raise EmulationError(f"{path}: no onnxruntime for 32-bit ARM, so --emulate {arch.name} runs TFLite "
                                 "artifacts only (edgeformer-export --format tflite)")
        if path.suffix.lower() not in arch.formats:
            raise EmulationError(f"{path}: --emulate {arch.name} runs {' / '.join(arch.formats)} artifacts")


def plugin_sha256() -> str:
    """Identity of the plugin: sha256 over its sources and the compiler flags."""
    digest = hashlib.sha256()
    for name in PLUGIN_SOURCES:
        digest.update(name.encode() + b"\0" + (PLUGIN_DIR / name).read_bytes() + b"\0")
    digest.update(" ".join(GCC_FLAGS).encode())
    return digest.hexdigest()


def build_plugin(cache: Optional[Path] = None) -> Path:
    """Compile ``insn_count.c`` once per source hash into ``<arm cache>/plugins``; returns the .so."""
    if shutil.which("gcc") is None:
        raise EmulationError(f"building the instruction-counting plugin needs gcc: {INSTALL_HINT}")
    out_dir = (cache or arm_cache()) / "plugins"
    target = out_dir / f"insn_count-{plugin_sha256()[:16]}.so"
    if target.is_file():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        built = Path(tmp) / target.name
        result = subprocess.run(["gcc", *GCC_FLAGS, "-o", str(built), str(PLUGIN_DIR / "insn_count.c")],
                                capture_output=True, text=True)
        if result.returncode != 0:
            first = (result.stderr.strip().splitlines() or ["?"])[0]
            raise EmulationError(f"gcc cannot build the instruction-counting plugin: {first}")
        os.replace(built, target)  # atomic: concurrent builders produce the same file
    return target


def qemu_version(qemu: str) -> str:
    result = subprocess.run([qemu, "--version"], capture_output=True, text=True)
    found = re.search(r"version (\S+)", result.stdout)
    return found.group(1) if found else result.stdout.strip().splitlines()[0] if result.stdout.strip() else "?"


def find_board(arch: Arch, timeout: float = 1800) -> Path:
    """Build or reuse the board (cached by make_board.sh: an unchanged board returns at once)."""
    script = make_board_script()
    try:
        result = subprocess.run(["bash", str(script), arch.board], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EmulationError(f"building the emulated {arch.board} board took over {timeout:.0f} s") from None
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if "ERROR" in line] or result.stderr.splitlines()
        raise EmulationError(f"cannot build the emulated {arch.board} board: "
                             f"{errors[-1].strip() if errors else 'make_board.sh failed'}")
    root = Path(result.stdout.strip().splitlines()[-1])
    if not (root / "usr" / "bin" / "python3.11").exists():
        raise EmulationError(f"{root} is not a board (no usr/bin/python3.11)")
    return root


def board_cpu(root: Path, arch: Arch) -> str:
    """The CPU model the board's own run-python uses (QEMU_CPU overrides it, as there)."""
    if os.environ.get("QEMU_CPU"):
        return os.environ["QEMU_CPU"]
    try:
        found = re.search(r'QEMU_CPU:-([\w.-]+)\}', (root / "run-python").read_text())
    except OSError:
        found = None
    return found.group(1) if found else arch.cpu


# -- one emulated run -----------------------------------------------------------------------------
def guest_command(arch: Arch, root: Path, cpu: str, plugin: Path, counts: Path, args: Sequence[str],
                  profile: Optional[Path] = None) -> list[str]:
    for path in (plugin, counts, profile):
        if "," in str(path):
            raise EmulationError(f"{path}: qemu's -plugin option cannot take a path with a comma")
    plugin_arg = (f"{plugin},out={counts},begin={marker.BEGIN_FD & 0xFFFFFFFF:#x},"
                  f"end={marker.END_FD & 0xFFFFFFFF:#x}" + (f",profile={profile}" if profile else ""))
    command = [shutil.which(arch.qemu) or arch.qemu, "-L", str(root), "-cpu", cpu, "-plugin", plugin_arg,
               str(root / "usr" / "bin" / "python3.11"), *map(str, args)]
    return no_aslr() + command


def no_aslr() -> list[str]:
    """``setarch ARCH -R``: the same addresses in every run. CPython's attribute cache and object-keyed sets
    hash addresses, so with address randomisation the counts move by a few instructions per inference."""
    setarch = shutil.which("setarch")
    if setarch and subprocess.run([setarch, platform.machine(), "-R", "true"], capture_output=True).returncode == 0:
        return [setarch, platform.machine(), "-R"]
    return []


def guest_env(pythonpath: Path, root: Path) -> dict:
    """Nothing of the host's Python setup: PYTHONPATH holds the edgeformer_deploy package only; one
    thread; fixed string hashing."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "LC_ALL": "C.UTF-8",
            "PYTHONPATH": str(pythonpath), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
            marker.ENV: "1", "QEMU_LD_PREFIX": str(root),
            # no idle BLAS/OpenMP worker threads (numpy's OpenBLAS spins a while after starting its pool)
            "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Region:
    """One counted region (one timed inference) as the plugin reports it."""
    instructions: int    # executed by the thread that ran the inference (the count)
    other_threads: int   # executed meanwhile by every other guest thread (not counted)
    threads: int         # guest threads alive when the region began


def read_counts(path: Path) -> list[Region]:
    """Plugin output -> one :class:`Region` per closed region, in order."""
    regions = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            own, others, threads = line.split()[:3]
            regions.append(Region(int(own), int(others), int(threads)))
    return regions


def run_guest(arch: Arch, root: Path, cpu: str, plugin: Path, args: Sequence[str], timeout: Optional[float] = None,
              profile: bool = False):
    """Run ``python3.11 ARGS`` on the board under the plugin -> (CompletedProcess, regions, seconds), and with
    ``profile`` a fourth item: ``(per-region blocks, guest memory map)`` for ``profile.py``."""
    with tempfile.TemporaryDirectory(prefix="edgeformer-emulate-") as tmp:
        pythonpath = Path(tmp) / "pythonpath"
        pythonpath.mkdir()
        (pythonpath / "edgeformer_deploy").symlink_to(PACKAGE_DIR, target_is_directory=True)
        counts, blocks, maps = Path(tmp) / "regions.txt", Path(tmp) / "blocks.txt", Path(tmp) / "maps.txt"
        env = guest_env(pythonpath, root)
        if profile:
            env[marker.MAPS_ENV] = str(maps)
        started = time.monotonic()
        try:
            result = subprocess.run(guest_command(arch, root, cpu, plugin, counts, args, blocks if profile else None),
                                    capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise EmulationError(f"the emulated {arch.name} run took over {timeout:.0f} s") from None
        seconds = time.monotonic() - started
        regions = read_counts(counts) if counts.is_file() else []
        if not profile:
            return result, regions, seconds
        from .profile import read_maps, read_profile

        profiled = (read_profile(blocks) if blocks.is_file() else [], read_maps(maps) if maps.is_file() else [])
    return result, regions, seconds, profiled


def _guest_failure(arch: Arch, result: subprocess.CompletedProcess) -> EmulationError:
    crashed = re.search(r"uncaught target signal (\d+) \(([^)]*)\)", result.stderr)
    if crashed:
        return EmulationError(f"on the emulated {arch.name} board the runtime crashed ({crashed.group(2)}, signal "
                              f"{crashed.group(1)}) and took the runner with it: run the artifacts one at a time "
                              "to see which one")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    detail = (errors or lines or [f"exit code {result.returncode}"])[-1]
    if detail.startswith("error: "):
        detail = detail[len("error: "):]
    return EmulationError(f"on the emulated {arch.name} board: {detail}")


# -- the benchmark --------------------------------------------------------------------------------
def summarize(regions: Sequence[Region]) -> dict:
    """One artifact's counted regions -> the report's ``instructions`` entry."""
    counts = [r.instructions for r in regions]
    return {"per_inference": int(statistics.median_low(counts)) if counts else None,
            "min": min(counts, default=None), "max": max(counts, default=None), "runs": len(counts),
            "deterministic": bool(counts) and min(counts) == max(counts),
            "spread": (max(counts) - min(counts)) / min(counts) if counts and min(counts) else None,
            "counts": counts, "other_threads_max": max((r.other_threads for r in regions), default=None)}


def attach_instructions(report: dict, regions: Sequence[Region]) -> None:
    """Give each artifact record its ``instructions`` (the plugin's regions matched to artifacts through
    ``timed_order``), with ``ratio_to_baseline`` against the report's baseline artifact."""
    order = report.get("timed_order") or []
    artifacts = report["artifacts"]
    if len(order) != len(regions):
        raise EmulationError(f"the runner timed {len(order)} inferences but the plugin counted {len(regions)} "
                             "regions: cannot match instruction counts to artifacts")
    per_artifact: dict = {}
    for index, region in zip(order, regions):
        per_artifact.setdefault(index, []).append(region)
    for record in artifacts:
        record["instructions"] = summarize(per_artifact.get(record.get("index"), []))
    baseline = next((r["instructions"]["per_inference"] for r in artifacts
                     if r.get("index") == report.get("baseline")), None)
    for record in artifacts:
        ipi = record["instructions"]["per_inference"]
        record["instructions"]["ratio_to_baseline"] = (round(ipi / baseline, 5) if baseline and ipi is not None
                                                       else None)


def attach_profiles(report: dict, blocks: Sequence[dict], maps: Sequence, root: Path) -> None:
    """Give each artifact record its ``profile`` from the plugin's per-region blocks (matched like the
    counts, through ``timed_order``). The blocks of a region must add up to its count exactly."""
    from .profile import Symbolizer, summarize_profile

    order = report.get("timed_order") or []
    if len(blocks) != len(order) or not maps:
        raise EmulationError(f"--profile: the plugin profiled {len(blocks)} regions of {len(order)} timed inferences"
                             + ("" if maps else " and the guest's memory map is missing"))
    symbolizer = Symbolizer(maps, root)
    for record in report["artifacts"]:
        mine = [region for index, region in zip(order, blocks) if index == record.get("index")]
        if not mine:
            continue
        counts = record["instructions"]["counts"]
        if [sum(region.values()) for region in mine] != counts:
            raise EmulationError(f"--profile: the profiled blocks of {record.get('path')} do not add up to its "
                                 "instruction counts")
        record["profile"] = summarize_profile(mine, symbolizer)


def default_label(arch: Arch, cpu: str) -> str:
    return f"emulated {arch.name} ({arch.qemu} -cpu {cpu})"


def run_emulated(paths: Sequence, arch_name: str, warmup: int = DEFAULT_WARMUP, runs: int = DEFAULT_RUNS,
                 threads: Optional[int] = None, cpus: Optional[str] = None, backend: str = "auto",
                 label: Optional[str] = None, timeout: Optional[float] = None,
                 log: Optional[Callable[[str], None]] = None, profile: bool = False) -> dict:
    """Run the benchmark runner (``python -m edgeformer_deploy.bench.cli``) on the emulated ``arch_name``
    board with one runtime thread, and count the guest instructions of every timed inference.

    Returns the runner's result document (its wall-clock fields are the emulator's) with ``instructions``
    in each artifact record and an ``emulation`` section; with ``profile`` each record also gets a
    ``profile`` (instructions by kernel family and by function, ``profile.py``)."""
    if arch_name not in ARCHES:
        raise EmulationError(f"--emulate takes {' or '.join(ARCHES)} (got {arch_name!r})")
    arch = ARCHES[arch_name]
    if threads not in (None, 1):
        raise EmulationError(f"--emulate counts the instructions of one runtime thread: drop --threads {threads} "
                             "(or use --threads 1)")
    paths = [Path(p).resolve() for p in paths]
    check_artifacts(paths, arch)
    check_tools(arch)
    if profile:
        from .profile import tools_available

        missing = tools_available()
        if missing:
            raise EmulationError(f"--profile reads the boards' symbol tables with binutils: {missing} missing "
                                 "(apt-get install binutils)")
    plugin = build_plugin()
    root = find_board(arch)
    cpu = board_cpu(root, arch)
    if log is not None:
        log(f"emulated {arch.name} board ({arch.qemu} -cpu {cpu}): {len(paths)} artifact{'s' * (len(paths) != 1)} × "
            f"(1 first + {warmup} warm-up + {runs} timed) inferences, one thread, instructions counted "
            "(20–60 s per inference at 256×256)")
    with tempfile.TemporaryDirectory(prefix="edgeformer-emulate-json-") as tmp:
        out = Path(tmp) / "result.json"
        args = ["-m", "edgeformer_deploy.bench.cli", "--warmup", str(warmup), "--runs", str(runs), "--threads", "1",
                "--json", str(out), "--no-rss", "--backend", backend, "--label", label or default_label(arch, cpu)]
        if cpus:
            args += ["--cpus", cpus]
        args += [str(p) for p in paths]  # options first: a click group stops at its first argument
        result, regions, seconds, *profiled = run_guest(arch, root, cpu, plugin, args, timeout, profile=profile)
        # exit code 1 with a document = some artifact failed: its row says why. The runner creates the file
        # before measuring, so an empty one means it died (the runtime crashed)
        if not out.is_file() or out.stat().st_size == 0:
            raise _guest_failure(arch, result)
        report = json.loads(out.read_text())
    attach_instructions(report, regions)
    if profile:
        attach_profiles(report, *profiled[0], root)
    report["emulation"] = {
        "arch": arch.name, "board": arch.board, "qemu": f"{arch.qemu} {qemu_version(arch.qemu)}", "cpu": cpu,
        "plugin_sha256": plugin_sha256(), "threads": 1, "pythonhashseed": 0,
        "guest_threads_max": max((r.threads for r in regions), default=None),
        "other_threads_instructions_max": max((r.other_threads for r in regions), default=None),
        "timed_inferences": len(regions), "wall_seconds": round(seconds, 1),
        "latency_meaningful": False, "note": LATENCY_NOTE,
    }
    return report


def emulation_note(report: dict) -> str:
    """The line printed under the result table of an emulated run."""
    emulation = report.get("emulation") or {}
    spread = [a["instructions"]["spread"] for a in report.get("artifacts", [])
              if (a.get("instructions") or {}).get("spread") is not None]
    same = ("identical in every run" if spread and max(spread) == 0 else
            f"run-to-run spread up to {max(spread):.2e}" if spread else "no timed runs")
    return (f"emulated {emulation.get('arch')} ({emulation.get('qemu')}, -cpu {emulation.get('cpu')}): "
            f"instructions/inference counted by the QEMU plugin, {same}; {LATENCY_NOTE}")


# -- the CLI's side (edgeformer-bench --emulate, edgeformer-bench compare --emulate) -----------------
def check_format(arch_name: str, fmt: str) -> None:
    """``compare --emulate``: refuse a format the board cannot run before exporting anything."""
    arch = ARCHES[arch_name]
    if f".{fmt.split('_')[0]}" not in arch.formats:
        if fmt.startswith("onnx"):
            raise EmulationError(f"no onnxruntime for 32-bit ARM, so --emulate {arch.name} runs TFLite artifacts "
                                 "only: use --format tflite")
        raise EmulationError(f"--emulate {arch.name} runs {' / '.join(arch.formats)} artifacts, not {fmt}")


def _given(name: str) -> bool:
    """Whether the user set option ``name`` (the emulated defaults replace the board defaults otherwise)."""
    import click
    from click.core import ParameterSource

    ctx = click.get_current_context(silent=True)
    source = ctx.get_parameter_source(name) if ctx is not None else None
    return source not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)


def run_emulated_command(artifacts: Sequence, arch_name: str, *, warmup: int, runs: int, threads: Optional[int],
                         cpus: Optional[str], backend: str = "auto", label: Optional[str] = None,
                         profile: bool = False) -> dict:
    """``edgeformer-bench … --emulate ARCH``: defaults --warmup 1 --runs 3 (counts are deterministic)."""
    import click

    warmup = warmup if _given("warmup") else DEFAULT_WARMUP
    runs = runs if _given("runs") else DEFAULT_RUNS
    return run_emulated(artifacts, arch_name, warmup=warmup, runs=runs, threads=threads, cpus=cpus, backend=backend,
                        label=label, log=lambda message: click.echo(message, err=True), profile=profile)
