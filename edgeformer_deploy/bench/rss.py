"""Peak RSS of one artifact, measured in a fresh process (the benchmark runner starts one per artifact):

    python -m edgeformer_deploy.bench.rss ARTIFACT [--runs 3] [--threads N] [--cpus 4-7] [--backend auto]

loads the artifact (manifest, sha256, backend), runs the first inference and ``--runs`` more on the
benchmark's input, and prints one JSON line: ``peak_rss_bytes`` (VmHWM, the high-water mark of the
resident set: interpreter + numpy + runtime + model + buffers), ``before_load_bytes`` (VmRSS after the
imports, before the artifact is loaded) and ``source``. Failure: ``{"error": …}`` and exit code 1.
"""
from __future__ import annotations

import argparse
import json
import sys

from .runner import one_line, sample_input
from .system import current_rss, peak_rss


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeformer_deploy.bench.rss")
    parser.add_argument("artifact")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cpus", default=None)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--npu-cores", default="auto")
    args = parser.parse_args(argv)
    try:
        from ..runtime.predictor import Predictor

        before = current_rss()
        predictor = Predictor(args.artifact, backend=args.backend, threads=args.threads, cpus=args.cpus,
                              npu_cores=args.npu_cores)
        x = sample_input(predictor)
        for _ in range(1 + max(0, args.runs)):
            predictor.backend.run(x)
        peak, source = peak_rss()
        predictor.close()
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(json.dumps({"peak_rss_bytes": None, "error": one_line(exc)}))
        return 1
    print(json.dumps({"peak_rss_bytes": peak, "before_load_bytes": before, "source": source,
                      "runs": 1 + max(0, args.runs)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
