"""Experiment: re-estimate a checkpoint's BatchNorm statistics on real photos, keep every other weight.

The official-code fixtures are untrained: their BatchNorm running statistics come from Gaussian noise, so on
photos the activations of one tensor range 10x apart between images, which no static int8 scale serves
(BENCHMARKS.md, #13/#14). This asks whether the int8 gates refuse the recipe or those statistics: the same
weights with statistics measured on photos (what any trained checkpoint has) go through the same export and
the same unchanged gate.

    python scripts/bn_recalibrate.py --model ssd_edgeformer_s --weights FIXTURE.pt --out recal.pt
    edgeformer-export --model ssd_edgeformer_s --weights recal.pt --format tflite --int8

Images: random crops and flips of the shipped photos (or --data), preprocessed as the model's task is
(stretch to the input size, BGR, /255). A research tool, not part of the toolchain.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from edgeformer_deploy.export.calibration import calibration_images
from edgeformer_deploy.models.registry import create_model, model_spec
from edgeformer_deploy.runtime.preprocess import read_image, to_model_input


def augmented_batches(paths: list[Path], imgsz: int, count: int, batch: int, seed: int = 0):
    """``count`` random crops (40-100 % of each side) with random flips, as BGR [0, 1] NCHW batches."""
    rng = np.random.default_rng(seed)
    images = [read_image(path) for path in paths]
    crops = []
    for index in range(count):
        image = images[index % len(images)]
        w, h = image.size
        cw, ch = (int(side * rng.uniform(0.4, 1.0)) for side in (w, h))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = image.crop((left, top, left + cw, top + ch)).resize((imgsz, imgsz), Image.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crops.append(np.asarray(crop, dtype=np.uint8))
    for start in range(0, count, batch):
        pixels = np.stack(crops[start:start + batch])
        yield torch.from_numpy(to_model_input(pixels, "NCHW", "float32", channel_order="BGR"))


def recalibrate(model: torch.nn.Module, batches) -> int:
    """Cumulative (momentum None) BatchNorm statistics over ``batches``; every other weight untouched."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.eval()
    for norm in norms:
        norm.train()
    with torch.no_grad():
        for images in batches:
            model(images)
    model.eval()
    return len(norms)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--weights", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--data", type=Path, help="folder of photos (default: the shipped samples)")
    parser.add_argument("--imgsz", type=int, help="default: the model's official size")
    parser.add_argument("--images", type=int, default=128, help="augmented crops to measure on")
    args = parser.parse_args()
    spec = model_spec(args.model)
    paths = calibration_images(args.data)  # the export's own --data reading (the shipped photos without it)
    model = create_model(args.model, weights=args.weights)
    count = recalibrate(model, augmented_batches(paths, args.imgsz or spec.imgsz, args.images, batch=8))
    torch.save(model.state_dict(), args.out)
    print(f"{args.out}: {count} BatchNorms re-estimated on {args.images} crops of {len(paths)} photos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
