"""``edgeformer-bench --emulate``: guest instructions per inference counted by the QEMU TCG plugin
(``edgeformer_deploy/bench/qemu/insn_count.c``) in the emulated ARM boards of ``test_arm_boards.py``.

Needs gcc and Debian's dynamic qemu-user (``qemu-arm``/``qemu-aarch64``) besides what the boards need;
EDGEFORMER_ARM_TESTS=0 skips the module like the board tests. The real artifact is EdgeFormer-S at 64x64
(a few seconds per emulated inference), run once per board with one warm-up and two timed runs.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from edgeformer_deploy.bench import emulate, marker
from helpers import assert_one_line_error, run_cli, script
from runtime_artifacts import ARM_IMGSZ, write_tiny_tflite

pytestmark = pytest.mark.skipif(os.environ.get("EDGEFORMER_ARM_TESTS") == "0",
                                reason="EDGEFORMER_ARM_TESTS=0: emulated ARM boards not wanted here")

ARCHES = ("armv7", "aarch64")

# Three marked regions: a Python loop of N additions each (N=0: just the markers).
WORKLOAD = """
import os, sys
n = int(sys.argv[1])
for _ in range(3):
    try: os.close({begin})
    except OSError: pass
    s = 0
    for i in range(n): s += i
    try: os.close({end})
    except OSError: pass
