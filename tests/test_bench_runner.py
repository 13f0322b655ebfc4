"""``edgeformer-bench ARTIFACT…``: the interleaved runner on real 64x64 exports — the JSON document against
SCHEMA.md, interleaving (timed_order), counted regions, failed rows, Ctrl-C, and no torch/matplotlib."""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgeformer_deploy.bench import marker
from edgeformer_deploy.bench.runner import BenchError, run_benchmark
from edgeformer_deploy.bench.schema import SCHEMA
from edgeformer_deploy.runtime import Predictor
from edgeformer_deploy.runtime.onnx_backend import OnnxBackend
from edgeformer_deploy.runtime.preprocess import SAMPLES_DIR
from helpers import assert_one_line_error, run_cli
from runtime_artifacts import REPO_ROOT, export_onnx, write_tiny_tflite

RUNS, WARMUP = 6, 2
BENCH = REPO_ROOT / "edgeformer_deploy" / "bench"


@pytest.fixture(scope="session")
def pair(tmp_path_factory, official_dir):
    """MobileViT-S (baseline) and EdgeFormer-S, official-code weights, ONNX at 64x64."""
    exports = tmp_path_factory.getbasetemp() / "exports"
    return [export_onnx(exports, official_dir, "mobilevit_s"), export_onnx(exports, official_dir, "edgeformer_s")]


@pytest.fixture(scope="module")
def cli_run(pair, tmp_path_factory):
    """One real CLI run: the pair plus an artifact without a manifest, pinned to core 0, one thread."""
    tmp = tmp_path_factory.mktemp("bench-cli")
    broken = tmp / "broken.onnx"
    broken.write_bytes(b"not a model")
    out = tmp / "result.json"
    result = run_cli("edgeformer-bench", *pair, broken, "--runs", RUNS, "--warmup", WARMUP, "--threads", 1,
                     "--cpus", "0", "--json", out, "--label", "test box")
    return result, json.loads(out.read_text()), broken


