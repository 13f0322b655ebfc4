"""Board-side SSD post-processing time (numpy): softmax over 81 classes, decode, per-class threshold + NMS,
top-200 — the official ``predict()`` — on 3,232 anchors (320x320).

    python scripts/bench_detect.py [--runs 50] [--fixtures ../shared/fixtures] [--against REV]

--against REV also times ``runtime/detect.py`` as it was at git revision REV on the same raw outputs, interleaved
with the current one (3 rounds, median), after checking that both give the same detections bit for bit.

Inputs are the official code's raw outputs (fixtures: Gaussian-noise inputs and the 4 shipped photos);
with these untrained networks thousands of class probabilities pass 0.05, far more than a trained
detector's, so this is the heavy case. Also timed: a stricter --conf 0.3.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import subprocess
import tempfile
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


def module_at(revision: str):
    """``edgeformer_deploy/runtime/detect.py`` as of a git revision, imported as a standalone module."""
    repo = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "-C", str(repo), "show", f"{revision}:edgeformer_deploy/runtime/detect.py"],
                            capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "detect_at_revision.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("detect_at_revision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in ((a.labels, b.labels), (a.scores, b.scores), (a.boxes, b.boxes)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--fixtures", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "fixtures")
    parser.add_argument("--against", metavar="REV", help="also time runtime/detect.py at this git revision")
    args = parser.parse_args()
    old = module_at(args.against) if args.against else None
    photos = torch.load(args.fixtures / "official-photos" / "ssd_photos_io.pt", weights_only=True)
    anchors = photos["meta"]["anchors_320"].numpy()
    print(f"# {platform.processor() or platform.machine()}, numpy {np.__version__}, {args.runs} runs, median")
    against = f" | {args.against} ms (conf 0.05)" if old else ""
    print(f"| model | input | candidates > 0.05 | detections{against} | post-processing ms (conf 0.05) | ms (conf 0.3) |")
    print("|---|---|---|---|---|---|" + ("---|" if old else ""))
    for name in ("ssd_edgeformer_s", "ssd_mobilevit_s"):
        io = torch.load(args.fixtures / "official-det-seg" / f"{name}_io.pt", weights_only=True)
        cases = [("noise (fixture)", io["pred_raw_confidences_320"][0].numpy(), io["pred_raw_locations_320"][0].numpy())]
        cases += [(photo, photos["outputs"][name][photo]["confidences"][0].numpy(),
                   photos["outputs"][name][photo]["locations"][0].numpy()) for photo in photos["photos"]]
        for label, conf, loc in cases:
            candidates = int((softmax32(conf)[:, 1:] > np.float32(0.05)).sum())
            found = postprocess(conf, loc, anchors)
            before = ""
            if old:
                assert same(found, old.postprocess(conf, loc, anchors)), f"{args.against} differs on {label}"
                rounds = [(median_ms(lambda: old.postprocess(conf, loc, anchors), args.runs),
                           median_ms(lambda: postprocess(conf, loc, anchors), args.runs)) for _ in range(3)]
                before = f" | {np.median([r[0] for r in rounds]):.2f}"
                official = float(np.median([r[1] for r in rounds]))
            else:
                official = median_ms(lambda: postprocess(conf, loc, anchors), args.runs)
            strict = median_ms(lambda: postprocess(conf, loc, anchors, DetectionParams(score_threshold=0.3)), args.runs)
            print(f"| {name} | {label} | {candidates} | {len(found)}{before} | {official:.2f} | {strict:.2f} |")


if __name__ == "__main__":
    main()
