"""``--format rknn``: real rknn-toolkit2 2.5.0 conversions in its managed environment, verified in the
toolkit's x86 NPU simulator against the un-lowered PyTorch model (the NPU itself cannot run here)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from edgeformer_deploy.runtime.artifact import load_artifact, manifest_path
from edgeformer_deploy.runtime.preprocess import SAMPLES_DIR
from conftest import RKNN_CASES as CASES
from helpers import assert_one_line_error, run_cli
from test_runtime_predictor import rknn_double  # noqa: F401  (fixture: RKNNLite test double, no NPU here)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{'int8' if c[2] else 'fp16'}")
def test_simulator_parity_and_manifest(rknn_artifacts, case):
    model, target, int8 = case
    path = rknn_artifacts[case]
    manifest = json.loads(manifest_path(path).read_text())
    assert path.read_bytes()[:4] == b"RKNN" and manifest["size_bytes"] == path.stat().st_size
    rknn = manifest["rknn"]
    assert (rknn["target"], rknn["precision"], rknn["toolkit"]) == (target, "int8" if int8 else "fp16", "2.5.0")
    # the board contract: raw uint8 NHWC frames, normalised (x / 255) on the NPU
    assert manifest["input"] == {"name": "images", "shape": [1, 256, 256, 3], "layout": "NHWC", "dtype": "uint8"}
    assert rknn["normalization"] == {"mean": [0, 0, 0], "std": [255, 255, 255], "on": "npu"}
    parity = manifest["parity"]
    assert parity["samples"] == 8 and parity["reference"] == "pytorch (un-lowered)"
    assert parity["limits"]["cosine"] == (0.99 if int8 else 0.999)
    assert parity["cosine"] >= parity["limits"]["cosine"]
    # top-1 is reported; the fixture network is untrained, so its top logits can be near ties that fp16/int8
    # rounding may swap (EdgeFormer-S fp16: astronaut's top-2 differ by 0.030): checked per sample in
    # test_official_pipeline.py against the official pipeline's logits, with the tie band stated there
    assert 0.0 <= parity["top1_agreement"] <= 1.0 and parity["top1_agreement"] >= (0.75 if not int8 else 0.0)
    layers = rknn["layers"]
    # every row is on the NPU, or I/O (Input/OutputOperator, the output reshape), or a counted fallback
    assert layers["npu"] + len(layers["io_on_cpu"]) + layers["cpu_fallback"] == layers["total"]
    assert {row.split()[0] for row in layers["io_on_cpu"]} <= {"InputOperator", "OutputOperator", "Reshape"}
    if model == "edgeformer_s":
        # every GCC is a <=16-tap depthwise conv already, so the toolkit has nothing left to split
        assert layers["cpu_fallback"] == 0 and rknn["toolkit_split_large_kernels"] == 0
        assert manifest["gcc_max_taps"] == 16
    artifact = load_artifact(path)  # the runtime's manifest checks (size, sha256, shape) accept it
    assert artifact.input.dtype == "uint8" and artifact.input.layout == "NHWC"
    if int8:
        assert rknn["calibration"] == {"images": 4, "source": str(SAMPLES_DIR), "ranges": "minmax",
                                        "quantized_algorithm": "normal"}
        analysis = rknn["analysis"]
        report = path.parent / analysis["dir"] / "error_analysis.txt"
        assert report.is_file() and analysis["layers"] > 10
        assert 0.9 <= analysis["output_cosine"] <= 1.0


def test_int8_differs_from_fp16(rknn_artifacts):
    fp16 = json.loads(manifest_path(rknn_artifacts[("edgeformer_s", "rk3588", False)]).read_text())
    int8 = json.loads(manifest_path(rknn_artifacts[("edgeformer_s", "rk3566", True)]).read_text())
    # quantisation costs accuracy: the gate numbers must show it (a copied fp16 result would not)
    assert int8["parity"]["cosine"] < fp16["parity"]["cosine"]
    assert int8["size_bytes"] < fp16["size_bytes"]


def test_mse_calibration_runs_the_toolkits_mmse(tmp_path, official_dir):
    """--calibration mse builds with rknn-toolkit2's least-error quantiser (its log shows the MMSE pass; the
    default build has none) and the artifact still passes the int8 gate in the simulator."""
    logs = {}
    for ranges in ("minmax", "mse"):
        result = run_cli("edgeformer-export", "--weights", official_dir / "edgeformer_s.pt", "--format", "rknn",
                         "--target", "rk3566", "--int8", "--calibration", ranges, "--imgsz", "64", "--verbose",
                         "--output", tmp_path / ranges, timeout=1200)
        assert result.returncode == 0, result.stderr
        manifest = json.loads(manifest_path(tmp_path / ranges / "edgeformer_s_64_rk3566_int8.rknn").read_text())
        calibration = manifest["rknn"]["calibration"]
        assert calibration["ranges"] == ranges
        assert calibration["quantized_algorithm"] == {"minmax": "normal", "mse": "mmse"}[ranges]
        assert manifest["parity"]["cosine"] >= 0.99
        logs[ranges] = "".join(p.read_text(errors="replace") for p in (tmp_path / ranges).glob("*.build.log"))
    assert "MmseQuant" in logs["mse"] and "MmseQuant" not in logs["minmax"]


@pytest.mark.parametrize("target, needles", [
    ("rk3288", ["rk3288 has no NPU", "--format tflite"]),
    ("rk3399", ["rk3399 has no NPU", "--format tflite"]),
    ("rk3328", ["rk3328 has no NPU", "--format tflite"]),
    ("rk1808", ["rknn-toolkit 1.x", "--format tflite"]),
    ("rk9999", ["unknown --target 'rk9999'", "rk3588, rk3576, rk3566, rk3568, rk3562"]),
])
def test_target_refusals(tmp_path, target, needles):
    out = tmp_path / "out"
    assert_one_line_error(run_cli("edgeformer-export", "--format", "rknn", "--target", target, "--output", out),
                          *needles)
    assert not out.exists()


@pytest.mark.parametrize("args, needle", [
    (["--format", "rknn", "--opset", "20"], "opset 19 at most"),
    (["--format", "rknn", "--batch", "4"], "batch 1 only"),
    (["--format", "onnx", "--target", "rk3588"], "--target applies to --format rknn or tflite"),
    (["--format", "tflite", "--target", "mips"],
     "unknown TFLite --target 'mips'; choose one of aarch64, armv7, x86_64"),
    (["--format", "tflite", "--analyze"], "--analyze applies to --format rknn"),
    (["--format", "rknn", "--int8", "--data", "/nonexistent/images"], "not a folder"),
])
def test_argument_refusals(tmp_path, args, needle):
    assert_one_line_error(run_cli("edgeformer-export", *args, "--output", tmp_path / "out"), needle)
    assert not (tmp_path / "out").exists()


def test_missing_environment_that_cannot_be_created_says_how(tmp_path):
    """A missing environment is created on first use; when that fails (here: pip gets no package index at
    all) the one line says what failed and which command creates it."""
    env = dict(os.environ, EDGEFORMER_ENVS=str(tmp_path / "envs"), PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1",
               PIP_FIND_LINKS="")
    result = run_cli("edgeformer-export", "--format", "rknn", "--output", tmp_path / "out", env=env)
    assert_one_line_error(result, "could not create the rknn environment", "edgeformer-export env create rknn")
    assert not (tmp_path / "envs" / "rknn").exists() and not (tmp_path / "out").exists()


def test_broken_environment_says_how_to_fix(tmp_path):
    import shutil

    from edgeformer_deploy.export.converter_env import ENVS, STAMP

    envs = tmp_path / "envs"
    (envs / "rknn" / "bin").mkdir(parents=True)
    os.symlink(shutil.which("false"), envs / "rknn" / "bin" / "python")
    (envs / "rknn" / STAMP).write_text(ENVS["rknn"].lock_hash() + "\n")
    result = run_cli("edgeformer-export", "--format", "rknn", "--output", tmp_path / "out",
                     env=dict(os.environ, EDGEFORMER_ENVS=str(envs)))
    assert_one_line_error(result, "broken", "edgeformer-export env create rknn --force")


def test_layer_table_parsing_finds_cpu_fallback():
    from edgeformer_deploy.export.rknn_format import io_layers, parse_layer_table

    log = "\n".join([
        "D RKNN: [11:21:17.388] ID   OpType   DataType Target InputShape   OutputShape   Cycles   RW(KB)   FullName",
        "D RKNN: [11:21:17.388] 0    InputOperator      FLOAT16  CPU    \\    (1,3,64,64)   0/0/0   0   InputOperator:images",
        "D RKNN: [11:21:17.388] 1    ConvRelu           FLOAT16  NPU    (1,3,64,64),(32,3,3,3),(32)  (1,32,32,32)  "
        "4010/18432/18432   28   Conv:c1",
        "D RKNN: [11:21:17.388] 2    Sin                FLOAT16  CPU    (1,32,32,32)  (1,32,32,32)  0/0/0  64  Sin:s",
        "E RKNN: [11:21:17.390] Unkown op target: 0",
    ])
    layers = parse_layer_table(log)
    assert layers == [("InputOperator", "CPU", "InputOperator:images"), ("ConvRelu", "NPU", "Conv:c1"),
                                      ("Sin", "CPU", "Sin:s")]
    assert io_layers(layers) == {0}  # the Sin is compute on the CPU, not I/O
    assert io_layers(layers + [("Reshape", "CPU", "Reshape:out_rs"), ("OutputOperator", "CPU", "x:y")]) == {0, 3, 4}


def test_board_runtime_reads_the_exported_contract(rknn_artifacts, rknn_double):
    """The real exported .rknn + manifest through the board runtime; only RKNNLite (the NPU) is a test double:
    it must be handed the board's raw uint8 NHWC 256x256 frames the manifest promises."""
    from edgeformer_deploy.runtime.predictor import Predictor
    from edgeformer_deploy.runtime.preprocess import sample_images

    path = rknn_artifacts[("edgeformer_s", "rk3588", False)]
    with Predictor(path) as predictor:
        predictor.predict(sample_images()[0], topk=1)
        sent = rknn_double.instances[0].calls[2][1][0]
        assert sent.dtype == np.uint8 and sent.shape == (1, 256, 256, 3)
        assert np.array_equal(sent, predictor.crops([sample_images()[0]]))
