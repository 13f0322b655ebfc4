"""``edgeformer-predict``: tables, JSON lines, one line per bad input, exit codes, and no torch."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from edgeformer_deploy.runtime import Predictor
from edgeformer_deploy.runtime.artifact import manifest_path
from edgeformer_deploy.runtime.backends import install_hint
from edgeformer_deploy.runtime.preprocess import sample_images
from helpers import run_cli, run_without_torch
from runtime_artifacts import REPO_ROOT, export_onnx, write_tiny_tflite


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory, official_dir):
    return export_onnx(tmp_path_factory.getbasetemp() / "exports", official_dir, "edgeformer_s")


@pytest.fixture(scope="session")
def int8_model(tmp_path_factory):
    return write_tiny_tflite(tmp_path_factory.mktemp("tiny-cli"), int8=True)


def predict(*args, env=None):
    return run_cli("edgeformer-predict", *args, env=env)


def test_table_for_a_folder(onnx_model):
    folder = sample_images()[0].parent
    result = predict(folder, "--model", onnx_model, "--topk", "3")
    assert result.returncode == 0 and result.stderr == ""
    for photo in sample_images():
        assert str(photo) in result.stdout
    assert result.stdout.count("probability") == len(sample_images())


def test_json_lines_carry_the_predictor_result(onnx_model):
    photos = sample_images()[:2]
    result = predict(*photos, "--model", onnx_model, "--json", "--logits")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    expected = Predictor(onnx_model).logits(photos)
    for record, row, photo in zip(records, expected, photos):
        assert record["image"] == str(photo) and record["backend"] == "onnxruntime"
        assert np.array_equal(np.float32(record["logits"]), row)
        assert [t["class_id"] for t in record["top"]] == list(np.argsort(-row, kind="stable")[:5])


def test_bad_images_get_one_line_each_and_the_rest_run(int8_model, tmp_path):
    good = sample_images()[0]
    (tmp_path / "text.jpg").write_text("hello")
    Image.open(good).save(tmp_path / "full.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:3000])
    (tmp_path / "empty").mkdir()
    bad = [tmp_path / "missing.png", tmp_path / "text.jpg", tmp_path / "cut.jpg", tmp_path / "empty"]
    result = predict(good, *bad, sample_images()[1], "--model", int8_model, "--json")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == len(bad), result.stderr
    for line, reason in zip(lines, ["file not found", "not an image", "truncated or corrupt",
                                    "folder holds no image files"]):
        assert line.startswith("error: ") and reason in line
    assert [json.loads(r)["image"] for r in result.stdout.splitlines()] == [str(good), str(sample_images()[1])]


def test_bad_models_exit_2_with_one_line(onnx_model, tmp_path):
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(onnx_model.read_bytes())
    other = tmp_path / "edgeformer_s_64.onnx"
    other.write_bytes(onnx_model.read_bytes()[:-10] + bytes(10))  # same size, different content
    manifest_path(other).write_text(manifest_path(onnx_model).read_text())
    for model, reason in [(bare, "no manifest"), (sample_images()[0], "unsupported model file type"),
                          (other, "sha256 differs"), (tmp_path / "nope.onnx", "model file not found")]:
        result = predict(sample_images()[0], "--model", model)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.count("\n") == 1 and reason in result.stderr and "Traceback" not in result.stderr


def test_usage_errors_are_click_errors(onnx_model):
    result = predict("--model", onnx_model)
    assert result.returncode == 2 and "Missing argument" in result.stderr
    result = predict(sample_images()[0], "--model", onnx_model, "--topk", "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_install_hints_per_board():
    assert install_hint("tflite", "armv7l").startswith("pip install tflite-runtime==2.14.0")
    assert "no onnxruntime wheel for 32-bit ARM" in install_hint("onnx", "armv7l")
    assert install_hint("tflite", "aarch64") == "pip install ai-edge-litert"
    assert install_hint("onnx", "aarch64") == "pip install onnxruntime"


@pytest.mark.parametrize("model", ["onnx", "tflite"])
def test_runtime_runs_without_torch(onnx_model, int8_model, model):
    artifact = onnx_model if model == "onnx" else int8_model
    result = run_without_torch("edgeformer-predict", "edgeformer_deploy.runtime.cli", sample_images()[0], "--model",
                               artifact, "--json", cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "loaded: []"
    assert json.loads(result.stdout)["top"]
