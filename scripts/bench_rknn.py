"""What can be measured of RKNN without a board: conversion time, artifact size, NPU/CPU placement and
simulator parity, for EdgeFormer-S and MobileViT-S, fp16 and int8, GCC kernels split by us (16 taps, the
default) or left to rknn-toolkit2 (--gcc-taps 0). NPU latency needs a board (eval_perf refuses the simulator).

    python scripts/bench_rknn.py --weights-dir ../shared/fixtures/official --out /tmp/rknn-bench
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from edgeformer_deploy.export.pipeline import ExportJob, run_export
from edgeformer_deploy.runtime.artifact import manifest_path
from edgeformer_deploy.runtime.preprocess import SAMPLES_DIR

CONFIGS = [  # (model, int8, gcc_taps)
    ("edgeformer_s", False, None), ("edgeformer_s", False, 0), ("mobilevit_s", False, None),
    ("edgeformer_s", True, None), ("edgeformer_s", True, 0), ("mobilevit_s", True, None)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--target", default="rk3588")
    parser.add_argument("--imgsz", type=int, default=256)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="rknn-bench-"))
    print("| model | precision | GCC split by | export s (wall) | toolkit build s | size MB | NPU layers | "
          "CPU fallback | toolkit splits | simulator cosine | max-abs | top-1 | analysis output cos / worst layer cos |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for model, int8, taps in CONFIGS:
        job = ExportJob(model=model, weights=args.weights_dir / f"{model}.pt", fmt="rknn", imgsz=args.imgsz,
                        output=out / f"{model}-{'int8' if int8 else 'fp16'}-{taps}", target=args.target,
                        int8=int8, data=SAMPLES_DIR if int8 else None, gcc_taps=taps, analyze=True)
        started = time.perf_counter()
        artifact = run_export(job, log=lambda _msg: None)
        wall = time.perf_counter() - started
        m = json.loads(manifest_path(artifact).read_text())
        r, p = m["rknn"], m["parity"]
        split = "-" if model != "edgeformer_s" else ("toolkit" if taps == 0 else "lowering (16)")
        a = r["analysis"]
        print(f"| {model} | {r['precision']} | {split} | {wall:.1f} | {r['build_seconds']:.1f} | "
              f"{m['size_bytes'] / 1e6:.2f} | {r['layers']['npu']} | {r['layers']['cpu_fallback']} | "
              f"{r['toolkit_split_large_kernels']} | {p['cosine']:.7f} | {p['max_abs']:.3g} | "
              f"{p['top1_agreement']:.0%} | {a['output_cosine']:.5f} / {a['worst_single_layer']['cosine']:.4f} |",
              flush=True)


if __name__ == "__main__":
    main()
