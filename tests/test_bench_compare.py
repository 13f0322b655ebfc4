"""``edgeformer-bench compare``: export MobileViT-S + EdgeFormer-S, benchmark them, reuse the exports."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from edgeformer_deploy.bench.compare import find_reusable
from edgeformer_deploy.export.formats import FORMATS
from edgeformer_deploy.export.pipeline import ExportJob
from edgeformer_deploy.runtime.artifact import find_manifest, sha256
from helpers import assert_one_line_error, run_cli

IMGSZ = 64


@pytest.fixture(scope="module")
def compared(tmp_path_factory, official_dir):
    """Two calls with the same settings: the first exports, the second must reuse."""
    out = tmp_path_factory.mktemp("compare")
    exports = out / "exports"
    common = ["compare", "--format", "onnx", "--imgsz", IMGSZ, "--output", exports, "--runs", 4, "--warmup", 1,
              "--threads", 1, "--weights-edgeformer", official_dir / "edgeformer_s.pt",
              "--weights-mobilevit", official_dir / "mobilevit_s.pt"]
    first = run_cli("edgeformer-bench", *common, "--json", out / "first.json", timeout=900)
    assert first.returncode == 0, first.stderr
    stamps = {p.name: p.stat().st_mtime_ns for p in exports.iterdir()}
    second = run_cli("edgeformer-bench", *common, "--json", out / "second.json", "--no-rss")
    assert second.returncode == 0, second.stderr
    return {"first": (first, json.loads((out / "first.json").read_text())),
            "second": (second, json.loads((out / "second.json").read_text())),
            "stamps": stamps, "exports": exports}


def test_first_call_exports_and_benchmarks_mobilevit_first(compared, official_dir):
    result, doc = compared["first"]
    assert [a["model"] for a in doc["artifacts"]] == ["mobilevit_s", "edgeformer_s"]
    assert doc["baseline"] == 0 and all(a["status"] == "ok" for a in doc["artifacts"])
    assert all(a["imgsz"] == IMGSZ and a["format"] == "onnx" and a["random_weights"] is False
               for a in doc["artifacts"])
    assert doc["timed_order"] == [0, 1] * 4
    assert doc["artifacts"][1]["ratio_vs_baseline"]["rounds"] == 4
    info = doc["compare"]
    assert info["format"] == "onnx" and info["imgsz"] == IMGSZ and info["baseline"] == "mobilevit_s"
    for model in ("mobilevit_s", "edgeformer_s"):
        assert info["models"][model]["reused"] is False
        assert info["models"][model]["weights_sha256"] == sha256(official_dir / f"{model}.pt")
    assert "exporting mobilevit_s" in result.stderr and "exporting edgeformer_s" in result.stderr
    assert "RANDOM" not in result.stderr and "Traceback" not in result.stderr
    assert "1 (baseline)" in result.stdout  # the table


def test_second_call_reuses_the_exports(compared):
    result, doc = compared["second"]
    assert "exporting" not in result.stderr and result.stderr.count("reusing") == 2
    assert all(m["reused"] for m in doc["compare"]["models"].values())
    exports = compared["exports"]
    assert {p.name: p.stat().st_mtime_ns for p in exports.iterdir()} == compared["stamps"]  # nothing rewritten
    assert [a["path"] for a in doc["artifacts"]] == [str(exports / f"{m}_{IMGSZ}.onnx")
                                                      for m in ("mobilevit_s", "edgeformer_s")]


def test_reuse_needs_a_matching_manifest_and_file(compared, official_dir, tmp_path):
    folder = tmp_path / "exports"
    shutil.copytree(compared["exports"], folder)
    weights = sha256(official_dir / "edgeformer_s.pt")
    job = ExportJob(model="edgeformer_s", fmt="onnx", imgsz=IMGSZ, weights=official_dir / "edgeformer_s.pt")
    assert find_reusable(folder, job, weights) == folder / f"edgeformer_s_{IMGSZ}.onnx"
    assert find_reusable(folder, job, None) is None and find_reusable(folder, job, "0" * 64) is None
    for change in (dict(imgsz=96), dict(int8=True), dict(fmt="tflite"), dict(gcc="conv"),
                   dict(model="edgeformer_xs"), dict(fmt="tflite", target="armv7")):
        assert find_reusable(folder, dataclasses.replace(job, **change), weights) is None, change
    manifest_path = find_manifest(folder / f"edgeformer_s_{IMGSZ}.onnx")
    manifest = json.loads(manifest_path.read_text())
    for name, other in (("silu", "tanh"), ("strided_pad", "concat"), ("pair_conv", "mul_add"),
                        ("hardswish", "relu6_mul")):
        manifest_path.write_text(json.dumps({**manifest, name: other}))  # made with another lowering form
        assert find_reusable(folder, job, weights) is None, name
    manifest_path.write_text(json.dumps(manifest))
    assert find_reusable(folder, job, weights) is not None
    artifact = folder / f"edgeformer_s_{IMGSZ}.onnx"
    data = bytearray(artifact.read_bytes())
    data[-1] ^= 1  # same size, different content: the manifest's sha256 no longer matches
    artifact.write_bytes(bytes(data))
    assert find_reusable(folder, job, weights) is None


def test_unknown_format_is_one_line(tmp_path):
    result = run_cli("edgeformer-bench", "compare", "--format", "coreml", "--output", tmp_path / "x")
    assert_one_line_error(result, "unknown format 'coreml'", "onnx")
    assert not (tmp_path / "x").exists()


def test_rknn_cannot_run_here(tmp_path):
    result = run_cli("edgeformer-bench", "compare", "--format", "rknn", "--imgsz", IMGSZ, "--output", tmp_path / "x")
    if "rknn" in FORMATS:
        assert_one_line_error(result, "rknn-toolkit-lite2", "--export-only")
    else:  # the rknn export format is not there yet
        assert_one_line_error(result, "unknown format 'rknn'")
    assert not (tmp_path / "x").exists()


def test_compare_detection_times_post_processing(tmp_path, official_dir):
    """--task detection: SSD-MobileViT-S (baseline) vs SSD-EdgeFormer-S, latency plus the board's numpy
    post-processing of the sample frame's outputs."""
    det = official_dir.parent / "official-det-seg"
    out = tmp_path / "det"
    result = run_cli("edgeformer-bench", "compare", "--task", "detection", "--format", "onnx", "--imgsz", 128,
                     "--output", out, "--runs", 3, "--warmup", 1, "--threads", 1, "--no-rss",
                     "--weights-edgeformer", det / "ssd_edgeformer_s.pt", "--weights-mobilevit",
                     det / "ssd_mobilevit_s.pt", "--json", tmp_path / "det.json", timeout=900)
    assert result.returncode == 0, result.stderr
    doc = json.loads((tmp_path / "det.json").read_text())
    assert [a["model"] for a in doc["artifacts"]] == ["ssd_mobilevit_s", "ssd_edgeformer_s"]
    assert doc["compare"]["task"] == "detection" and doc["compare"]["baseline"] == "ssd_mobilevit_s"
    for artifact in doc["artifacts"]:
        assert artifact["status"] == "ok" and artifact["task"] == "detection"
        post = artifact["postprocess_ms"]
        assert post["median"] > 0 and post["runs"] == 20 and post["detections"] > 0
    assert "post-proc. ms" in result.stdout


