"""Where DeepLabv3's x16 upsampling and argmax run: measured, both ways, on one thread.

    python scripts/bench_segment.py [--model deeplabv3_edgeformer_s] [--runs 20] [--fixtures ../shared/fixtures]

(a) ours: the graph ends at the stride-16 logits; the board computes the official mask at the photo's size
    (runtime.segment.official_mask: bilinear only at the nearest-resize points, boundary cells only);
(b) in the graph: the lowered model with the official x16 bilinear Resize as its last op (21 x 512 x 512
    float output), then nearest to the photo's size and argmax in numpy.
Both from the same lowered model (official-code weights), onnxruntime, the 4 shipped photos; the masks of (a)
and (b) are compared pixel for pixel.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgeformer_deploy.export.lowering import lower_model
from edgeformer_deploy.export.onnx_format import export_onnx
from edgeformer_deploy.models import create_model
from edgeformer_deploy.models.deeplab import LogitsOS16Output
from edgeformer_deploy.runtime.onnx_backend import create_session
from edgeformer_deploy.runtime.preprocess import preprocess, read_image, sample_images
from edgeformer_deploy.runtime.segment import nearest_index, official_mask

from bench_detect import median_ms  # scripts/ is on sys.path when run as a script


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="deeplabv3_edgeformer_s")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--fixtures", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "fixtures")
    args = parser.parse_args()
    model = create_model(args.model, weights=args.fixtures / "official-det-seg" / f"{args.model}.pt")
    lowered = lower_model(model, 512, "matmul", swap_input_channels=True)
    work = Path(tempfile.mkdtemp())
    export_onnx(LogitsOS16Output(lowered), work / "os16.onnx", 512, output_names=("logits_os16",))
    export_onnx(lowered, work / "full.onnx", 512, output_names=("logits",))
    ours, full = create_session(work / "os16.onnx", threads=1), create_session(work / "full.onnx", threads=1)
    print(f"# {args.model}, onnxruntime 1 thread, {args.runs} runs, median ms")
    print("| photo | (a) net → 21×32×32 | (a) mask | (a) total | (b) net → 21×512×512 | (b) nearest + argmax "
          "| (b) total | masks equal |")
    print("|---|---|---|---|---|---|---|---|")
    for photo in sample_images():
        width, height = read_image(photo).size
        x = preprocess(photo, 512, mode="stretch")
        logits = ours.run(None, {"images": x})[0][0]
        big = full.run(None, {"images": x})[0][0]
        rows, cols = nearest_index(512, height), nearest_index(512, width)

        def board_b():
            return big[:, rows][:, :, cols].argmax(axis=0).astype(np.uint8)

        same = np.array_equal(official_mask(logits, 16, height, width), board_b())
        a_net = median_ms(lambda: ours.run(None, {"images": x}), args.runs)
        a_mask = median_ms(lambda: official_mask(logits, 16, height, width), args.runs)
        b_net = median_ms(lambda: full.run(None, {"images": x}), args.runs)
        b_mask = median_ms(board_b, args.runs)
        print(f"| {photo.name} {width}×{height} | {a_net:.1f} | {a_mask:.2f} | {a_net + a_mask:.1f} | {b_net:.1f} "
              f"| {b_mask:.2f} | {b_net + b_mask:.1f} | {same} |")
    print(f"\noutput bytes: (a) {logits.nbytes:,}  (b) {big.nbytes:,}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
