"""DeepLabv3-EdgeFormer-S / DeepLabv3-MobileViT-S against the official code's fixtures: the network, the
board's mask computation (bit for bit), the whole photo -> mask chain; plus the segmentation CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import OFFICIAL
from edgeformer_deploy.errors import CheckpointError
from edgeformer_deploy.models import count_params, create_model, model_spec
from edgeformer_deploy.runtime import Predictor
from edgeformer_deploy.runtime.artifact import manifest_path
from edgeformer_deploy.runtime.errors import ArtifactError
from edgeformer_deploy.runtime.preprocess import read_image, resize_stretch, sample_images
from edgeformer_deploy.runtime.segment import official_mask, upsampled_logits
from helpers import official_io, run_cli

PHOTOS = OFFICIAL.parent / "official-photos" / "deeplab_photos_io.pt"
MODELS = ["deeplabv3_edgeformer_s", "deeplabv3_mobilevit_s"]
OFFICIAL_PARAMS = {"deeplabv3_edgeformer_s": 5_816_397, "deeplabv3_mobilevit_s": 6_357_941}
# float32 noise relative to the largest logit: two float32 computations of the same network (the fixture
# vs this one, or vs float64) differ by < 4e-6 of max |logit| here; a wrong channel order moves them by 0.2-0.4
# relative, a missing classifier bias by std 0.33 absolute on logits of std 3-4 (fixtures README).
FLOAT32_NOISE = 1e-5


@pytest.mark.parametrize("name", MODELS)
def test_registry_and_parameter_count(name):
    spec = model_spec(name)
    assert (spec.task, spec.imgsz, spec.num_classes, spec.resize, spec.labels) == (
        "segmentation", 512, 21, "stretch", "voc21")
    assert count_params(create_model(name)) == OFFICIAL_PARAMS[name]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("imgsz", [512, 256])
def test_official_checkpoint_parity(det_seg_dir, name, imgsz):
    model = create_model(name, weights=det_seg_dir / f"{name}.pt")
    io = official_io(det_seg_dir, name)
    x = io[f"input_{imgsz}"]
    with torch.no_grad():
        logits = model.logits_os16(x)
        exact = model.double().logits_os16(x.double())
        full = model.float()(x)
    reference = io[f"logits_os16_{imgsz}"]
    bound = FLOAT32_NOISE * reference.abs().max().item()
    assert logits.shape == reference.shape == (2, 21, imgsz // 16, imgsz // 16)
    assert (logits - reference).abs().max().item() <= bound
    assert (exact.float() - reference).abs().max().item() <= bound
    assert full.shape == (2, 21, imgsz, imgsz)  # the official output: upsampled inside the model
    assert (full[:, :, ::8, ::8] - io[f"logits_{imgsz}_s8"]).abs().max().item() <= bound
    assert (full[:, :, :32, :32] - io[f"logits_{imgsz}_crop32"]).abs().max().item() <= bound


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("imgsz", [512, 256])
def test_board_upsampling_and_mask_are_bit_exact(det_seg_dir, name, imgsz):
    io = official_io(det_seg_dir, name)
    for i, logits in enumerate(io[f"logits_os16_{imgsz}"].numpy()):
        full = upsampled_logits(logits, 16)
        assert np.array_equal(full[:, ::8, ::8], io[f"logits_{imgsz}_s8"][i].numpy())
        assert np.array_equal(full[:, :32, :32], io[f"logits_{imgsz}_crop32"][i].numpy())
        assert np.array_equal(official_mask(logits, 16, imgsz, imgsz), io[f"mask_{imgsz}"][i].numpy())


@pytest.mark.parametrize("name", MODELS)
def test_masks_at_the_original_size_on_the_official_photos(name):
    """The board evaluates the x16 map only at the nearest-resize points: the official H x W mask exactly."""
    official = torch.load(PHOTOS, weights_only=True)
    for photo in official["photos"]:
        out = official["outputs"][name][photo]
        h, w = out["orig_hw"]
        logits = out["logits_os16"][0].numpy()
        assert np.array_equal(official_mask(logits, 16, h, w), out["mask"].numpy())
        assert np.array_equal(official_mask(logits, 16, 512, 512), out["mask_512"].numpy())


@pytest.mark.parametrize("seed", range(4))
def test_mask_shortcut_equals_torch_on_hard_logits(seed):
    """Pixels of grid cells whose corners agree are not interpolated: on logits full of boundaries, near
    ties and exact ties the mask must still be torch's bilinear x16 -> nearest -> argmax, pixel for pixel."""
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    logits = (rng.normal(0, 3, (21, 16, 16)) * [0.01, 1, 100, 1][seed]).astype(np.float32)
    logits[:5] += rng.normal(0, 1e-3, (5, 16, 16)).astype(np.float32)  # near ties
    logits[3] = logits[7]  # exact ties: the lower class wins
    height, width = int(rng.integers(40, 500)), int(rng.integers(40, 500))
    up = F.interpolate(torch.from_numpy(logits)[None], scale_factor=16, mode="bilinear", align_corners=False)
    reference = F.interpolate(up, size=(height, width), mode="nearest").argmax(1)[0].numpy()
    assert np.array_equal(official_mask(logits, 16, height, width), reference)


