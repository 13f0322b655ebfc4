#!/usr/bin/env python
"""TFLite benchmark of issue #4: ai-edge-litert (XNNPACK), 1 thread, artifacts measured interleaved.

Run it with an interpreter that has ai-edge-litert, e.g. the managed converter environment:

    $(edgeformer-export env path tflite)/bin/python scripts/bench_tflite.py BASELINE.tflite OTHER.tflite … [--runs 50]

Ratios are medians of per-round ratios against the first artifact (the baseline).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def load(path: Path):
    interpreter = Interpreter(model_path=str(path), num_threads=1)  # XNNPACK is the default delegate
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    x = np.random.default_rng(0).random(detail["shape"], dtype=np.float32)
    if detail["dtype"] != np.float32:
        scale, zero_point = detail["quantization"]
        x = np.clip(np.round(x / scale + zero_point), -128, 127)
    interpreter.set_tensor(detail["index"], x.astype(detail["dtype"]))
    return interpreter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", nargs="+", type=Path)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    interpreters = {path.name: load(path) for path in args.artifacts}
    for interpreter in interpreters.values():
        for _ in range(args.warmup):
            interpreter.invoke()
    times = {name: [] for name in interpreters}
    for _ in range(args.runs):
        for name, interpreter in interpreters.items():
            started = time.perf_counter()
            interpreter.invoke()
            times[name].append((time.perf_counter() - started) * 1e3)
    baseline = args.artifacts[0].name
    result = {"machine": f"{platform.machine()}, ai-edge-litert XNNPACK, 1 thread", "date": time.strftime("%Y-%m-%d"),
              "runs": args.runs, "warmup": args.warmup, "baseline": baseline,
              "median_ms": {n: round(statistics.median(t), 2) for n, t in times.items()},
              "ratio_to_baseline": {n: round(statistics.median(a / b for a, b in zip(t, times[baseline])), 3)
                                    for n, t in times.items()}}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
