"""Soak: resident memory of the board runtime over many inferences (a leak shows as growth).

    python scripts/soak_predict.py [--artifact A.onnx|.tflite] [--inferences 10000] [--every 500] [--json OUT]

Without --artifact, EdgeFormer-S (official-code fixture weights) is exported to ONNX at 64x64 into
``exports/soak``. Each inference is a full ``Predictor.predict`` of one of the shipped photos (decode,
resize, crop, run, top-5), so the image path is soaked too. RSS is read from /proc/self/status.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("EDGEFORMER_FIXTURES", REPO.parent / "shared" / "fixtures" / "official"))


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def default_artifact() -> Path:
    out = REPO / "exports" / "soak"
    artifact = out / "edgeformer_s_64.onnx"
    if not artifact.exists():
        subprocess.run([str(Path(sys.executable).parent / "edgeformer-export"), "--weights",
                        str(FIXTURES / "edgeformer_s.pt"), "--imgsz", "64", "--output", str(out)], check=True)
    return artifact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", type=Path)
    parser.add_argument("--inferences", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from edgeformer_deploy.runtime import Predictor
    from edgeformer_deploy.runtime.preprocess import sample_images

    artifact = args.artifact or default_artifact()
    photos = sample_images()
    samples = []
    started = time.perf_counter()
    with Predictor(artifact, threads=1) as predictor:
        predictor.predict(photos[0])  # warm-up: allocator pools, first-run caches
        baseline = rss_mib()
        for i in range(1, args.inferences + 1):
            predictor.predict(photos[i % len(photos)])
            if i % args.every == 0:
                samples.append((i, round(rss_mib(), 1)))
    seconds = time.perf_counter() - started
    second_half = [rss for i, rss in samples if i > args.inferences // 2]
    result = {
        "artifact": str(artifact), "inferences": args.inferences, "seconds": round(seconds, 1),
        "rss_mib": {"after_warmup": round(baseline, 1), "first_sample": samples[0][1], "last": samples[-1][1],
                    "max": max(r for _, r in samples),
                    "growth_second_half": round(max(second_half) - min(second_half), 1)},
        "samples": samples, "machine": platform.machine(), "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