def test_preprocessing_is_the_official_array():
    official = torch.load(PHOTOS, weights_only=True)
    for photo in sample_images():
        bgr = resize_stretch(read_image(photo), 512)[..., ::-1]
        assert np.array_equal(bgr, official["inputs"][photo.name]["resized_bgr_uint8_hwc"].numpy())


def test_wrong_task_weights_refused(det_seg_dir):
    with pytest.raises(CheckpointError, match="does not fit ssd_edgeformer_s — it looks like a segmentation"):
        create_model("ssd_edgeformer_s", weights=det_seg_dir / "deeplabv3_edgeformer_s.pt")
    with pytest.raises(CheckpointError, match="does not fit deeplabv3_mobilevit_s — it looks like a detection"):
        create_model("deeplabv3_mobilevit_s", weights=det_seg_dir / "ssd_mobilevit_s.pt")


# -- export and board runtime ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def seg_onnx(tmp_path_factory, det_seg_dir):
    out = tmp_path_factory.mktemp("seg-onnx")
    paths = {}
    for name in MODELS:
        result = run_cli("edgeformer-export", "--model", name, "--weights", det_seg_dir / f"{name}.pt", "--output", out,
                         offline=True, timeout=900)
        assert result.returncode == 0, result.stderr
        paths[name] = out / f"{name}_512.onnx"
    return paths


def test_onnx_manifest_and_gate(seg_onnx):
    manifest = json.loads(manifest_path(seg_onnx["deeplabv3_edgeformer_s"]).read_text())
    assert manifest["task"] == "segmentation" and manifest["labels"] == "voc21"
    assert manifest["outputs"][0]["name"] == "logits_os16" and manifest["outputs"][0]["shape"] == [1, 21, 32, 32]
    assert manifest["postprocess"]["upsample"] == 16
    assert not {"Resize", "Expand", "Shape"} & set(manifest["ops"])  # no upsampling, pooling is a broadcast Add
    parity = manifest["parity"]
    assert parity["max_rel"] <= 1e-5 and parity["masks"]["pixel_agreement"] >= 0.999


@pytest.mark.parametrize("name", MODELS)
def test_photo_to_mask_matches_the_official_pipeline(seg_onnx, name):
    official = torch.load(PHOTOS, weights_only=True)
    with Predictor(seg_onnx[name]) as predictor:
        assert predictor.task == "segmentation" and predictor.labels[15] == "person"
        for photo in sample_images():
            reference = official["outputs"][name][photo.name]["mask"].numpy()
            mask = predictor.predict(photo)
            assert mask.dtype == np.uint8 and mask.shape == reference.shape
            assert (mask == reference).mean() >= 0.999


def test_segmenter_refused_as_detector(seg_onnx):
    with pytest.raises(ArtifactError, match="a segmentation artifact, not detection"):
        Predictor(seg_onnx["deeplabv3_mobilevit_s"], task="detection")


def test_manifest_output_must_fit_the_task(seg_onnx, tmp_path):
    import shutil

    source = seg_onnx["deeplabv3_mobilevit_s"]
    target = tmp_path / source.name
    shutil.copy(source, target)
    manifest = json.loads(manifest_path(source).read_text())
    manifest["outputs"][0]["shape"] = [1, 21, 64, 64]
    manifest_path(target).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"task segmentation needs one output .* \[batch, 21, 32, 32\]"):
        Predictor(target)


