"""`edgeformer-export --format onnx`: real exports, checked with onnx.checker and onnxruntime."""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import onnx
import pytest
import torch

from edgeformer_deploy.errors import ExportError
from edgeformer_deploy.export import pipeline
from edgeformer_deploy.export.onnx_format import op_census
from edgeformer_deploy.runtime.artifact import manifest_path
from edgeformer_deploy.runtime.onnx_backend import create_session
from helpers import assert_one_line_error as _assert_one_line_error, run_cli

FORBIDDEN = {"Resize", "Shape", "Gather", "Expand", "Where", "ConstantOfShape", "BatchNormalization"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, official_dir):
    """EdgeFormer-S (both GCC formulations) and MobileViT-S from the official-code fixtures, via the CLI."""
    out = tmp_path_factory.mktemp("onnx")
    artifacts = {}
    for name, gcc in (("edgeformer_s", "conv"), ("edgeformer_s", "matmul"), ("mobilevit_s", None)):
        target = out / (gcc or "default")
        args = ["--model", name, "--weights", official_dir / f"{name}.pt", "--imgsz", 256, "--output", target]
        result = run_cli("edgeformer-export", *args, *(["--gcc", gcc] if gcc else []))
        assert result.returncode == 0, result.stderr
        assert "RANDOM" not in result.stderr
        artifacts[(name, gcc)] = target / f"{name}_256.onnx"
    return artifacts


def _manifest(path):
    return json.loads(manifest_path(path).read_text())


@pytest.mark.parametrize("key", [("edgeformer_s", "conv"), ("edgeformer_s", "matmul"), ("mobilevit_s", None)])
def test_artifact_reproduces_official_logits(exported, official_dir, key):
    """Independent of our own gate: onnxruntime vs the logits the official code produced. The fixture input
    is what the official model received (BGR); the artifact takes the same image as RGB."""
    name = key[0]
    io = torch.load(official_dir / f"{name}_io.pt", weights_only=True)
    session = create_session(exported[key])
    x = np.ascontiguousarray(io["input_256"].numpy()[:, ::-1])
    logits = np.concatenate([session.run(None, {"images": x[i:i + 1]})[0] for i in range(len(x))])
    assert np.abs(logits - io["logits_256"].numpy()).max() <= 1e-4


@pytest.mark.parametrize("gcc", ["conv", "matmul"])
def test_edgeformer_graph_is_static_and_clean(exported, gcc):
    path = exported[("edgeformer_s", gcc)]
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    ops = op_census(path)
    assert not FORBIDDEN & set(ops)
    assert not any(n.op_type == "Pad" for n in model.graph.node)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) <= 19
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 256, 256]
    if gcc == "conv":  # 9 GCC blocks, each one H x 1 and one 1 x W depthwise conv with 32/16/8 taps
        kernels = sorted(tuple(i.dims[2:]) for i in model.graph.initializer
                         if len(i.dims) == 4 and i.dims[1] == 1 and max(i.dims[2:]) > 3)
        assert kernels == sorted([(32, 1), (1, 32)] * 2 + [(16, 1), (1, 16)] * 4 + [(8, 1), (1, 8)] * 3)
    else:
        assert ops["MatMul"] == 18 and "Slice" not in ops


