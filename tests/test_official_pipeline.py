"""The whole photo -> logits chain against the official evaluation pipeline (ml-cvnets v0.1: cv2.imread
(BGR) -> Resize short side 288 (cv2 INTER_LINEAR) -> CenterCrop 256 -> NumpyToTensor), run by the official
code on the shipped photos (``../shared/fixtures/official-photos``, see its README)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from edgeformer_deploy.export.rknn_format import simulator_outputs
from edgeformer_deploy.runtime import Predictor
from edgeformer_deploy.runtime.artifact import manifest_path
from edgeformer_deploy.runtime.preprocess import preprocess, read_image, sample_images
from helpers import run_cli
from runtime_artifacts import export_onnx

MODELS = ("edgeformer_s", "mobilevit_s")
FP32 = {"max_abs": 1e-3, "cosine": 0.99999}
# The fixture network is untrained: some official decisions are near ties (EdgeFormer-S: astronaut's top-2
# logits 11.545 / 11.515, chelsea's 11.587 / 11.558). fp16 (spacing 0.0078 at |x| = 11.5) and int8 artifacts
# cannot order classes closer than their own logit error, so the top-1 must match exactly except between
# classes the official logits put within this band of the top-1 (fp32 has no band: exact order).
TIE_BAND = {"fp16": 0.05, "int8": 0.5}


@pytest.fixture(scope="session")
def official(official_dir):
    path = official_dir.parent / "official-photos" / "cls_photos_io.pt"
    if not path.is_file():
        pytest.fail(f"official-photos fixtures not found: {path}")
    fixture = torch.load(path, weights_only=True)
    for photo in sample_images():  # the references hold for these very files only
        assert hashlib.sha256(photo.read_bytes()).hexdigest() == fixture["inputs"][photo.name]["jpeg_sha256"]
    return fixture


@pytest.fixture(scope="session")
def onnx_256(tmp_path_factory, official_dir):
    out = tmp_path_factory.getbasetemp() / "exports-256"
    return {model: export_onnx(out, official_dir, model, imgsz=256) for model in MODELS}


def _reference(official, model, photo) -> np.ndarray:
    return official["outputs"][model][photo]["logits"][0].numpy().astype(np.float64)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _top(logits: np.ndarray, k: int) -> list[int]:
    return [int(i) for i in np.argsort(-logits, kind="stable")[:k]]


def assert_matches_official(ours: np.ndarray, reference: np.ndarray, *, cosine: float, max_abs: float | None = None,
                            topk: int = 5, tie_band: float = 0.0, label: str = "") -> None:
    """cosine (and max-abs) vs the official logits; the same top-``topk`` classes — in the same order when
    ``tie_band`` is 0, else as a set with the top-1 exact unless it is an official near tie."""
    ours = np.asarray(ours, dtype=np.float64)
    assert np.isfinite(ours).all(), label
    assert _cosine(ours, reference) >= cosine, (label, _cosine(ours, reference))
    if max_abs is not None:
        assert np.abs(ours - reference).max() <= max_abs, (label, np.abs(ours - reference).max())
    if not tie_band:
        assert _top(ours, topk) == _top(reference, topk), label
        return
    if topk > 1:
        assert set(_top(ours, topk)) == set(_top(reference, topk)), label
    ours_top1, official_top1 = _top(ours, 1)[0], _top(reference, 1)[0]
    margin = reference[official_top1] - reference[ours_top1]
    assert ours_top1 == official_top1 or margin < tie_band, (label, ours_top1, official_top1, margin)


# -- preprocessing alone ---------------------------------------------------------------------------------
@pytest.mark.parametrize("photo", [p.name for p in sample_images()])
def test_preprocessing_is_identical_to_the_official_tensor(official, photo):
    expected = official["inputs"][photo]
    path = next(p for p in sample_images() if p.name == photo)
    decoded_bgr = np.ascontiguousarray(np.asarray(read_image(path))[:, :, ::-1])
    assert hashlib.sha256(decoded_bgr.tobytes()).hexdigest() == expected["decoded_bgr_sha256"]
    ours = preprocess(path, 256, channel_order="BGR")
    assert ours.dtype == np.float32 and list(ours.shape) == expected["input_shape"]
    assert np.array_equal(ours, expected["input"].numpy())  # every value, not "close"
    assert hashlib.sha256(ours.tobytes()).hexdigest() == expected["input_sha256"]


def test_the_board_feeds_the_official_pixels_in_the_artifacts_order(official, onnx_256):
    """Predictor.preprocess (what the board runs) = the official tensor with its channels reversed, because
    the artifact takes RGB (the BGR swap is in its stem convolution)."""
    with Predictor(onnx_256["edgeformer_s"]) as predictor:
        assert predictor.artifact.channel_order == "RGB"
        tensor = predictor.preprocess(sample_images())
    for i, photo in enumerate(sample_images()):
        assert np.array_equal(tensor[i, ::-1], official["inputs"][photo.name]["input"][0].numpy())


# -- whole chain: photo -> logits ------------------------------------------------------------------------
def _predict_logits(artifact) -> dict[str, np.ndarray]:
    result = run_cli("edgeformer-predict", *sample_images(), "--model", artifact, "--json", "--logits")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == len(sample_images())
    return {record["image"].rsplit("/", 1)[-1]: np.array(record["logits"]) for record in records}


@pytest.mark.parametrize("model", MODELS)
def test_predict_cli_onnx_matches_official(official, onnx_256, model):
    for photo, logits in _predict_logits(onnx_256[model]).items():
        assert_matches_official(logits, _reference(official, model, photo), **FP32, label=photo)


@pytest.mark.parametrize("model", MODELS)
def test_python_api_matches_official(official, onnx_256, tflite_artifacts, model):
    for artifact in (onnx_256[model], tflite_artifacts[(model, "fp32")]):
        with Predictor(artifact) as predictor:
            logits = predictor.logits(sample_images())
        for photo, row in zip(sample_images(), logits):
            assert_matches_official(row, _reference(official, model, photo.name), **FP32,
                                    label=f"{artifact.name} {photo.name}")


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_predict_cli_tflite_matches_official(official, tflite_artifacts, model, precision):
    for photo, logits in _predict_logits(tflite_artifacts[(model, precision)]).items():
        reference = _reference(official, model, photo)
        if precision == "fp32":
            assert_matches_official(logits, reference, **FP32, label=photo)
        else:  # the top-1 is the next test's
            assert np.isfinite(logits).all() and _cosine(logits, reference) >= 0.99, photo


@pytest.mark.parametrize("model", MODELS)
def test_tflite_int8_top1_matches_official(official, tflite_artifacts, model):
    """With the int8 recipe (FULLY_CONNECTED weights per tensor: the classifier too) EdgeFormer-S int8 also picks
    the official top-1 on every photo (with per-channel FC weights it picked class 425 for astronaut.jpg)."""
    for photo, logits in _predict_logits(tflite_artifacts[(model, "int8")]).items():
        assert_matches_official(logits, _reference(official, model, photo), cosine=0.99, topk=1,
                                tie_band=TIE_BAND["int8"], label=photo)


@pytest.mark.parametrize("case", [("edgeformer_s", "rk3588", False), ("mobilevit_s", "rk3588", False),
                                  ("edgeformer_s", "rk3566", True), ("mobilevit_s", "rk3566", True)],
                         ids=lambda c: f"{c[0]}-{'int8' if c[2] else 'fp16'}")
def test_rknn_simulator_matches_official(official, rknn_artifacts, onnx_256, case):
    """No NPU here: the toolkit's simulator ran the freshly built model on the board's own preprocessing of
    the photos during export (kept as <artifact>.simulator.npz); those frames must be exactly what the
    board's Predictor sends, and the simulator's logits must match the official pipeline's."""
    model, _, int8 = case
    saved = np.load(rknn_artifacts[case].with_name(rknn_artifacts[case].name + ".simulator.npz"))
    with Predictor(onnx_256[model]) as predictor:
        frames = predictor.crops(sample_images())  # uint8 NHWC RGB, what RKNNLite is given on the board
    assert np.array_equal(saved["inputs"][:len(frames)], frames.astype(np.float32))
    for photo, logits in zip(sample_images(), simulator_outputs(saved)[0]):
        reference = _reference(official, model, photo.name)
        if int8:
            assert_matches_official(logits, reference, cosine=0.99, topk=1, tie_band=TIE_BAND["int8"],
                                    label=photo.name)
        else:
            assert_matches_official(logits, reference, cosine=0.999, tie_band=TIE_BAND["fp16"], label=photo.name)