def documented_fields(section: str) -> set[str]:
    """Field names in the first column of the table under ``section`` in SCHEMA.md."""
    text = (BENCH / "SCHEMA.md").read_text()
    body = text.split(section, 1)[1].split("\n#", 1)[0]
    names = set()
    for line in body.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([a-z0-9_]+)`", line.split("|")[1]))
    return names


def test_document_matches_the_schema(cli_run):
    _, doc, _ = cli_run
    assert doc["schema"] == SCHEMA == "edgeformer-bench/1"
    top = documented_fields("## Top level")
    assert set(doc) == top - {"compare", "emulation"}, "top-level fields and SCHEMA.md differ"
    per_artifact = documented_fields("## `artifacts[i]`") - {"instructions", "profile", "postprocess_ms"}  # classifiers
    for artifact in doc["artifacts"]:
        if artifact["status"] == "ok":
            assert set(artifact) == per_artifact, set(artifact) ^ per_artifact
        else:
            assert set(artifact) <= per_artifact
    schema_text = (BENCH / "SCHEMA.md").read_text()
    for key in list(doc["system"]) + list(doc["settings"]):
        assert f"`{key}`" in schema_text, f"{key} is not documented"
    json.dumps(doc, allow_nan=False)  # strict JSON: no NaN/Infinity


def test_measurements_are_consistent(cli_run, pair):
    result, doc, _ = cli_run
    assert doc["interrupted"] is False and doc["baseline"] == 0 and doc["rounds_completed"] == RUNS
    assert doc["settings"]["affinity"] == [0] and doc["settings"]["threads"] == 1
    assert doc["system"]["label"] == "test box" and doc["system"]["python"]
    for artifact, path, model in zip(doc["artifacts"], pair, ("mobilevit_s", "edgeformer_s")):
        assert artifact["status"] == "ok" and artifact["error"] is None
        assert artifact["model"] == model and artifact["format"] == "onnx" and artifact["precision"] == "fp32"
        assert artifact["imgsz"] == 64 and artifact["batch"] == 1 and artifact["backend"] == "onnxruntime"
        assert artifact["backend_version"] and artifact["size_bytes"] == path.stat().st_size
        lat, samples = artifact["latency_ms"], artifact["samples_ms"]
        assert artifact["timed_runs"] == lat["n"] == len(samples) == RUNS
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert lat["min"] == pytest.approx(min(samples), abs=1e-3) and lat["max"] == pytest.approx(max(samples), abs=1e-3)
        assert lat["mean"] == pytest.approx(np.mean(samples), abs=1e-3)
        assert lat["std"] == pytest.approx(np.std(samples, ddof=1), abs=1e-3)
        assert artifact["throughput_ips"] == pytest.approx(1e3 / lat["mean"], rel=1e-3)
        assert artifact["load_ms"] > 0 and artifact["first_inference_ms"] > 0
        rss = artifact["rss"]
        assert rss["source"] in ("VmHWM", "ru_maxrss") and rss["runs"] == 4
        assert artifact["peak_rss_bytes"] == rss["peak_rss_bytes"] > rss["before_load_bytes"] > 0
        assert artifact["peak_rss_mib"] == pytest.approx(rss["peak_rss_bytes"] / 2**20, abs=0.1)
    # every inference gets the shipped photo, preprocessed as edgeformer-predict does
    for artifact, path in zip(doc["artifacts"], pair):
        assert artifact["sample_top1"] == int(np.argmax(Predictor(path).logits([SAMPLES_DIR / "chelsea.jpg"])[0]))
    base, ef = doc["artifacts"][0], doc["artifacts"][1]
    assert base["ratio_vs_baseline"] == {"median": 1.0, "p10": 1.0, "p90": 1.0, "rounds": RUNS}
    ratios = np.array(ef["samples_ms"]) / np.array(base["samples_ms"])
    summary = ef["ratio_vs_baseline"]
    assert summary["rounds"] == RUNS
    assert summary["median"] == pytest.approx(np.median(ratios), abs=2e-5)
    assert summary["p10"] == pytest.approx(np.percentile(ratios, 10), abs=2e-5)
    assert summary["p90"] == pytest.approx(np.percentile(ratios, 90), abs=2e-5)
    loop = doc["timed_loop"]
    assert loop["measured_ms"] == pytest.approx(sum(base["samples_ms"]) + sum(ef["samples_ms"]), abs=1e-2)
    assert loop["wall_ms"] >= loop["measured_ms"]


def test_interleaved_order(cli_run):
    _, doc, _ = cli_run
    assert doc["timed_order"] == [0, 1] * RUNS  # A B A B …; the failed artifact never runs


def test_failed_artifact_is_a_row_and_the_exit_code_says_so(cli_run):
    result, doc, broken = cli_run
    assert result.returncode == 1 and "Traceback" not in result.stderr
    row = doc["artifacts"][2]
    assert row["status"] == "failed" and row["index"] == 2 and row["path"] == str(broken)
    assert "no manifest" in row["error"] and "\n" not in row["error"]
    assert row["timed_runs"] == 0 and row["latency_ms"] is None and row["ratio_vs_baseline"] is None
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {row['error']}"]
    # the table on stdout: every artifact, the failed one marked
    assert "mobilevit_s_64.onnx" in result.stdout and "1 (baseline)" in result.stdout
    assert re.search(r"broken\.onnx\s+│ FAILED", result.stdout)


def test_every_timed_inference_is_one_counted_region(pair, monkeypatch):
    """With the markers on, the timed runs and only they run between BEGIN and END, in timed_order."""
    events = []
    state = {"open": False}

    def fake_close(fd):
        assert fd in (marker.BEGIN_FD, marker.END_FD)
        state["open"] = fd == marker.BEGIN_FD
        events.append("B" if state["open"] else "E")

    original_run = OnnxBackend.run

    def run(self, x):
        events.append("I" if state["open"] else "u")
        return original_run(self, x)

    monkeypatch.setenv(marker.ENV, "1")
    monkeypatch.setattr(marker, "_close", fake_close)
    monkeypatch.setattr(OnnxBackend, "run", run)
    doc = run_benchmark(pair, warmup=3, runs=4, measure_rss=False)
    assert doc["settings"]["instruction_markers"] is True
    trace = "".join(events)
    untimed = 2 * (1 + 3)  # first inference + warm-up, per artifact, outside any region
    assert trace == "u" * untimed + "BIE" * len(doc["timed_order"])
    assert doc["timed_order"] == [0, 1] * 4


def test_markers_are_off_by_default(pair, monkeypatch):
    calls = []
    monkeypatch.delenv(marker.ENV, raising=False)
    monkeypatch.setattr(marker, "_close", calls.append)
    doc = run_benchmark(pair[:1], warmup=0, runs=3, measure_rss=False)
    assert calls == [] and doc["timed_order"] == [0, 0, 0] and doc["baseline"] == 0


def test_tflite_artifacts_and_precision(tmp_path):
    """The TFLite backend through the same runner: backend version, int8 precision from the manifest."""
    fp32, int8 = write_tiny_tflite(tmp_path), write_tiny_tflite(tmp_path, int8=True)
    doc = run_benchmark([fp32, int8, tmp_path / "missing.tflite"], warmup=1, runs=3, measure_rss=False)
    a, b, missing = doc["artifacts"]
    assert a["status"] == b["status"] == "ok" and a["backend"] == "ai-edge-litert" and a["backend_version"]
    assert (a["precision"], b["precision"], b["input_dtype"]) == ("fp32", "int8", "int8")
    assert missing["status"] == "failed" and "model file not found" in missing["error"]
    assert doc["timed_order"] == [0, 1] * 3
    assert b["ratio_vs_baseline"]["rounds"] == 3


def test_bad_arguments(pair):
    with pytest.raises(BenchError, match="no artifacts"):
        run_benchmark([], runs=1)
    with pytest.raises(BenchError, match="--runs"):
        run_benchmark(pair, runs=0)
    assert_one_line_error(run_cli("edgeformer-bench", pair[0], "--cpus", "four"), "bad CPU list")


INTERRUPTER = textwrap.dedent("""
    import os, signal, sys
    from edgeformer_deploy.bench import marker

    count = [0]

    def close(fd):  # a real SIGINT, delivered when the 6th timed run is about to start
        if fd == marker.BEGIN_FD:
            count[0] += 1
            if count[0] == 6:
                signal.raise_signal(signal.SIGINT)  # to this thread, before the inference starts

    marker._close = close
    os.environ[marker.ENV] = "1"
    # as in a terminal: a process started in the background (a CI step, `cmd &`) inherits SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from edgeformer_deploy.bench.cli import main
    main(sys.argv[1:], prog_name="edgeformer-bench")
""")


def test_ctrl_c_writes_the_partial_result(pair, tmp_path):
    out = tmp_path / "partial.json"
    result = subprocess.run([sys.executable, "-c", INTERRUPTER, *map(str, pair), "--runs", "50", "--warmup", "1",
                             "--no-rss", "--json", str(out)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr and "interrupted after 2 complete rounds" in result.stderr
    doc = json.loads(out.read_text())
    assert doc["interrupted"] is True
    assert doc["timed_order"] == [0, 1, 0, 1, 0]  # round 3 stopped before its second inference
    assert doc["rounds_completed"] == 2
    base, ef = doc["artifacts"]
    assert (base["timed_runs"], ef["timed_runs"]) == (3, 2)
    assert base["status"] == ef["status"] == "ok"
    assert ef["ratio_vs_baseline"]["rounds"] == 2
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"


BLOCKER = textwrap.dedent("""
    import importlib.abc, os, sys

    FORBIDDEN = tuple(os.environ["BENCH_FORBIDDEN"].split(","))

    class Blocker(importlib.abc.MetaPathFinder):  # as if these were not installed
        def find_spec(self, name, path=None, target=None):
            if name.startswith(FORBIDDEN):
                with open(os.environ["BENCH_BLOCK_LOG"], "a") as log:
                    log.write(name + "\\n")
                raise ImportError(f"{name} is blocked in this test", name=name)

    sys.meta_path.insert(0, Blocker())
""")


def blocked_env(tmp_path: Path, *forbidden: str) -> tuple[dict, Path]:
    """An environment whose Python processes (children too) cannot import ``forbidden``: a sitecustomize."""
    site = tmp_path / "blocker"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    log = tmp_path / "blocked.log"
    env = dict(os.environ, PYTHONPATH=f"{site}{os.pathsep}{REPO_ROOT}", BENCH_FORBIDDEN=",".join(forbidden),
               BENCH_BLOCK_LOG=str(log))
    return env, log


def test_run_path_imports_no_torch_and_no_matplotlib(pair, tmp_path):
    env, log = blocked_env(tmp_path, "torch", "matplotlib", "edgeformer_deploy.models", "edgeformer_deploy.export")
    out = tmp_path / "r.json"
    result = subprocess.run([sys.executable, "-m", "edgeformer_deploy.bench.cli", *map(str, pair), "--runs", "2",
                             "--warmup", "0", "--json", str(out)], capture_output=True, text=True, env=env,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    assert all(a["status"] == "ok" and a["peak_rss_bytes"] for a in doc["artifacts"])  # the RSS child ran too
    assert not log.exists(), log.read_text()  # nothing even tried to import them


BOARD_SIDE = [*(BENCH / f"{name}.py" for name in ("runner", "rss", "system", "schema", "marker", "display", "cli",
                                                   "__init__")),
              *sorted((REPO_ROOT / "edgeformer_deploy" / "runtime").glob("*.py"))]


def test_board_side_modules_parse_as_python_3_9():
    for path in BOARD_SIDE:
        source = path.read_text()
        ast.parse(source, feature_version=(3, 9))
        if path.name != "__init__.py":  # PEP 604/585 annotations stay strings on 3.9
            assert "from __future__ import annotations" in source, path.name


def test_board_side_uses_no_api_newer_than_python_3_9():
    """vermin checks every call and keyword against the stdlib version that introduced it (e.g. zip(strict=)
    is 3.10) — what ast.parse's grammar check cannot see."""
    result = subprocess.run([sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())", "--no-tips",
                             "--violations", "-t=3.9-", *map(str, BOARD_SIDE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
