"""`edgeformer-export --format tflite`: real onnx2tf conversions, run in ai-edge-litert and tflite-runtime 2.14."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from edgeformer_deploy.export.tflite_format import tflite_runner
from edgeformer_deploy.export.verify import verification_inputs
from helpers import assert_one_line_error as _assert_one_line_error, read_manifest as _manifest, run_cli

GCC_FILTERS_256_16_TAPS = 2 * 4 + 4 * 2 + 3 * 2  # stage 3: 32 taps -> 2 chunks per axis; stages 4, 5: one


def _flatbuffer(path):
    from ai_edge_litert import schema_py_generated as fb

    return fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(path.read_bytes(), 0))


def weight_scales(path, op_name: str) -> list[int]:
    """Number of quantisation scales of each ``op_name`` weight tensor (input 1) in the artifact."""
    from ai_edge_litert import schema_py_generated as fb

    model = _flatbuffer(path)
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    graph = model.subgraphs[0]
    return [len(graph.tensors[op.inputs[1]].quantization.scale) for op in graph.operators
            if names[max(model.operatorCodes[op.opcodeIndex].builtinCode,
                         model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode)] == op_name]


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_edgeformer_graph_is_clean_nhwc(tflite_artifacts, precision):
    manifest = _manifest(tflite_artifacts[("edgeformer_s", precision)])
    ops = manifest["ops"]
    assert "TRANSPOSE" not in ops and "GATHER" not in ops
    assert not [op for op in ops if op.startswith(("RESIZE", "FLEX", "CUSTOM"))]
    filters = manifest["tflite"]["gcc_depthwise_filters"]  # [1, kh, kw, C] of every long-kernel depthwise conv
    assert len(filters) == GCC_FILTERS_256_16_TAPS and all(max(f[1:3]) <= 16 for f in filters)
    assert ops["DEPTHWISE_CONV_2D"] >= len(filters)
    assert manifest["input"]["shape"] == [1, 256, 256, 3] and manifest["input"]["layout"] == "NHWC"
    assert manifest["gcc"] == "conv" and manifest["gcc_max_taps"] == 16
    if precision == "int8":
        assert manifest["input"]["dtype"] == "int8" and manifest["output"]["dtype"] == "int8"
        quant = manifest["input"]["quantization"]
        assert quant["scale"] == pytest.approx(1 / 255, rel=1e-3) and quant["zero_point"] == -128
        assert manifest["tflite"]["calibration"]["images"] == 4
        assert manifest["hardswish"] == "native" and "HARD_SWISH" in ops  # (--target x86_64: ADD(RELU6) + MUL)
    else:
        assert manifest["input"]["dtype"] == "float32" and manifest["input"]["quantization"] is None


@pytest.mark.parametrize("name", ["edgeformer_s", "mobilevit_s"])
def test_parity_gate_numbers(tflite_artifacts, name):
    fp32 = _manifest(tflite_artifacts[(name, "fp32")])["parity"]
    int8 = _manifest(tflite_artifacts[(name, "int8")])["parity"]
    assert fp32["max_abs"] <= 1e-4 and fp32["top1_agreement"] == 1.0
    assert int8["cosine"] >= 0.99 and 0.0 <= int8["top5_agreement"] <= 1.0


@pytest.mark.parametrize("name", ["edgeformer_s", "mobilevit_s"])
def test_int8_recipe(tflite_artifacts, name):
    """Convolutions per channel, FULLY_CONNECTED per tensor (tflite-runtime 2.14 on armv7 crashes on per-channel
    FC with several rows: MobileViT's transformer layers; test_arm_boards runs the artifact there)."""
    path = tflite_artifacts[(name, "int8")]
    assert _manifest(path)["tflite"]["quantization"]["fully_connected_weights"] == "int8 per tensor"
    fully_connected, conv = weight_scales(path, "FULLY_CONNECTED"), weight_scales(path, "CONV_2D")
    assert fully_connected and set(fully_connected) == {1}
    assert conv and min(conv) > 1


@pytest.fixture(scope="module")
def fp16_artifact(tmp_path_factory, official_dir):
    out = tmp_path_factory.mktemp("fp16")
    result = run_cli("edgeformer-export", "--format", "tflite", "--half", "--verbose", "--weights",
                     official_dir / "edgeformer_s.pt", "--output", out, timeout=1200)
    assert result.returncode == 0, result.stderr
    return out / "edgeformer_s_256_fp16.tflite"


def test_fp16_export(fp16_artifact):
    manifest = _manifest(fp16_artifact)
    assert manifest["parity"]["cosine"] >= 0.9999 and manifest["tflite"]["precision"] == "fp16"
    assert (fp16_artifact.parent / "edgeformer_s_256.convert.log").is_file()  # --verbose keeps the log
    # XNNPACK may compute in fp16 where the CPU has it (ARMv8.2 FP16), and says so in the manifest
    model = _flatbuffer(fp16_artifact)
    metadata = {m.name.decode(): bytes(model.buffers[m.buffer].data) for m in model.metadata}
    assert metadata["reduced_precision_support"] == b"fp16accfp16"
    assert "fp16" in manifest["tflite"]["fp16_arithmetic"]


@pytest.mark.parametrize("key", [("edgeformer_s", "fp32"), ("edgeformer_s", "int8"), ("mobilevit_s", "fp32"),
                                 ("mobilevit_s", "int8"), "fp16"])
def test_runs_in_tflite_runtime_2_14(tflite_artifacts, fp16_artifact, key):
    """What an RK3288 board can install: tflite-runtime 2.14 with numpy < 2, in its own environment."""
    path = fp16_artifact if key == "fp16" else tflite_artifacts[key]
    x, _ = verification_inputs(256)
    (old,) = tflite_runner(path, None, runtime="tflite_runtime", env_name="tflite-runtime")(x)
    (new,) = tflite_runner(path, None, runtime="ai_edge_litert")(x)
    assert old.shape == (len(x), 1000)
    if _manifest(path)["output"]["quantization"]:
        # int8 kernels differ between the two runtimes (rounding), so compare like the int8 gate does
        cosine = (old * new).sum(1) / (np.linalg.norm(old, axis=1) * np.linalg.norm(new, axis=1))
        assert cosine.min() >= 0.99
    else:
        assert np.abs(old - new).max() <= 1e-4


def test_calibration_folder_refusals(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    out = tmp_path / "out"
    _assert_one_line_error(run_cli("edgeformer-export", "--format", "tflite", "--int8", "--data", empty,
                                   "--output", out), "no JPEG/PNG")
    _assert_one_line_error(run_cli("edgeformer-export", "--format", "tflite", "--int8", "--data",
                                   tmp_path / "missing", "--output", out), "not a folder")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "cat.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    _assert_one_line_error(run_cli("edgeformer-export", "--format", "tflite", "--int8", "--data", broken,
                                   "--output", out), "cat.jpg")
    assert not out.exists()