""".format(begin=marker.BEGIN_FD, end=marker.END_FD)


@pytest.fixture(scope="module")
def plugin() -> Path:
    return emulate.build_plugin()


@pytest.fixture(scope="module")
def boards() -> dict:
    try:
        return {name: emulate.find_board(emulate.ARCHES[name]) for name in ARCHES}
    except emulate.EmulationError as exc:
        pytest.fail(f"{exc} (set EDGEFORMER_ARM_TESTS=0 to skip ARM tests)")


def count_regions(arch: str, root: Path, plugin: Path, n: int) -> list[int]:
    spec = emulate.ARCHES[arch]
    result, regions, _ = emulate.run_guest(spec, root, emulate.board_cpu(root, spec), plugin,
                                           ["-c", WORKLOAD, str(n)], timeout=120)
    assert result.returncode == 0, result.stderr
    assert all(r.threads == 1 and r.other_threads == 0 for r in regions)
    return [r.instructions for r in regions]


def test_plugin_builds_once_per_source(tmp_path):
    first = emulate.build_plugin(tmp_path)
    assert first.is_file() and first.parent == tmp_path / "plugins"
    assert first.name == f"insn_count-{emulate.plugin_sha256()[:16]}.so"
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(first)], capture_output=True, text=True).stdout
    assert "qemu_plugin_install" in symbols and "qemu_plugin_version" in symbols
    mtime = first.stat().st_mtime_ns
    assert emulate.build_plugin(tmp_path) == first and first.stat().st_mtime_ns == mtime  # cached


@pytest.mark.parametrize("arch", ARCHES)
def test_counts_a_known_workload(boards, plugin, arch):
    empty = count_regions(arch, boards[arch], plugin, 0)
    loop = count_regions(arch, boards[arch], plugin, 2000)
    longer = count_regions(arch, boards[arch], plugin, 4000)
    assert len(empty) == len(loop) == len(longer) == 3
    # markers alone: the os.close() calls and a few bytecodes
    assert 0 < max(empty) < 50_000
    # the loop's cost grows linearly with its length (steady state: the last region of each run)
    per_iteration = (longer[-1] - loop[-1]) / 2000
    assert 50 < per_iteration < 2000
    assert abs((loop[-1] - empty[-1]) / 2000 - per_iteration) < 0.05 * per_iteration
    # same program, PYTHONHASHSEED=0: the very same counts
    assert count_regions(arch, boards[arch], plugin, 2000) == loop


def test_no_markers_without_the_switch(boards, plugin, monkeypatch):
    spec = emulate.ARCHES["aarch64"]
    env = emulate.guest_env
    monkeypatch.setattr(emulate, "guest_env", lambda *a: {**env(*a), marker.ENV: "0"})
    code = ("from edgeformer_deploy.bench.marker import counted_region\n"
            "with counted_region(): pass\n")
    result, regions, _ = emulate.run_guest(spec, boards["aarch64"], spec.cpu, plugin, ["-c", code], timeout=120)
    assert result.returncode == 0, result.stderr
    assert regions == []


def test_a_crashing_guest_is_one_clear_line(boards, plugin):
    """A runtime that crashes on the board (tflite-runtime 2.14 on armv7 did, on MobileViT-S int8) kills
    the runner: the error says so instead of failing to parse the half-written result."""
    spec = emulate.ARCHES["armv7"]
    result, _, _ = emulate.run_guest(spec, boards["armv7"], spec.cpu, plugin,
                                     ["-c", "import ctypes; ctypes.string_at(0)"], timeout=120)
    message = str(emulate._guest_failure(spec, result))
    assert "runtime crashed (Segmentation fault, signal 11)" in message and "\n" not in message


# -- the CLI --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_artifacts(tmp_path_factory, tflite_64) -> list[Path]:
    """EdgeFormer-S at 64x64 (official-code weights) exported to TFLite, and the tiny TFLite model."""
    return [tflite_64[("edgeformer_s", "fp32")], write_tiny_tflite(tmp_path_factory.mktemp("emulate-artifacts"))]


@pytest.fixture(scope="module")
def emulated_reports(boards, plugin, small_artifacts, tmp_path_factory) -> dict:
    """``edgeformer-bench ART… --emulate ARCH --profile --json`` on both boards at once (one core each). The
    profile changes the plugin's callbacks, not what it counts (``test_emulated_compare`` counts without it)."""
    out = tmp_path_factory.mktemp("emulate-reports")
    running = {arch: subprocess.Popen([script("edgeformer-bench"), *map(str, small_artifacts), "--emulate", arch,
                                       "--profile", "--warmup", "1", "--runs", "2", "--json", str(out / f"{arch}.json")],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for arch in ARCHES}
    reports = {}
    for arch, process in running.items():
        stdout, stderr = process.communicate(timeout=900)
        assert process.returncode == 0, stderr
        reports[arch] = (json.loads((out / f"{arch}.json").read_text()), stdout)
    return reports


@pytest.mark.parametrize("arch", ARCHES)
def test_emulated_bench_counts_instructions_per_inference(emulated_reports, arch):
    report, table = emulated_reports[arch]
    emulation = report["emulation"]
    assert emulation["arch"] == arch and emulation["latency_meaningful"] is False
    assert emulation["cpu"] == emulate.ARCHES[arch].cpu and emulation["qemu"].startswith(emulate.ARCHES[arch].qemu)
    assert emulation["plugin_sha256"] == emulate.plugin_sha256()
    assert report["settings"]["threads"] == 1 and report["settings"]["instruction_markers"] is True
    assert report["system"]["machine"] == {"armv7": "armv7l", "aarch64": "aarch64"}[arch]
    edgeformer, tiny = report["artifacts"]
    assert edgeformer["backend"] == {"armv7": "tflite-runtime", "aarch64": "ai-edge-litert"}[arch]
    for record in (edgeformer, tiny):
        instructions = record["instructions"]
        assert record["status"] == "ok" and instructions["runs"] == 2 and len(instructions["counts"]) == 2
        assert instructions["per_inference"] == min(instructions["counts"]) > 0
    # Deterministic up to the Python code around each inference, which runs a few thousand instructions
    # fewer per pass while CPython specialises it (and armv7's clock reads divide in software): nothing of
    # the model's own work varies, so the spread is a constant few thousand instructions.
    for record in (edgeformer, tiny):
        assert record["instructions"]["max"] - record["instructions"]["min"] < 20_000
    assert edgeformer["instructions"]["spread"] < 1e-3
    # EdgeFormer-S at 64x64 is ~0.1 G MACs: far more instructions than the tiny model
    assert edgeformer["instructions"]["per_inference"] > 20_000_000
    assert edgeformer["instructions"]["ratio_to_baseline"] == 1
    assert 0 < tiny["instructions"]["ratio_to_baseline"] < 0.2
    assert "instructions/inference" in table and "emulat" in table


@pytest.mark.parametrize("arch", ARCHES)
def test_emulated_profile_attributes_every_instruction_to_a_kernel(emulated_reports, arch):
    """--profile: the blocks of each inference add up to its count (checked by emulate.attach_profiles,
    which refuses otherwise) and land in the board's runtime library, in named functions."""
    report, table = emulated_reports[arch]
    edgeformer, tiny = report["artifacts"]
    library = {"armv7": "_pywrap_tensorflow_interpreter_wrapper.so", "aarch64": "libpywrap_litert_common.so"}[arch]
    for record in (edgeformer, tiny):
        profile = record["profile"]
        assert profile["regions"] == 2
        assert abs(profile["instructions_per_inference"] - record["instructions"]["per_inference"]) < 20_000
        assert sum(f["instructions"] for f in profile["families"]) == pytest.approx(
            profile["instructions_per_inference"], abs=len(profile["families"]))
        assert sum(f["share"] for f in profile["families"]) == pytest.approx(1)
    top = edgeformer["profile"]["top"]
    in_runtime = sum(row["share"] for row in top if row["library"] == library)
    assert in_runtime > 0.9, top[:5]
    assert all(not row["symbol"].startswith("+") for row in top[:5]), top[:5]  # named, not address ranges
    families = {f["family"]: f["share"] for f in edgeformer["profile"]["families"]}
    if arch == "aarch64":  # ai-edge-litert runs fp32 convolutions in XNNPACK's micro-kernels
        assert families.get("XNNPACK fp32", 0) > 0.5, families
    else:  # tflite-runtime 2.14's armv7 wheel has no XNNPACK: Eigen and TFLite's own kernels
        assert not any(name.startswith("XNNPACK") for name in families), families
        assert families.get("Eigen", 0) > 0.3, families
    assert "by kernel family and function" in table


def test_report_shows_the_profile(emulated_reports, tmp_path):
    paths = []
    for arch, (report, _) in emulated_reports.items():
        paths.append(tmp_path / f"{arch}.json")
        paths[-1].write_text(json.dumps(report))
    result = run_cli("edgeformer-bench", "report", *paths, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.count("### Where the instructions go") == 2
    assert re.search(r"\| XNNPACK fp32 \| [\d.]+ [kMG]? ?\(\d+\.\d%\)", md) and "| Eigen |" in md


def test_profile_needs_emulate(tmp_path):
    result = run_cli("edgeformer-bench", write_tiny_tflite(tmp_path), "--profile")
    assert result.returncode == 1 and "needs --emulate" in result.stderr and "Traceback" not in result.stderr


def test_emulated_compare(official_dir, tmp_path_factory, tmp_path):
    """The main job without a board: MobileViT-S and EdgeFormer-S exported to ONNX at 64x64 (into the folder
    test_arm_boards.py exports to, so either module reuses the other's exports) and counted on the aarch64
    board by onnxruntime, whose helper thread's sporadic work must stay out of the counts."""
    out = tmp_path / "result.json"
    result = run_cli("edgeformer-bench", "compare", "--format", "onnx", "--imgsz", ARM_IMGSZ, "--emulate", "aarch64",
                     "--weights-edgeformer", official_dir / "edgeformer_s.pt", "--weights-mobilevit",
                     official_dir / "mobilevit_s.pt", "--output", tmp_path_factory.getbasetemp() / "exports",
                     "--runs", "2", "--json", out, timeout=900)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    mobilevit, edgeformer = report["artifacts"]
    assert (mobilevit["model"], edgeformer["model"]) == ("mobilevit_s", "edgeformer_s")
    assert mobilevit["backend"] == edgeformer["backend"] == "onnxruntime"
    assert report["emulation"]["arch"] == "aarch64" and report["settings"]["warmup"] == 1
    # onnxruntime keeps a helper thread whose work is left out of the counts; the inference's own count
    # still varies a little with timing (usually 2e-4 run to run, seen once above 1e-3)
    for record in (mobilevit, edgeformer):
        assert record["instructions"]["runs"] == 2 and record["instructions"]["spread"] < 1e-2, record["instructions"]
    ratio = edgeformer["instructions"]["ratio_to_baseline"]
    assert ratio == pytest.approx(edgeformer["instructions"]["per_inference"]
                                  / mobilevit["instructions"]["per_inference"], rel=1e-4)
    assert 0.5 < ratio < 1.5
    assert "compare" in report and "instructions/inference" in result.stdout


def test_compare_refuses_onnx_on_armv7_before_exporting(tmp_path):
    result = run_cli("edgeformer-bench", "compare", "--emulate", "armv7", "--output", tmp_path / "exports")
    assert_one_line_error(result, "no onnxruntime for 32-bit ARM", "--format tflite")
    assert not (tmp_path / "exports").exists()


def test_armv7_refuses_onnx(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    result = run_cli("edgeformer-bench", model, "--emulate", "armv7")
    assert_one_line_error(result, "no onnxruntime for 32-bit ARM", "tflite")


def test_missing_tools_say_what_to_install(tmp_path):
    model = write_tiny_tflite(tmp_path)
    env = {**os.environ, "PATH": str(tmp_path / "empty")}  # no gcc, no qemu-user
    result = run_cli("edgeformer-bench", model, "--emulate", "aarch64", env=env)
    assert_one_line_error(result, "apt-get install qemu-user gcc")


def test_installed_without_the_board_scripts_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(emulate, "PACKAGE_DIR", tmp_path / "site-packages" / "edgeformer_deploy")
    with pytest.raises(emulate.EmulationError, match="needs a source checkout"):
        emulate.run_emulated([write_tiny_tflite(tmp_path)], "armv7")
