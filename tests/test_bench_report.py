"""``edgeformer-bench report``: results of several boards -> Markdown + PNG; newer schemas refused."""
from __future__ import annotations

import copy
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from edgeformer_deploy.bench.report import load_rows, markdown
from edgeformer_deploy.bench.runner import run_benchmark
from edgeformer_deploy.bench.schema import write_result
from helpers import assert_one_line_error, run_cli
from runtime_artifacts import export_onnx
from test_bench_runner import blocked_env

RUNS = 8


@pytest.fixture(scope="module")
def results(tmp_path_factory, official_dir):
    """A real run (EdgeFormer-S first, MobileViT-S second: the report must still divide by MobileViT),
    and the same numbers as if from a second board whose emulator counted instructions."""
    exports = tmp_path_factory.getbasetemp() / "exports"
    pair = [export_onnx(exports, official_dir, "edgeformer_s"), export_onnx(exports, official_dir, "mobilevit_s")]
    tmp = tmp_path_factory.mktemp("report")
    doc = run_benchmark(pair + [tmp / "missing.onnx"], warmup=1, runs=RUNS, measure_rss=False, label="x86 box")
    board = copy.deepcopy(doc)
    board["system"]["label"] = "Radxa ROCK 5B"
    for artifact, count in zip(board["artifacts"], (6.0e8, 1.0e9)):
        artifact["instructions"] = {"per_inference": count, "regions": RUNS}
    paths = write_result(doc, tmp / "x86.json"), write_result(board, tmp / "rock5b.json")
    return doc, paths


def test_report_writes_markdown_and_png(results, tmp_path):
    doc, paths = results
    out = tmp_path / "out"
    result = run_cli("edgeformer-bench", "report", *paths, "--out", out)
    assert result.returncode == 0, result.stderr
    md = (out / "report.md").read_text()
    assert result.stdout.strip() == md.strip()
    assert "x86 box" in md and "Radxa ROCK 5B" in md and "![" in md and "(report.png)" in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[:4] == ["machine", "backend", "model", "precision"]
    assert "instructions/inference" in header and "ratio vs MobileViT, median [p10–p90]" in header
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in table[1:]]
    assert len(rows) == 6  # 3 artifacts x 2 machines
    ef, mv, failed = doc["artifacts"]
    ratios = np.array(ef["samples_ms"]) / np.array(mv["samples_ms"])  # EdgeFormer / MobileViT, per round
    expected = [np.median(ratios), np.percentile(ratios, 10), np.percentile(ratios, 90)]
    by_key = {(r["machine"], r["model"]): r for r in rows}
    cell = by_key[("x86 box", "edgeformer_s")]["ratio vs MobileViT, median [p10–p90]"]
    assert re.fullmatch(r"\d\.\d{3} \[\d\.\d{3}–\d\.\d{3}\]", cell), cell
    assert [float(v) for v in re.findall(r"\d\.\d{3}", cell)] == pytest.approx(expected, abs=1.01e-3)
    assert by_key[("x86 box", "mobilevit_s")]["ratio vs MobileViT, median [p10–p90]"] == "reference"
    assert by_key[("x86 box", "edgeformer_s")]["instructions/inference"] == "–"
    board_ef = by_key[("Radxa ROCK 5B", "edgeformer_s")]
    assert board_ef["instructions/inference"] == "600 M" and board_ef["instr. ratio"] == "0.600"
    assert by_key[("Radxa ROCK 5B", "mobilevit_s")]["instr. ratio"] == "reference"
    assert by_key[("x86 box", "edgeformer_s")]["p50 ms"]  # latency columns filled
    assert any("failed:" in v and "model file not found" in v for v in by_key[("x86 box", "missing.onnx")].values())
    verdict = re.search(r"edgeformer_s fp32 / mobilevit_s = \*\*(\d\.\d{3})\*\*", md)  # the verdict line
    assert verdict and float(verdict.group(1)) == pytest.approx(expected[0], abs=1.01e-3)
    with Image.open(out / "report.png") as png:
        assert png.format == "PNG" and png.width > 800 and png.height > 400
        png.load()
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "report.png"]  # no temporary files


def test_no_instructions_no_instruction_columns(results):
    doc, paths = results
    md = markdown(load_rows([paths[0]]), None)
    assert "instructions" not in md and "x86 box" in md


def test_newer_schema_is_refused(results, tmp_path):
    doc, _ = results
    newer = dict(doc, schema="edgeformer-bench/2")
    path = tmp_path / "newer.json"
    path.write_text(json.dumps(newer))
    result = run_cli("edgeformer-bench", "report", path, "--out", tmp_path / "out")
    assert_one_line_error(result, str(path), "edgeformer-bench/2", "newer", "upgrade")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, reason", [("{not json", "not valid JSON"),
                                             ('{"artifacts": []}', "not an edgeformer-bench result"),
                                             (None, "file not found")])
def test_unreadable_results_give_one_line(tmp_path, content, reason):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    assert_one_line_error(run_cli("edgeformer-bench", "report", path, "--out", tmp_path / "out"), reason)


def test_missing_matplotlib_gives_the_install_hint(results, tmp_path):
    _, paths = results
    env, _ = blocked_env(tmp_path, "matplotlib")
    result = subprocess.run([sys.executable, "-m", "edgeformer_deploy.bench.cli", "report", str(paths[0]), "--out",
                             str(tmp_path / "out")], capture_output=True, text=True, env=env)
    assert_one_line_error(result, "matplotlib", "pip install 'edgeformer-deploy[report]'")
