"""Board-side SSD post-processing time (numpy): softmax over 81 classes, decode, per-class threshold + NMS,
top-200 — the official ``predict()`` — on 3,232 anchors (320x320).

    python scripts/bench_detect.py [--runs 50] [--fixtures ../shared/fixtures] [--against REV] [--emulate ARCH]

--against REV also times ``runtime/detect.py`` as it was at git revision REV on the same raw outputs, interleaved
with the current one (3 rounds, median), after checking that both give the same detections bit for bit.
--emulate armv7|aarch64 counts instead the guest instructions of one post-processing call on the emulated board
(``edgeformer-bench --emulate``'s boards and counter; the board's own numpy), for each case and module.

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


GUEST = r'''
import importlib.util, sys
import numpy as np
from edgeformer_deploy.bench.marker import counted_region

cases = np.load(sys.argv[1])
modules = []
for path in sys.argv[2:]:
    spec = importlib.util.spec_from_file_location(f"detect_{len(modules)}", path)
    modules.append(importlib.util.module_from_spec(spec))
    spec.loader.exec_module(modules[-1])
anchors = cases["anchors"]
for i in range(len(cases.files) // 2):
    conf, loc = cases[f"conf_{i}"], cases[f"loc_{i}"]
    for module in modules:
        for threshold in (0.05, 0.3):
            params = module.DetectionParams(score_threshold=threshold)
            module.postprocess(conf, loc, anchors, params)  # warm: first-call allocations are not the point
            with counted_region(True):
                module.postprocess(conf, loc, anchors, params)
print(np.__version__)
'''


def emulated_counts(arch_name: str, cases: list, anchors: np.ndarray, modules: list) -> tuple:
    """Guest instructions of ``postprocess`` per (case, module, threshold 0.05 / 0.3) on the emulated board."""
    from edgeformer_deploy.bench import emulate

    arch = emulate.ARCHES[arch_name]
    emulate.check_tools(arch)
    root = emulate.find_board(arch)
    with tempfile.TemporaryDirectory(prefix="bench-detect-") as tmp:
        arrays = {"anchors": anchors}
        for i, (_, conf, loc) in enumerate(cases):
            arrays[f"conf_{i}"], arrays[f"loc_{i}"] = conf, loc
        np.savez(Path(tmp) / "cases.npz", **arrays)
        (Path(tmp) / "guest.py").write_text(GUEST)
        result, regions, _ = emulate.run_guest(arch, root, emulate.board_cpu(root, arch), emulate.build_plugin(),
                                               [Path(tmp) / "guest.py", Path(tmp) / "cases.npz", *modules])
    if result.returncode != 0 or len(regions) != 2 * len(cases) * len(modules):
        raise SystemExit(f"emulated run failed: {result.stderr.strip()[-500:]}")
    counts = np.array([r.instructions for r in regions]).reshape(len(cases), len(modules), 2)
    return counts, result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--fixtures", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "fixtures")
    parser.add_argument("--against", metavar="REV", help="also time runtime/detect.py at this git revision")
    parser.add_argument("--emulate", choices=["armv7", "aarch64"], help="count guest instructions on this board")
    args = parser.parse_args()
    old = module_at(args.against) if args.against else None
    photos = torch.load(args.fixtures / "official-photos" / "ssd_photos_io.pt", weights_only=True)
    anchors = photos["meta"]["anchors_320"].numpy()
    cases = []  # (model, input, confidences, locations)
    for name in ("ssd_edgeformer_s", "ssd_mobilevit_s"):
        io = torch.load(args.fixtures / "official-det-seg" / f"{name}_io.pt", weights_only=True)
        cases.append((name, "noise (fixture)", io["pred_raw_confidences_320"][0].numpy(),
                      io["pred_raw_locations_320"][0].numpy()))
        cases += [(name, photo, photos["outputs"][name][photo]["confidences"][0].numpy(),
                   photos["outputs"][name][photo]["locations"][0].numpy()) for photo in photos["photos"]]
    for name, label, conf, loc in cases:
        if old:
            assert same(postprocess(conf, loc, anchors), old.postprocess(conf, loc, anchors)), \
                f"{args.against} differs on {name} {label}"
    current = Path(__file__).resolve().parents[1] / "edgeformer_deploy" / "runtime" / "detect.py"
    modules = ([Path(old.__file__)] if old else []) + [current]
    if args.emulate:
        counts, guest_numpy = emulated_counts(args.emulate, [c[1:] for c in cases], anchors, modules)
        print(f"# emulated {args.emulate}, numpy {guest_numpy}: guest instructions (M) of one postprocess() call")
        against = f" | {args.against} (conf 0.05)" if old else ""
        print(f"| model | input | candidates > 0.05{against} | now (conf 0.05) | now (conf 0.3) |")
        print("|---|---|---|---|---|" + ("---|" if old else ""))
        for (name, label, conf, _), row in zip(cases, counts):
            candidates = int((softmax32(conf)[:, 1:] > np.float32(0.05)).sum())
            before = f" | {row[0, 0] / 1e6:.1f}" if old else ""
            print(f"| {name} | {label} | {candidates}{before} | {row[-1, 0] / 1e6:.1f} | {row[-1, 1] / 1e6:.1f} |")
        return
    print(f"# {platform.processor() or platform.machine()}, numpy {np.__version__}, {args.runs} runs, median")
    against = f" | {args.against} ms (conf 0.05)" if old else ""
    print(f"| model | input | candidates > 0.05 | detections{against} | post-processing ms (conf 0.05) | ms (conf 0.3) |")
    print("|---|---|---|---|---|---|" + ("---|" if old else ""))
    for name, label, conf, loc in cases:
        candidates = int((softmax32(conf)[:, 1:] > np.float32(0.05)).sum())
        found = postprocess(conf, loc, anchors)
        before = ""
        if old:
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