# -- channel order: override and manifests -----------------------------------------------------------------
def test_rgb_override_and_a_bgr_manifest(official, official_dir, tmp_path):
    """--channel-order rgb exports the checkpoint as if it were RGB-trained (no swap folded): fed RGB it
    disagrees with the official logits; declared BGR in its manifest, the runtime swaps and it agrees."""
    result = run_cli("edgeformer-export", "--model", "edgeformer_s", "--weights", official_dir / "edgeformer_s.pt",
                     "--channel-order", "rgb", "--output", tmp_path, "--no-verify")
    assert result.returncode == 0, result.stderr
    artifact = tmp_path / "edgeformer_s_256.onnx"
    manifest = json.loads(manifest_path(artifact).read_text())
    assert manifest["preprocess"]["trained_channel_order"] == "RGB" and manifest["preprocess"]["channel_swap"] is None
    photo = sample_images()[0]
    reference = _reference(official, "edgeformer_s", photo.name)
    with Predictor(artifact) as predictor:
        assert _cosine(predictor.logits([photo])[0].astype(np.float64), reference) < 0.999
    manifest["preprocess"]["channel_order"] = "BGR"
    manifest_path(artifact).write_text(json.dumps(manifest))
    with Predictor(artifact) as predictor:
        assert_matches_official(predictor.logits([photo])[0], reference, **FP32)


def test_manifest_without_channel_order_is_rgb(onnx_256, tmp_path):
    import shutil

    artifact = tmp_path / onnx_256["edgeformer_s"].name
    shutil.copy(onnx_256["edgeformer_s"], artifact)
    manifest = json.loads(manifest_path(onnx_256["edgeformer_s"]).read_text())
    for key in ("channel_order", "trained_channel_order", "channel_swap"):
        del manifest["preprocess"][key]
    manifest_path(artifact).write_text(json.dumps(manifest))
    with Predictor(artifact) as predictor:
        assert predictor.artifact.channel_order == "RGB"


def test_bad_channel_orders(onnx_256, tmp_path):
    result = run_cli("edgeformer-export", "--channel-order", "grb", "--output", tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        "error: --channel-order must be rgb or bgr (got 'grb')"]
    assert not (tmp_path / "out").exists()
    import shutil

    artifact = tmp_path / onnx_256["edgeformer_s"].name
    shutil.copy(onnx_256["edgeformer_s"], artifact)
    manifest = json.loads(manifest_path(onnx_256["edgeformer_s"]).read_text())
    manifest["preprocess"]["channel_order"] = "YUV"
    manifest_path(artifact).write_text(json.dumps(manifest))
    result = run_cli("edgeformer-predict", sample_images()[0], "--model", artifact)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr
    assert str(manifest_path(artifact)) in errors[0] and "'YUV'" in errors[0]
