"""Peak RSS and first-inference latency of ``edgeformer-predict`` (one fresh process per run).

    python scripts/bench_predict.py [ARTIFACT ...] [--runs 5] [--threads 1]

Without artifacts: exports EdgeFormer-S and MobileViT-S to ONNX at 256 (official-code fixture weights)
into ``exports/`` if missing, and also measures every ``exports/*.tflite`` that has a manifest.
Per run: peak RSS of the child (``os.wait4``), the CLI's own ``inference_ms`` of its first image
(preprocessing + inference, the first call after loading), and the process wall time (startup, imports,
manifest check, model load, one image). Medians over the runs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from edgeformer_deploy.runtime.artifact import manifest_path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("EDGEFORMER_FIXTURES", REPO.parent / "shared" / "fixtures" / "official"))
CLI = Path(sys.executable).parent / "edgeformer-predict"


def default_artifacts(out: Path) -> list[Path]:
    artifacts = []
    for model in ("edgeformer_s", "mobilevit_s"):
        artifact = out / f"{model}_256.onnx"
        if not artifact.exists():
            subprocess.run([str(Path(sys.executable).parent / "edgeformer-export"), "--model", model, "--weights",
                            str(FIXTURES / f"{model}.pt"), "--imgsz", "256", "--output", str(out)], check=True)
        artifacts.append(artifact)
    return artifacts + sorted(p for p in out.glob("*.tflite") if manifest_path(p).exists())


def one_run(artifact: Path, image: Path, threads: int) -> tuple[float, float, float]:
    started = time.perf_counter()
    child = subprocess.Popen([str(CLI), str(image), "--model", str(artifact), "--json", "--threads", str(threads)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    stdout, stderr = child.stdout.read(), child.stderr.read()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{artifact}: edgeformer-predict failed: {stderr.strip()}")
    first_ms = json.loads(stdout.splitlines()[0])["inference_ms"]
    return usage.ru_maxrss / 1024, first_ms, wall  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", nargs="*", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--exports", type=Path, default=REPO / "exports")
    args = parser.parse_args()
    artifacts = args.artifacts or default_artifacts(args.exports)
    image = REPO / "edgeformer_deploy" / "assets" / "samples" / "chelsea.jpg"
    print(f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"{args.threads} thread(s), {args.runs} fresh processes per artifact, image {image.name}\n")
    print("| artifact | size | peak RSS | first inference | process wall time |")
    print("|---|---|---|---|---|")
    for artifact in artifacts:
        runs = [one_run(artifact, image, args.threads) for _ in range(args.runs)]
        rss, first, wall = (statistics.median(column) for column in zip(*runs))
        print(f"| {artifact.name} | {artifact.stat().st_size / 1e6:.1f} MB | {rss:.0f} MiB | {first:.1f} ms "
              f"| {wall:.2f} s |", flush=True)


if __name__ == "__main__":
    main()
