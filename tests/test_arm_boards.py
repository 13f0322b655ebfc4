"""``edgeformer-predict`` on real ARM binaries: Debian arm64 / armhf sysroots run by qemu-user.

The boards are built (or reused from the cache) by ``scripts/arm/make_board.sh``. These tests fail
when a board cannot be built; set EDGEFORMER_ARM_TESTS=0 to skip them on a machine without
qemu-user-static. The runtime code comes from this repo (PYTHONPATH = repo root, nothing else): the
boards have no torch, so every run also proves the runtime needs none. Artifacts are exported at
64x64 because emulated float math is slow (EdgeFormer-S: ~15 s per image at 64, ~3 min at 256).
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeformer_deploy.runtime.artifact import manifest_path
from edgeformer_deploy.runtime.preprocess import sample_images
from helpers import assert_same_detections, official_io, run_cli
from runtime_artifacts import REPO_ROOT, export_onnx, write_tiny_tflite

BOARDS = ("aarch64", "armhf")
MACHINE = {"aarch64": "aarch64", "armhf": "armv7l"}
TFLITE_BACKEND = {"aarch64": "ai-edge-litert", "armhf": "tflite-runtime"}
MAX_ABS = 1e-4

pytestmark = pytest.mark.skipif(os.environ.get("EDGEFORMER_ARM_TESTS") == "0",
                                reason="EDGEFORMER_ARM_TESTS=0: emulated ARM boards not wanted here")

# (board, artifact key), artifacts built by the `artifacts` fixture below.
TFLITE_KEYS = [f"{m}{s}.tflite" for m in ("edgeformer_s", "mobilevit_s") for s in ("", "_int8")]
# Every artifact on both boards, MobileViT-S int8 on armhf included: tflite-runtime 2.14 (armv7) crashed on it
# (a per-channel int8 FULLY_CONNECTED with several rows) until int8 exports quantised those weights per tensor.
INT8_TIE_BAND = 0.5
CASES = [("aarch64", "edgeformer_s.onnx"), ("aarch64", "mobilevit_s.onnx")] + [
    (board, key) for board in BOARDS for key in ("tiny.tflite", "tiny_int8.tflite", *TFLITE_KEYS)]


@pytest.fixture(scope="session")
def boards() -> dict[str, Path]:
    roots = {}
    for board in BOARDS:
        result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "arm" / "make_board.sh"), board],
                                capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            pytest.fail(f"cannot build the {board} board (set EDGEFORMER_ARM_TESTS=0 to skip ARM tests):\n"
                        + result.stderr[-3000:])
        roots[board] = Path(result.stdout.strip())  # the script prints the board's path
    return roots


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, official_dir, tflite_64) -> dict[str, Path]:
    exports = tmp_path_factory.getbasetemp() / "exports"
    tiny = tmp_path_factory.mktemp("tiny-arm")
    return {"edgeformer_s.onnx": export_onnx(exports, official_dir, "edgeformer_s"),
            "mobilevit_s.onnx": export_onnx(exports, official_dir, "mobilevit_s"),
            "tiny.tflite": write_tiny_tflite(tiny), "tiny_int8.tflite": write_tiny_tflite(tiny, int8=True),
            **{f"{name}{'_int8' if precision == 'int8' else ''}.tflite": path
               for (name, precision), path in tflite_64.items()}}


def on_board(root: Path, *args, timeout=600) -> subprocess.CompletedProcess:
    """Run the board's python (qemu) with only the repo on PYTHONPATH (no x86 site-packages)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO_ROOT), "LC_ALL": "C.UTF-8",
           "HOME": os.environ.get("HOME", "/tmp"), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([str(root / "run-python"), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=REPO_ROOT)


def logits_here_and_on(board: Path, model: Path) -> tuple[np.ndarray, np.ndarray]:
    """``edgeformer-predict --logits`` of chelsea.jpg on x86 and on the emulated ``board``."""
    image = sample_images()[1]
    x86 = run_cli("edgeformer-predict", image, "--model", model, "--json", "--logits")
    assert x86.returncode == 0, x86.stderr
    arm = on_board(board, "-m", "edgeformer_deploy.runtime.cli", image, "--model", model, "--json", "--logits")
    assert arm.returncode == 0, arm.stderr
    return tuple(np.float64(json.loads(r.stdout)["logits"]) for r in (x86, arm))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("board", BOARDS)
def test_board_is_the_real_thing(boards, board):
    result = on_board(boards[board], "-c", (
        "import platform, sys, numpy, PIL, importlib.util as u; import edgeformer_deploy.runtime.cli;"
        "bad = [m for m in sys.modules if m.startswith(('torch', 'edgeformer_deploy.models', "
        "'edgeformer_deploy.export'))];"
        "print(platform.machine(), numpy.__version__, PIL.__version__, u.find_spec('torch') is None, bad)"))
    assert result.returncode == 0, result.stderr
    machine, numpy_version, pillow_version, no_torch, loaded = result.stdout.split(maxsplit=4)
    assert machine == MACHINE[board] and no_torch == "True" and loaded.strip() == "[]"
    if board == "armhf":  # Debian's numpy/Pillow: the oldest versions the runtime supports
        assert numpy_version.startswith("1.24.") and pillow_version.startswith("9.4.")


@pytest.mark.parametrize("board,key", CASES)
def test_predict_on_board_equals_x86(boards, artifacts, board, key):
    model = artifacts[key]
    image = sample_images()[1]  # chelsea.jpg
    x86 = run_cli("edgeformer-predict", image, "--model", model, "--json", "--logits")
    assert x86.returncode == 0, x86.stderr
    arm = on_board(boards[board], "-m", "edgeformer_deploy.runtime.cli", image, "--model", model, "--json",
                   "--logits")
    assert arm.returncode == 0, arm.stderr
    assert arm.stderr == ""
    want, got = json.loads(x86.stdout), json.loads(arm.stdout)
    assert got["backend"] == ("onnxruntime" if model.suffix == ".onnx" else TFLITE_BACKEND[board])
    reference, logits = np.float64(want["logits"]), np.float64(got["logits"])
    if json.loads(manifest_path(model).read_text())["output"].get("quantization"):
        # Integer kernels requantise differently per architecture / runtime version: compare as the int8
        # export gate does (x86: ai-edge-litert 2.3; armhf: tflite-runtime 2.14).
        assert cosine(reference, logits) >= 0.99
        # the same top-1 unless x86 itself puts the board's top-1 within the int8 tie band of its own (as
        # against the official logits, test_official_pipeline.TIE_BAND): these untrained networks at 64 px
        # have near ties (MobileViT-S on chelsea: 3 classes within 0.22, i.e. 3 output steps, and once an
        # exact 3-way tie), and armv7 tflite-runtime's int8 kernels round differently from x86 XNNPACK's (one
        # logit 0.89 apart there)
        assert reference.max() - reference[logits.argmax()] < INT8_TIE_BAND
    else:
        # float: 1e-4 of the logits' scale (armv7 NEON has no FMA, so sums round differently than on x86)
        assert np.abs(logits - reference).max() <= MAX_ABS * max(1.0, np.abs(reference).max())
        assert [t["class_id"] for t in got["top"]] == [t["class_id"] for t in want["top"]]


def test_armhf_says_what_to_install_for_onnx(boards, artifacts, tmp_path):
    result = on_board(boards["armhf"], "-m", "edgeformer_deploy.runtime.cli", sample_images()[0],
                      tmp_path / "missing.jpg", "--model", artifacts["edgeformer_s.onnx"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("error: onnxruntime is not installed — PyPI has no onnxruntime wheel for "
                                     "32-bit ARM: export to TFLite (edgeformer-export --format tflite) and "
                                     "pip install tflite-runtime==2.14.0 --no-deps")


def test_val_on_armhf_equals_x86(boards, artifacts, tmp_path):
    """``edgeformer-val`` on the oldest board stack (Python 3.11, Debian numpy 1.24 / Pillow 9.4, tflite-runtime
    2.14): the tiny int8 classifier on the photos labelled with its x86 top-1 scores 100 % there too, with the
    x86 document's metrics."""
    from edgeformer_deploy.runtime import Predictor

    model = artifacts["tiny_int8.tflite"]
    data = tmp_path / "set"
    with Predictor(model) as predictor:
        for photo in sample_images():
            folder = data / f"{predictor.predict(photo, topk=1)[0].class_id:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / photo.name).write_bytes(photo.read_bytes())
    x86 = run_cli("edgeformer-val", model, "--data", data, "--json", tmp_path / "x86.json")
    assert x86.returncode == 0, x86.stderr
    arm = on_board(boards["armhf"], "-m", "edgeformer_deploy.val.cli", model, "--data", data, "--json",
                   tmp_path / "arm.json")
    assert arm.returncode == 0, arm.stderr
    want, got = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("x86", "arm"))
    assert got["artifact"]["backend"] == "tflite-runtime" and got["data"]["evaluated"] == 4
    assert got["metrics"] == want["metrics"] and got["per_class"] == want["per_class"]
    assert got["metrics"]["top1"] == 1.0


BOARD_POSTPROCESS = r"""
import sys
import numpy as np
from edgeformer_deploy.runtime.detect import DetectionParams, postprocess
from edgeformer_deploy.runtime.segment import official_mask

data, out = np.load(sys.argv[1]), {}
for name, params in (("official", DetectionParams()), ("agnostic", DetectionParams(class_agnostic=True, max_det=50))):
    found = postprocess(data["confidences"], data["locations"], data["anchors"], params)
    out.update({f"{name}_labels": found.labels, f"{name}_scores": found.scores, f"{name}_boxes": found.boxes})
height, width = data["hw"]
out["mask"] = official_mask(data["logits"], 16, int(height), int(width))
np.savez(sys.argv[2], **out)
"""


@pytest.mark.parametrize("board", BOARDS)
def test_detection_and_mask_post_processing_on_board_are_official(boards, board, det_seg_dir, tmp_path):
    """The board's own numpy (armhf: Debian's 1.24, 32-bit indices) reproduces the official ``predict()``
    from its raw outputs (labels and order exactly, like x86), the class-agnostic option as on x86, and the
    official DeepLab mask of a photo pixel for pixel."""
    from edgeformer_deploy.runtime.detect import DetectionParams, Detections, postprocess

    io = official_io(det_seg_dir, "ssd_edgeformer_s")
    seg = torch.load(det_seg_dir.parent / "official-photos" / "deeplab_photos_io.pt", weights_only=True)
    photo = seg["outputs"]["deeplabv3_edgeformer_s"]["rocket.jpg"]  # the photo with several classes
    inputs = {"confidences": io["pred_raw_confidences_320"][0].numpy(), "locations": io["pred_raw_locations_320"][0].numpy(),
              "anchors": io["anchors_320"].numpy(), "logits": photo["logits_os16"][0].numpy(),
              "hw": np.array(photo["orig_hw"])}
    np.savez(tmp_path / "in.npz", **inputs)
    (tmp_path / "post.py").write_text(BOARD_POSTPROCESS)
    result = on_board(boards[board], tmp_path / "post.py", tmp_path / "in.npz", tmp_path / "out.npz")
    assert result.returncode == 0, result.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    replay = Detections(got["official_labels"], got["official_scores"], got["official_boxes"])
    assert len(replay) > 1000
    assert_same_detections(replay, io["pred_labels_320"].numpy(), io["pred_scores_320"].numpy(),
                           io["pred_boxes_320"].numpy())
    one = np.spacing(np.float32(1))
    x86 = postprocess(inputs["confidences"], inputs["locations"], inputs["anchors"],
                      DetectionParams(class_agnostic=True, max_det=50))
    assert np.array_equal(got["agnostic_labels"], x86.labels) and len(x86) == 50
    assert np.abs(got["agnostic_scores"] - x86.scores).max() <= one
    assert np.array_equal(got["mask"], photo["mask"].numpy())


@pytest.mark.parametrize("gcc", ["conv", "matmul", "gemm"])
def test_fp16_artifact_runs_on_an_fp16_core(boards, official_dir, tmp_path, gcc):
    """The emulated Cortex-A76 has ARMv8.2 FP16 arithmetic. With the GCC as depthwise convs (or grouped 1x1
    convs) the artifact allows it and XNNPACK computes in fp16 there (cosine >= 0.999 vs x86's fp32 from the
    same fp16 weights); with the GCC as circulant MatMuls it must not allow it: XNNPACK then failed to prepare
    the BATCH_MATMULs and the artifact did not load on the board at all."""
    result = run_cli("edgeformer-export", "--model", "edgeformer_s", "--weights", official_dir / "edgeformer_s.pt",
                     "--format", "tflite", "--imgsz", 64, "--half", "--gcc", gcc, "--output", tmp_path,
                     timeout=900, offline=True)
    assert result.returncode == 0, result.stderr
    model = tmp_path / "edgeformer_s_64_fp16.tflite"
    allowed = json.loads(manifest_path(model).read_text())["tflite"]["fp16_arithmetic"]
    assert allowed.startswith("not allowed" if gcc == "matmul" else "allowed")
    reference, logits = logits_here_and_on(boards["aarch64"], model)
    if gcc != "matmul":
        assert cosine(reference, logits) >= 0.999
        assert not np.array_equal(reference, logits)  # fp16 arithmetic really happened
    else:
        assert np.abs(logits - reference).max() <= MAX_ABS * max(1.0, np.abs(reference).max())


def test_aarch64_int8_target_runs_the_gcc_as_grouped_gemms_on_the_a76(boards, official_dir, tmp_path):
    """--target aarch64 --int8 writes the GCC's circulant products as grouped 1x1 convs: XNNPACK's int8 GEMMs
    instead of its depthwise kernels (EdgeFormer-S 256 on the A76: 228.8 M vs 246.6 M instructions, BENCHMARKS.md).
    No depthwise GCC kernel is left, and on the emulated A76 the artifact computes what it computes on x86."""
    result = run_cli("edgeformer-export", "--model", "edgeformer_s", "--weights", official_dir / "edgeformer_s.pt",
                     "--format", "tflite", "--imgsz", 64, "--int8", "--target", "aarch64", "--output", tmp_path,
                     timeout=900, offline=True)
    assert result.returncode == 0, result.stderr
    model = tmp_path / "edgeformer_s_64_aarch64_int8.tflite"
    manifest = json.loads(manifest_path(model).read_text())
    assert manifest["gcc"] == "gemm" and manifest["gcc_max_taps"] is None
    assert manifest["tflite"]["gcc_depthwise_filters"] == [] and "BATCH_MATMUL" not in manifest["ops"]
    assert manifest["parity"]["cosine"] >= 0.99
    reference, logits = logits_here_and_on(boards["aarch64"], model)
    assert cosine(reference, logits) >= 0.99