def test_tflite_compare_on_this_host_exports_for_its_cpu_class(tmp_path, official_dir):
    """Without --target or --emulate, compare measures TFLite artifacts made for the host it runs on (here
    x86_64: int8 HardSwish as XNNPACK ops), and says so; --export-only (artifacts for a board) stays portable."""
    import platform

    from edgeformer_deploy.bench.cli import HOST_TFLITE_TARGETS

    host = HOST_TFLITE_TARGETS[platform.machine().lower()]
    common = ["compare", "--format", "tflite", "--imgsz", IMGSZ, "--weights-edgeformer",
              official_dir / "edgeformer_s.pt", "--weights-mobilevit", official_dir / "mobilevit_s.pt"]
    result = run_cli("edgeformer-bench", *common, "--output", tmp_path / "here", "--runs", 2, "--warmup", 0,
                     "--threads", 1, "--no-rss", "--json", tmp_path / "here.json", timeout=900)
    assert result.returncode == 0, result.stderr
    assert f"--target {host}" in result.stderr
    doc = json.loads((tmp_path / "here.json").read_text())
    assert [a["name"] for a in doc["artifacts"]] == [f"{m}_{IMGSZ}_{host}.tflite" for m in ("mobilevit_s",
                                                                                               "edgeformer_s")]
    exported = run_cli("edgeformer-bench", *common, "--output", tmp_path / "board", "--export-only", timeout=900)
    assert exported.returncode == 0, exported.stderr
    assert sorted(p.name for p in (tmp_path / "board").glob("*.tflite")) == [f"edgeformer_s_{IMGSZ}.tflite",
                                                                             f"mobilevit_s_{IMGSZ}.tflite"]
