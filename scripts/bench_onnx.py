#!/usr/bin/env python
"""ONNX benchmark of issue #3: our lowered EdgeFormer-S vs a naive export of the official model, and vs
our MobileViT-S. onnxruntime, 1 thread, interleaved runs (A B C A B C …) so drift hits all equally.

    python scripts/bench_onnx.py [--weights-dir ../shared/fixtures/official] [--runs 50] [--imgsz 256]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch


def naive_export(name: str, weights: Path | None, imgsz: int, path: Path) -> None:
    """What a user gets today: plain ``torch.onnx.export`` of the un-lowered official model."""
    from edgeformer_deploy.models import create_model

    model = create_model(name, weights=weights).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, imgsz, imgsz),), str(path))


def our_export(name: str, weights: Path | None, imgsz: int, out: Path, gcc: str = "conv") -> tuple[Path, float]:
    """The CLI, end to end (process start, export, verification, manifest): returns artifact and seconds."""
    out = out / gcc
    cmd = [str(Path(sys.executable).parent / "edgeformer-export"), "--model", name, "--imgsz", str(imgsz),
           "--output", str(out), "--gcc", gcc] + (["--weights", str(weights)] if weights else [])
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return out / f"{name}_{imgsz}.onnx", time.perf_counter() - started


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights-dir", type=Path, default=Path(__file__).resolve().parents[1].parent
                        / "shared" / "fixtures" / "official")
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    def weights(name):
        path = args.weights_dir / f"{name}.pt"
        return path if path.is_file() else None

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        naive = tmp / "edgeformer_s_naive.onnx"
        naive_export("edgeformer_s", weights("edgeformer_s"), args.imgsz, naive)
        ours_ef, export_seconds = our_export("edgeformer_s", weights("edgeformer_s"), args.imgsz, tmp)
        ours_mm, mm_export_seconds = our_export("edgeformer_s", weights("edgeformer_s"), args.imgsz, tmp, "matmul")
        ours_mv, mv_export_seconds = our_export("mobilevit_s", weights("mobilevit_s"), args.imgsz, tmp)
        models = {"edgeformer_s (naive export)": naive, "edgeformer_s (ours, gcc=conv)": ours_ef,
                  "edgeformer_s (ours, gcc=matmul)": ours_mm, "mobilevit_s (ours)": ours_mv}
        sessions = {label: session(path) for label, path in models.items()}
        x = np.random.default_rng(0).random((1, 3, args.imgsz, args.imgsz), dtype=np.float32)
        for sess in sessions.values():
            for _ in range(args.warmup):
                sess.run(None, {sess.get_inputs()[0].name: x})
        times: dict[str, list[float]] = {label: [] for label in sessions}
        for _ in range(args.runs):
            for label, sess in sessions.items():
                feed = {sess.get_inputs()[0].name: x}
                started = time.perf_counter()
                sess.run(None, feed)
                times[label].append((time.perf_counter() - started) * 1e3)

    median = {label: statistics.median(values) for label, values in times.items()}
    pairwise = lambda a, b: statistics.median(x / y for x, y in zip(times[a], times[b]))  # noqa: E731
    result = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, onnxruntime {ort.__version__}, 1 thread",
        "date": time.strftime("%Y-%m-%d"),
        "imgsz": args.imgsz, "runs": args.runs, "warmup": args.warmup,
        "median_ms": {k: round(v, 2) for k, v in median.items()},
        "ratio_ours_vs_naive": {g: round(pairwise(f"edgeformer_s (ours, gcc={g})", "edgeformer_s (naive export)"), 3)
                                for g in ("conv", "matmul")},
        "ratio_edgeformer_vs_mobilevit": {g: round(pairwise(f"edgeformer_s (ours, gcc={g})", "mobilevit_s (ours)"), 3)
                                          for g in ("conv", "matmul")},
        "ratio_naive_edgeformer_vs_mobilevit": round(pairwise("edgeformer_s (naive export)", "mobilevit_s (ours)"), 3),
        "export_verify_seconds": {"edgeformer_s (conv)": round(export_seconds, 1),
                                  "edgeformer_s (matmul)": round(mm_export_seconds, 1),
                                  "mobilevit_s": round(mv_export_seconds, 1)},
    }
    print("| model | median ms |\n|---|---|")
    for label, value in median.items():
        print(f"| {label} | {value:.2f} |")
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