def test_predict_cli_json_and_saved_masks(seg_onnx, tmp_path):
    photos = sample_images()
    model = seg_onnx["deeplabv3_edgeformer_s"]
    result = run_cli("edgeformer-predict", *photos, "--model", model, "--json", "--save", tmp_path / "masks")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    official = torch.load(PHOTOS, weights_only=True)["outputs"]["deeplabv3_edgeformer_s"]
    for record, photo in zip(records, photos):
        width, height = Image.open(photo).size
        assert record["file"] == str(photo) and record["size"] == [width, height]
        assert abs(sum(c["fraction"] for c in record["classes"]) - 1) < 1e-9
        mask = Image.open(tmp_path / "masks" / f"{photo.stem}_mask.png")
        assert mask.mode == "P" and mask.size == (width, height)
        values = np.asarray(mask)
        assert (values == official[photo.name]["mask"].numpy()).mean() >= 0.999
        present = {c["class_id"]: c["fraction"] for c in record["classes"]}
        assert set(np.unique(values)) == set(present)
        assert Image.open(tmp_path / "masks" / f"{photo.stem}_overlay.png").size == (width, height)
    table = run_cli("edgeformer-predict", photos[3], "--model", model)
    assert table.returncode == 0 and "bicycle" in table.stdout and "mask" in table.stdout
    bad = run_cli("edgeformer-predict", photos[3], "--model", model, "--conf", "0.3")
    assert bad.returncode == 2 and "applies to detection artifacts" in bad.stderr


# -- TFLite and RKNN (real converters; the RKNN NPU itself is the toolkit's simulator) --------------
@pytest.fixture(scope="module")
def seg_converted(tmp_path_factory, det_seg_dir):
    out = tmp_path_factory.mktemp("seg-converted")
    weights = det_seg_dir / "deeplabv3_edgeformer_s.pt"
    for fmt in ("tflite", "rknn"):
        result = run_cli("edgeformer-export", "--model", "deeplabv3_edgeformer_s", "--weights", weights,
                         "--format", fmt, "--output", out, timeout=1200, offline=True)
        assert result.returncode == 0, result.stderr
    return {"tflite": out / "deeplabv3_edgeformer_s_512.tflite",
            "rknn": out / "deeplabv3_edgeformer_s_512_rk3588.rknn"}


def test_tflite_segmenter_masks(seg_converted):
    """TFLite keeps the 4-d output channels-last: the manifest says so and the board reads it as such."""
    manifest = json.loads(manifest_path(seg_converted["tflite"]).read_text())
    assert manifest["outputs"][0]["layout"] == "NHWC" and manifest["outputs"][0]["shape"] == [1, 32, 32, 21]
    assert manifest["parity"]["masks"]["pixel_agreement"] >= 0.999
    assert not {"TRANSPOSE", "RESIZE_BILINEAR", "GATHER"} & set(manifest["ops"])
    official = torch.load(PHOTOS, weights_only=True)["outputs"]["deeplabv3_edgeformer_s"]
    with Predictor(seg_converted["tflite"]) as predictor:
        for photo in sample_images():
            assert (predictor.predict(photo) == official[photo.name]["mask"].numpy()).mean() >= 0.999


def test_rknn_segmenter_on_the_npu(seg_converted):
    from edgeformer_deploy.export.rknn_format import simulator_outputs
    from edgeformer_deploy.runtime.segment import official_mask as mask_of

    path = seg_converted["rknn"]
    manifest = json.loads(manifest_path(path).read_text())
    assert manifest["rknn"]["layers"]["cpu_fallback"] == 0
    assert manifest["parity"]["cosine"] >= 0.999 and manifest["parity"]["masks"]["pixel_agreement"] >= 0.999
    saved = np.load(path.with_name(path.name + ".simulator.npz"))
    logits = simulator_outputs(saved)[0]
    assert logits.shape == (8, 21, 32, 32)
    official = torch.load(PHOTOS, weights_only=True)["outputs"]["deeplabv3_edgeformer_s"]
    for photo, frame_logits in zip(sample_images(), logits):  # the first frames are the photos
        assert (mask_of(frame_logits, 16, 512, 512) == official[photo.name]["mask_512"].numpy()).mean() >= 0.99