@pytest.mark.parametrize("args, needle", [
    (["--batch", "2"], "batch 1 only"), (["--dynamic-batch"], "batch 1 only"), (["--half", "--int8"], "exclude"),
    (["--calibration", "mse"], "add --int8")])
def test_tflite_argument_refusals(tmp_path, args, needle):
    _assert_one_line_error(run_cli("edgeformer-export", "--format", "tflite", *args, "--output", tmp_path / "o"),
                           needle)


def test_mse_range_clips_tails_and_keeps_uniform_data():
    """The worker's per-tensor search: a peaked, tailed sample (Laplace; the rare extremes set min/max) gets a
    narrower range with less int8 error than its min/max; uniform data keeps its range (clipping it only adds
    error)."""
    import importlib.util

    from edgeformer_deploy.export import tflite_format

    spec = importlib.util.spec_from_file_location("tflite_worker", tflite_format.WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    rng = np.random.default_rng(0)
    tailed = rng.laplace(0.0, 1.0, 100_000)
    lo, hi = worker.mse_range(tailed, tailed.min(), tailed.max())
    assert tailed.min() < lo < 0 < hi < tailed.max() and hi - lo < 0.95 * (tailed.max() - tailed.min())
    assert worker._int8_error(tailed, lo, hi) < 0.9 * worker._int8_error(tailed, tailed.min(), tailed.max())
    uniform = rng.uniform(-1, 3, 100_000)
    assert worker.mse_range(uniform, uniform.min(), uniform.max()) == (uniform.min(), uniform.max())


def test_broken_converter_environment_says_how_to_fix(tmp_path):
    from edgeformer_deploy.export.converter_env import ENVS, STAMP

    envs = tmp_path / "envs"
    broken = envs / "tflite" / "bin"
    broken.mkdir(parents=True)
    os.symlink(shutil.which("false"), broken / "python")  # an interpreter that cannot run anything
    (envs / "tflite" / STAMP).write_text(ENVS["tflite"].lock_hash() + "\n")
    result = run_cli("edgeformer-export", "--format", "tflite", "--output", tmp_path / "out",
                     env=dict(os.environ, EDGEFORMER_ENVS=str(envs)))
    _assert_one_line_error(result, "broken", "edgeformer-export env create tflite --force")
    assert not (tmp_path / "out").exists()


def test_env_list():
    result = run_cli("edgeformer-export", "env", "list")
    assert result.returncode == 0 and "tflite" in result.stdout and "ready" in result.stdout
