"""``Predictor`` on real onnxruntime and real TFLite interpreters (x86), manifest checks, the RKNN
backend against a named test double of RKNNLite (no NPU here)."""
from __future__ import annotations

import json
import subprocess
import sys
import types

import numpy as np
import pytest

from edgeformer_deploy.runtime import ArtifactError, BackendMissing, Prediction, PredictError, Predictor
from edgeformer_deploy.runtime.artifact import manifest_path
from edgeformer_deploy.runtime.onnx_backend import create_session
from edgeformer_deploy.runtime.preprocess import preprocess, sample_images
from runtime_artifacts import (ARM_IMGSZ, OUTPUT_QUANT, export_onnx, tiny_reference, tiny_weights,
                               write_manifest, write_tiny_tflite)


@pytest.fixture(scope="session")
def exports(tmp_path_factory, official_dir):
    out = tmp_path_factory.getbasetemp() / "exports"
    return {model: export_onnx(out, official_dir, model) for model in ("edgeformer_s", "mobilevit_s")}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    return {"fp32": write_tiny_tflite(out), "int8": write_tiny_tflite(out, int8=True)}


@pytest.mark.parametrize("model", ["edgeformer_s", "mobilevit_s"])
def test_onnx_logits_equal_the_export_verification_path(exports, model):
    """The board computes exactly what export verification checked: preprocess() + onnxruntime."""
    photos = sample_images()
    predictor = Predictor(exports[model], threads=1)
    assert predictor.backend_name == "onnxruntime" and predictor.imgsz == ARM_IMGSZ and predictor.batch == 1
    session = create_session(exports[model], threads=1)
    expected = np.concatenate([session.run(None, {"images": preprocess(p, ARM_IMGSZ)})[0] for p in photos])
    logits = predictor.logits(photos)
    assert logits.shape == (len(photos), 1000) and np.array_equal(logits, expected)


def test_predict_forms_agree(exports):
    from PIL import Image

    predictor = Predictor(exports["edgeformer_s"])
    path = sample_images()[1]
    single = predictor.predict(path, topk=5)
    assert len(single) == 5 and all(isinstance(p, Prediction) for p in single)
    assert [p.probability for p in single] == sorted((p.probability for p in single), reverse=True)
    assert single[0].label == predictor.labels[single[0].class_id] and len(predictor.labels) == 1000
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert predictor.predict(pixels) == single == predictor.predict(Image.open(path))
    batch = predictor.predict([path, sample_images()[0], path])
    assert batch[0] == batch[2] == single and batch[1] != single
    assert predictor.predict(np.stack([pixels, pixels]))[1] == single


def test_threads_and_cpu_affinity(exports):
    """Pinning happens in a child (it would pin the whole test run otherwise)."""
    code = ("import os, sys; from edgeformer_deploy.runtime import Predictor;"
            f"p = Predictor({str(exports['mobilevit_s'])!r}, threads=1, cpus='0');"
            "print(sorted(os.sched_getaffinity(0)), p.predict(sys.argv[1], topk=1)[0].class_id)")
    result = subprocess.run([sys.executable, "-c", code, str(sample_images()[0])], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "[0]"
    with pytest.raises(PredictError, match="bad CPU list"):
        Predictor(exports["mobilevit_s"], cpus="four")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_tflite_on_a_real_interpreter(tiny, precision):
    predictor = Predictor(tiny[precision])
    assert predictor.backend_name == "ai-edge-litert"  # first of litert, tflite-runtime, tensorflow
    photos = sample_images()
    tensor = predictor.preprocess(photos)
    assert tensor.shape == (4, ARM_IMGSZ, ARM_IMGSZ, 3)  # NHWC
    assert tensor.dtype == (np.int8 if precision == "int8" else np.float32)
    reference = tiny_reference(tiny_weights(), predictor.crops(photos).astype(np.float32) / 255)
    logits = predictor.run(tensor)
    tolerance = OUTPUT_QUANT[0] / 2 + 1e-4 if precision == "int8" else 1e-4  # half an output step
    assert np.abs(logits - reference).max() <= tolerance


def test_missing_interpreter_names_the_package(tiny):
    with pytest.raises(BackendMissing, match="pip install"):
        Predictor(tiny["fp32"], backend="tensorflow")  # not installed here
    with pytest.raises(PredictError, match="backend onnxruntime cannot run .tflite artifacts"):
        Predictor(tiny["fp32"], backend="onnxruntime")


def _copy(artifact, tmp_path, name=None):
    target = tmp_path / (name or artifact.name)
    target.write_bytes(artifact.read_bytes())
    manifest = manifest_path(artifact)
    manifest_path(target).write_text(manifest.read_text())
    return target


def test_manifest_errors(tiny, tmp_path):
    art = _copy(tiny["fp32"], tmp_path)
    cases = {}
    no_manifest = tmp_path / "bare.tflite"
    no_manifest.write_bytes(art.read_bytes())
    cases["no manifest beside it"] = no_manifest
    wrong_type = tmp_path / "model.pt"
    wrong_type.write_bytes(b"x")
    cases["unsupported model file type '.pt'"] = wrong_type
    broken = _copy(art, tmp_path, "broken.tflite")
    manifest_path(broken).write_text("{not json")
    cases["not valid JSON"] = broken
    renamed = _copy(art, tmp_path, "renamed.tflite")
    cases["manifest describes 'tiny_64.tflite'"] = renamed
    grown = _copy(art, tmp_path)
    with open(grown, "ab") as fh:
        fh.write(b"\0")
    cases["file has"] = grown
    cases["model file not found"] = tmp_path / "absent.onnx"
    for reason, path in cases.items():
        with pytest.raises(ArtifactError, match=reason.replace("(", r"\(").replace(".", r"\.")) as info:
            Predictor(path)
        assert "\n" not in str(info.value)


def test_manifest_that_lies_about_the_input(tiny, tmp_path):
    art = _copy(tiny["fp32"], tmp_path, "tiny_64.tflite")
    manifest = json.loads(manifest_path(art).read_text())
    manifest["input"]["dtype"] = "int8"
    manifest["input"]["quantization"] = {"scale": 0.1, "zero_point": 0}
    manifest_path(art).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="mismatch: model input is float32, manifest says int8"):
        Predictor(art)
    manifest = json.loads(manifest_path(tiny["fp32"]).read_text())
    manifest["input"]["shape"] = [1, 96, 96, 3]
    manifest["preprocess"].update(resize=128, crop=96)
    manifest_path(art).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"mismatch: model input is \[1, 64, 64, 3\]"):
        Predictor(art)