def test_manifest(exported, official_dir):
    path = exported[("edgeformer_s", "conv")]
    manifest = _manifest(path)
    assert manifest["model"] == "edgeformer_s" and manifest["variant"] == "s" and manifest["format"] == "onnx"
    assert manifest["file"] == path.name and manifest["size_bytes"] == path.stat().st_size
    assert manifest["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest["input"] == {"name": "images", "shape": [1, 3, 256, 256], "layout": "NCHW", "dtype": "float32"}
    assert manifest["preprocess"]["resize"] == 288 and manifest["preprocess"]["crop"] == 256
    assert manifest["preprocess"]["channel_order"] == "RGB" and manifest["preprocess"]["std"] == [1.0] * 3
    # the official checkpoint saw BGR: the swap lives in the stem convolution, the artifact takes RGB
    assert manifest["preprocess"]["trained_channel_order"] == "BGR"
    assert manifest["preprocess"]["channel_swap"] == "folded into the stem convolution"
    assert manifest["num_classes"] == 1000 and manifest["params"] == 5_037_088
    assert 1.5e9 < manifest["macs"] < 1.8e9
    assert manifest["ops"] == op_census(path)
    parity = manifest["parity"]
    assert parity["samples"] == 8 and parity["max_abs"] <= 1e-4 and parity["cosine"] >= 0.99999
    assert parity["top1_agreement"] == 1.0
    assert {"edgeformer_deploy", "torch", "onnx", "onnxruntime", "onnxsim"} <= set(manifest["versions"])
    assert manifest["weights"]["file"] == "edgeformer_s.pt" and manifest["gcc"] == "conv"
    assert manifest["created"].endswith("+00:00")


@pytest.mark.parametrize("name", ["edgeformer_xs", "edgeformer_h", "mobilevit_xxs", "mobilevit_xs"])
def test_every_model_exports_and_verifies(tmp_path, name):
    result = run_cli("edgeformer-export", "--model", name, "--imgsz", 224, "--output", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "RANDOM" in result.stderr  # the warning about missing --weights
    manifest = _manifest(tmp_path / f"{name}_224.onnx")
    assert manifest["parity"]["cosine"] >= 0.99999 and manifest["weights"] == {"file": None, "random": True}
    if name.startswith("edgeformer"):
        assert not FORBIDDEN & set(manifest["ops"])


def test_static_batch_and_dynamic_batch(tmp_path):
    static = run_cli("edgeformer-export", "--batch", 2, "--output", tmp_path / "b2")
    dynamic = run_cli("edgeformer-export", "--dynamic-batch", "--output", tmp_path / "dyn")
    assert static.returncode == 0 and dynamic.returncode == 0, static.stderr + dynamic.stderr
    assert _manifest(tmp_path / "b2" / "edgeformer_s_256.onnx")["input"]["shape"] == [2, 3, 256, 256]
    session = create_session(tmp_path / "dyn" / "edgeformer_s_256.onnx")
    x = np.random.default_rng(0).random((3, 3, 256, 256), dtype=np.float32)
    batched = session.run(None, {"images": x})[0]
    single = np.concatenate([session.run(None, {"images": x[i:i + 1]})[0] for i in range(3)])
    assert batched.shape == (3, 1000) and np.abs(batched - single).max() < 1e-4
    assert not FORBIDDEN & set(op_census(tmp_path / "dyn" / "edgeformer_s_256.onnx"))


def test_dynamo_exporter(tmp_path):
    result = run_cli("edgeformer-export", "--exporter", "dynamo", "--opset", 18, "--output", tmp_path)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "edgeformer_s_256.onnx"
    assert not (tmp_path / "edgeformer_s_256.onnx.data").exists()  # one self-contained file
    assert not FORBIDDEN & set(op_census(path))


def test_no_verify_records_no_parity(tmp_path):
    assert run_cli("edgeformer-export", "--no-verify", "--output", tmp_path).returncode == 0
    assert _manifest(tmp_path / "edgeformer_s_256.onnx")["parity"] is None


def test_failed_verification_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "ONNX_MAX_ABS", -1.0)  # an impossible gate: the export must be refused
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="verification failed"):
        pipeline.run_export(pipeline.ExportJob(output=out), log=lambda _: None)
    assert not out.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("x")
    with pytest.raises(ExportError):
        pipeline.run_export(pipeline.ExportJob(output=existing), log=lambda _: None)
    assert sorted(p.name for p in existing.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("args, needle", [
    (["--model", "resnet50"], "unknown model"),
    (["--imgsz", "250"], "multiple of 32"),
    (["--imgsz", "32"], "from 64 to 1024"),
    (["--format", "coreml"], "unknown format"),
    (["--batch", "0"], "--batch"),
    (["--exporter", "dynamo", "--opset", "17"], "opset 18"),
    (["--weights", "/nonexistent/w.pt"], "not found"),
])
def test_bad_arguments(tmp_path, args, needle):
    out = tmp_path / "out"
    _assert_one_line_error(run_cli("edgeformer-export", *args, "--output", out), needle)
    assert not out.exists() or not any(out.iterdir())


def test_weights_of_another_variant(tmp_path, official_dir):
    out = tmp_path / "out"
    result = run_cli("edgeformer-export", "--model", "edgeformer_xs", "--weights", official_dir / "edgeformer_s.pt",
                     "--output", out)
    _assert_one_line_error(result, "edgeformer_xs", "mis-shaped")
    assert not out.exists()


def test_output_is_an_existing_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("not a folder")
    _assert_one_line_error(run_cli("edgeformer-export", "--output", target), "existing file")
    assert target.read_text() == "not a folder"


def test_unwritable_output(tmp_path):
    # /proc refuses new folders even for root, unlike a chmod-ed folder
    _assert_one_line_error(run_cli("edgeformer-export", "--output", "/proc/edgeformer-out"), "cannot create")


def test_missing_onnxsim(tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "onnxsim.py").write_text("raise ImportError('onnxsim hidden for this test')\n")
    env = dict(os.environ, PYTHONPATH=str(shim))
    result = run_cli("edgeformer-export", "--output", tmp_path / "out", env=env)
    _assert_one_line_error(result, "onnxsim", "pip install")
