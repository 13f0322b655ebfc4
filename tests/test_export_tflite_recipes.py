"""TFLite export recipes checked on artifacts each test converts itself: the per-CPU-class forms of ``--target``
(measured cheapest there, BENCHMARKS.md "ARM kernels") and ``--calibration mse``. Not tied to the converter
group's session fixtures (test_export_tflite.py), so under xdist this file runs beside that group."""
from __future__ import annotations

import numpy as np

from helpers import read_manifest as _manifest, run_cli


def test_cpu_target_int8_forms(tmp_path, official_dir):
    """--target armv7 --int8: the stride-2 convs' zero padding as concatenations (no int8 PAD, which
    tflite-runtime 2.14 runs at ~17 instructions per element there) and the channel-adaptive pairs as
    MUL/ADD halves (no reference grouped CONV_2D), measured cheaper on armv7 (BENCHMARKS.md), and HardSwish
    kept as the one int8 op (tflite-runtime 2.14 has a NEON kernel for it there); through the int8 gate like
    any int8 artifact."""
    result = run_cli("edgeformer-export", "--format", "tflite", "--int8", "--target", "armv7", "--imgsz", "64",
                     "--weights", official_dir / "edgeformer_s.pt", "--output", tmp_path, timeout=1200)
    assert result.returncode == 0, result.stderr
    manifest = _manifest(tmp_path / "edgeformer_s_64_armv7_int8.tflite")
    assert manifest["strided_pad"] == "concat" and manifest["pair_conv"] == "mul_add"
    assert "PAD" not in manifest["ops"] and "CONCATENATION" in manifest["ops"]
    assert manifest["hardswish"] == "native" and "HARD_SWISH" in manifest["ops"]
    assert manifest["parity"]["cosine"] >= 0.99


def test_x86_target_writes_hardswish_as_xnnpack_int8_ops(tmp_path, official_dir):
    """--target x86 --int8: HardSwish as ADD(RELU6) + MUL with the 1/6 in the next conv — TFLite's int8
    HARD_SWISH is a scalar loop off ARM, the ADD and MUL are XNNPACK int8 ops (BENCHMARKS.md: 14.0 -> 9.2 ms) —
    and the GCC as grouped 1x1 convs (XNNPACK's int8 GEMMs: 8.74 -> 8.18 ms); through the int8 gate. Portable
    int8 artifacts keep the native op (it costs accuracy at small sizes)."""
    result = run_cli("edgeformer-export", "--format", "tflite", "--int8", "--target", "x86", "--imgsz", "64",
                     "--weights", official_dir / "edgeformer_s.pt", "--output", tmp_path, timeout=1200)
    assert result.returncode == 0, result.stderr
    manifest = _manifest(tmp_path / "edgeformer_s_64_x86_64_int8.tflite")
    assert manifest["cpu_target"]["name"] == "x86_64" and manifest["hardswish"] == "relu6_mul"
    assert "HARD_SWISH" not in manifest["ops"] and manifest["parity"]["cosine"] >= 0.99
    assert manifest["gcc"] == "gemm" and manifest["tflite"]["gcc_depthwise_filters"] == []


def test_cpu_target_picks_the_measured_gcc_formulation(tmp_path, official_dir):
    """--target rk3288 = armv7, where the circulant MatMul measured cheaper than the depthwise chunks
    (tflite-runtime 2.14 without XNNPACK) except on 8x8 maps; the manifest says what was chosen and on what
    measurement. At 128 the GCC maps are 16 (MatMul), 8 and 4 (depthwise conv)."""
    result = run_cli("edgeformer-export", "--format", "tflite", "--target", "rk3288", "--imgsz", "128", "--weights",
                     official_dir / "edgeformer_s.pt", "--output", tmp_path, timeout=1200)
    assert result.returncode == 0, result.stderr
    manifest = _manifest(tmp_path / "edgeformer_s_128_armv7.tflite")
    assert manifest["gcc"] == "matmul" and manifest["gcc_max_taps"] is None and manifest["gcc_conv_upto"] == 8
    assert "BATCH_MATMUL" in manifest["ops"] and "DEPTHWISE_CONV_2D" in manifest["ops"]
    assert manifest["cpu_target"]["name"] == "armv7" and "matmul" in manifest["cpu_target"]["gcc_measured"]
    assert manifest["silu"] == "tanh" and "TANH" in manifest["ops"]  # (LOGISTIC stays: channel attention)
    assert manifest["pair_conv"] == "mul_add" and "STRIDED_SLICE" in manifest["ops"]
    assert manifest["parity"]["max_abs"] <= 1e-4 and "TRANSPOSE" in manifest["ops"]


def test_aarch64_target_cuts_gcc_kernels_for_xnnpack_25_tap_depthwise(tmp_path, official_dir):
    """--target rk3588 --half: the GCC as depthwise chunks of <= 25 taps (XNNPACK's unipass kernel; measured
    cheaper on the A76 than 16 or 9 taps), with fp16 arithmetic allowed. At 256 the 32-wide kernels become 25 + 7."""
    result = run_cli("edgeformer-export", "--format", "tflite", "--half", "--target", "rk3588", "--weights",
                     official_dir / "edgeformer_s.pt", "--output", tmp_path, timeout=1200)
    assert result.returncode == 0, result.stderr
    manifest = _manifest(tmp_path / "edgeformer_s_256_aarch64_fp16.tflite")
    assert manifest["gcc"] == "conv" and manifest["gcc_max_taps"] == 25
    taps = {max(f[1:3]) for f in manifest["tflite"]["gcc_depthwise_filters"]}
    assert max(taps) == 25 and 7 in taps
    assert manifest["tflite"]["fp16_arithmetic"].startswith("allowed")


def _activation_ranges(path) -> dict[str, tuple[float, float]]:
    """Every per-tensor int8 activation range of an artifact, by tensor name."""
    from ai_edge_litert.interpreter import Interpreter

    ranges = {}
    for t in Interpreter(model_path=str(path)).get_tensor_details():
        scales, zeros = t["quantization_parameters"]["scales"], t["quantization_parameters"]["zero_points"]
        if t["dtype"] == np.int8 and len(scales) == 1 and t["name"] and "weight" not in t["name"].lower():
            ranges[t["name"]] = (float((-128 - zeros[0]) * scales[0]), float((127 - zeros[0]) * scales[0]))
    return ranges


def test_mse_calibration_narrows_activation_ranges(tmp_path, official_dir):
    """--calibration mse: the same artifact but with least-error activation ranges — never wider than the
    calibrator's min/max, narrower where a tail is worth clipping — and still through the int8 gate."""
    paths = {}
    for ranges in ("minmax", "mse"):
        result = run_cli("edgeformer-export", "--format", "tflite", "--int8", "--calibration", ranges, "--imgsz",
                         "64", "--weights", official_dir / "edgeformer_s.pt", "--output", tmp_path / ranges,
                         timeout=1200)
        assert result.returncode == 0, result.stderr
        paths[ranges] = tmp_path / ranges / "edgeformer_s_64_int8.tflite"
        assert _manifest(paths[ranges])["tflite"]["calibration"]["ranges"] == ranges
    wide, narrow = _activation_ranges(paths["minmax"]), _activation_ranges(paths["mse"])
    common = sorted(set(wide) & set(narrow))
    assert len(common) > 100
    width = {name: [(r[name][1] - r[name][0]) for r in (wide, narrow)] for name in common}
    assert all(n <= w * (1 + 1e-5) for w, n in width.values())
    assert sum(n < 0.9 * w for w, n in width.values()) >= 10
