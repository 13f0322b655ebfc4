"""Board-side SSD post-processing time (numpy): softmax over 81 classes, decode, per-class threshold + NMS,
top-200 — the official ``predict()`` — on 3,232 anchors (320x320).

    python scripts/bench_detect.py [--runs 50] [--fixtures ../shared/fixtures]

Inputs are the official code's raw outputs (fixtures: Gaussian-noise inputs and the 4 shipped photos);
with these untrained networks thousands of class probabilities pass 0.05, far more than a trained
detector's, so this is the heavy case. Also timed: a stricter --conf 0.3.
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from edgeformer_deploy.runtime.detect import DetectionParams, postprocess, softmax32


def median_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--fixtures", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "fixtures")
    args = parser.parse_args()
    photos = torch.load(args.fixtures / "official-photos" / "ssd_photos_io.pt", weights_only=True)
    anchors = photos["meta"]["anchors_320"].numpy()
    print(f"# {platform.processor() or platform.machine()}, numpy {np.__version__}, {args.runs} runs, median")
    print("| model | input | candidates > 0.05 | detections | post-processing ms (conf 0.05) | ms (conf 0.3) |")
    print("|---|---|---|---|---|---|")
    for name in ("ssd_edgeformer_s", "ssd_mobilevit_s"):
        io = torch.load(args.fixtures / "official-det-seg" / f"{name}_io.pt", weights_only=True)
        cases = [("noise (fixture)", io["pred_raw_confidences_320"][0].numpy(), io["pred_raw_locations_320"][0].numpy())]
        cases += [(photo, photos["outputs"][name][photo]["confidences"][0].numpy(),
                   photos["outputs"][name][photo]["locations"][0].numpy()) for photo in photos["photos"]]
        for label, conf, loc in cases:
            candidates = int((softmax32(conf)[:, 1:] > np.float32(0.05)).sum())
            found = postprocess(conf, loc, anchors)
            official = median_ms(lambda: postprocess(conf, loc, anchors), args.runs)
            strict = median_ms(lambda: postprocess(conf, loc, anchors, DetectionParams(score_threshold=0.3)), args.runs)
            print(f"| {name} | {label} | {candidates} | {len(found)} | {official:.2f} | {strict:.2f} |")


if __name__ == "__main__":
    main()