# -- RKNN: no NPU here, so RKNNLite is replaced by a test double that records what it is given ------
class RKNNLiteTestDouble:
    """Stands in for rknnlite.api.RKNNLite (same method names and return conventions). Its "NPU"
    returns the per-channel mean of the pixels as the first three logits."""

    NPU_CORE_AUTO, NPU_CORE_0, NPU_CORE_0_1_2 = 0, 1, 7
    instances: list = []
    init_ret = 0

    def __init__(self):
        self.calls = []
        RKNNLiteTestDouble.instances.append(self)

    def load_rknn(self, path):
        self.calls.append(("load_rknn", path))
        return 0 if open(path, "rb").read(4) == b"RKNN" else -1

    def init_runtime(self, core_mask=None):
        self.calls.append(("init_runtime", core_mask))
        return self.init_ret

    def inference(self, inputs, data_format=None):
        self.calls.append(("inference", [x.copy() for x in inputs], data_format))
        logits = np.zeros((len(inputs[0]), 1000), np.float32)
        logits[:, :3] = inputs[0].mean(axis=(1, 2)) / 255 * 10
        return [logits]

    def release(self):
        self.calls.append(("release",))


@pytest.fixture
def rknn_double(monkeypatch):
    package = types.ModuleType("rknnlite")
    api = types.ModuleType("rknnlite.api")
    api.RKNNLite = RKNNLiteTestDouble
    package.api = api
    monkeypatch.setitem(sys.modules, "rknnlite", package)
    monkeypatch.setitem(sys.modules, "rknnlite.api", api)
    RKNNLiteTestDouble.instances, RKNNLiteTestDouble.init_ret = [], 0
    return RKNNLiteTestDouble


def _rknn_artifact(tmp_path, size=64):
    path = tmp_path / f"m_{size}.rknn"
    path.write_bytes(b"RKNN" + bytes(100))
    write_manifest(path, fmt="rknn", model="m", imgsz=size,
                   input_spec={"name": "images", "shape": [1, size, size, 3], "layout": "NHWC", "dtype": "uint8"},
                   output_spec={"name": "logits", "shape": [1, 1000], "dtype": "float32"})
    return path


def test_rknn_selection_and_input_contract(rknn_double, tmp_path):
    path = _rknn_artifact(tmp_path)
    with Predictor(path, npu_cores="0_1_2") as predictor:  # backend="auto" picks by file type
        assert predictor.backend_name == "rknn-toolkit-lite2"
        photo = sample_images()[2]
        top = predictor.predict(photo, topk=3)
    double = rknn_double.instances[0]
    assert double.calls[0] == ("load_rknn", str(path))
    assert double.calls[1] == ("init_runtime", RKNNLiteTestDouble.NPU_CORE_0_1_2)
    _, (sent,), data_format = double.calls[2]
    assert data_format == "nhwc" and sent.dtype == np.uint8 and sent.shape == (1, 64, 64, 3)
    assert np.array_equal(sent, predictor.crops([photo]))  # raw pixels: the NPU normalises
    assert double.calls[-1] == ("release",)
    assert {p.class_id for p in top} == {0, 1, 2}


def test_rknn_error_paths(rknn_double, tmp_path, monkeypatch):
    path = _rknn_artifact(tmp_path)
    rknn_double.init_ret = -1
    with pytest.raises(PredictError, match="NPU runtime failed to start"):
        Predictor(path)
    rknn_double.init_ret = 0
    path.write_bytes(b"XXXX" + bytes(100))
    write_manifest(path, fmt="rknn", model="m", imgsz=64,
                   input_spec={"name": "images", "shape": [1, 64, 64, 3], "layout": "NHWC", "dtype": "uint8"},
                   output_spec={"name": "logits", "shape": [1, 1000], "dtype": "float32"})
    with pytest.raises(ArtifactError, match="RKNNLite cannot load it"):
        Predictor(path)
    monkeypatch.setitem(sys.modules, "rknnlite.api", None)  # import -> ImportError, as without the wheel
    with pytest.raises(BackendMissing, match="rknn-toolkit-lite2"):
        Predictor(path)
