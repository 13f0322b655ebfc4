#!/usr/bin/env python
"""TFLite benchmark of issue #4: ai-edge-litert (XNNPACK), 1 thread, 256x256, artifacts measured interleaved.

    python scripts/bench_tflite.py --export DIR [--runs 50]     # main env: export the set, then measure
    <env>/bin/python scripts/bench_tflite.py A.tflite B.tflite … # any env with ai-edge-litert: measure only

The exported set: MobileViT-S fp32 (the baseline), a naive conversion of the official EdgeFormer-S (plain
torch.onnx.export -> onnx2tf, same converter environment), ours fp32, ours with unsplit 32-tap GCC kernels,
ours int8, MobileViT-S int8. Ratios are medians of per-round ratios against the first artifact.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def export_set(out: Path, weights_dir: Path, imgsz: int) -> list[Path]:
    cli = str(Path(sys.executable).parent / "edgeformer-export")
    timings = {}

    def ours(name, *flags, label):
        started = time.perf_counter()
        subprocess.run([cli, "--model", name, "--weights", str(weights_dir / f"{name}.pt"), "--format", "tflite",
                        "--imgsz", str(imgsz), "--output", str(out / label), *flags], check=True, capture_output=True)
        timings[label] = round(time.perf_counter() - started, 1)
        return next((out / label).glob("*.tflite"))

    artifacts = [ours("mobilevit_s", label="mobilevit_s_fp32"), naive_edgeformer(out / "naive", weights_dir, imgsz),
                 ours("edgeformer_s", label="edgeformer_s_fp32"),
                 ours("edgeformer_s", "--gcc-taps", "0", label="edgeformer_s_fp32_unsplit"),
                 ours("edgeformer_s", "--int8", label="edgeformer_s_int8"),
                 ours("mobilevit_s", "--int8", label="mobilevit_s_int8")]
    (out / "export_seconds.json").write_text(json.dumps(timings, indent=2))
    return artifacts


def naive_edgeformer(out: Path, weights_dir: Path, imgsz: int) -> Path:
    """What a user gets today: torch.onnx.export of the official model, converted by the same onnx2tf."""
    import warnings

    import onnx
    import torch

    from edgeformer_deploy.export.converter_env import require_env, run_in_env
    from edgeformer_deploy.export.tflite_format import WORKER
    from edgeformer_deploy.models import create_model

    out.mkdir(parents=True, exist_ok=True)
    model = create_model("edgeformer_s", weights=weights_dir / "edgeformer_s.pt").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, imgsz, imgsz),), str(out / "exported.onnx"), opset_version=18)
    onnx.save(onnx.load(str(out / "exported.onnx")), str(out / "naive.onnx"))  # one file (dynamo splits weights)
    np.save(out / "calib.npy", np.random.default_rng(0).random((4, imgsz, imgsz, 3), dtype=np.float32))
    run_in_env(require_env("tflite"), WORKER, ["convert", "--onnx", str(out / "naive.onnx"), "--out", str(out),
                                               "--calib", str(out / "calib.npy")], cwd=out, log_file=out / "log.txt")
    target = out / "edgeformer_s_naive.tflite"
    (out / "fp32.tflite").rename(target)
    return target


def measure(paths: list[Path], warmup: int, runs: int) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    interpreters = {}
    for path in paths:
        interpreter = Interpreter(model_path=str(path), num_threads=1)  # XNNPACK is the default delegate
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        x = np.random.default_rng(0).random(detail["shape"], dtype=np.float32)
        if detail["dtype"] != np.float32:
            scale, zero_point = detail["quantization"]
            x = np.clip(np.round(x / scale + zero_point), -128, 127)
        interpreter.set_tensor(detail["index"], x.astype(detail["dtype"]))
        interpreters[f"{path.parent.name}/{path.name}"] = interpreter
    for interpreter in interpreters.values():
        for _ in range(warmup):
            interpreter.invoke()
    times = {name: [] for name in interpreters}
    for _ in range(runs):
        for name, interpreter in interpreters.items():
            started = time.perf_counter()
            interpreter.invoke()
            times[name].append((time.perf_counter() - started) * 1e3)
    baseline = next(iter(times))
    return {"machine": f"{platform.machine()}, ai-edge-litert XNNPACK, 1 thread", "date": time.strftime("%Y-%m-%d"),
            "runs": runs, "warmup": warmup, "baseline": baseline,
            "median_ms": {n: round(statistics.median(t), 2) for n, t in times.items()},
            "ratio_to_baseline": {n: round(statistics.median(a / b for a, b in zip(t, times[baseline])), 3)
                                  for n, t in times.items()},
            "pairwise": pairwise(times)}


def pairwise(times: dict) -> dict:
    """The two ratios issue #4 asks for, when their artifacts are in the set."""
    def ratio(a, b):
        keys = {k.split("/")[0]: k for k in times}
        if a in keys and b in keys:
            return round(statistics.median(x / y for x, y in zip(times[keys[a]], times[keys[b]])), 3)
        return None

    return {"edgeformer_fp32/mobilevit_fp32": ratio("edgeformer_s_fp32", "mobilevit_s_fp32"),
            "naive_edgeformer/mobilevit_fp32": ratio("naive", "mobilevit_s_fp32"),
            "edgeformer_int8/edgeformer_fp32": ratio("edgeformer_s_int8", "edgeformer_s_fp32")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", nargs="*", type=Path)
    parser.add_argument("--export", type=Path, help="export the benchmark set into this folder first")
    parser.add_argument("--weights-dir", type=Path, default=REPO.parent / "shared" / "fixtures" / "official")
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.export:
        from edgeformer_deploy.export.converter_env import require_env

        paths = export_set(args.export, args.weights_dir, args.imgsz)
        measure_cmd = [str(require_env("tflite").python), __file__, *map(str, paths), "--runs", str(args.runs),
                       "--warmup", str(args.warmup)] + (["--json", str(args.json)] if args.json else [])
        sys.exit(subprocess.run(measure_cmd).returncode)
    result = measure(args.artifacts, args.warmup, args.runs)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
