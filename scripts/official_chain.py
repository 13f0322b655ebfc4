"""Photo -> logits of exported artifacts vs the official evaluation pipeline on the shipped photos.

    python scripts/official_chain.py ARTIFACT... [--json OUT]

For .onnx/.tflite the board's Predictor runs the photos; an .rknn is judged by the NPU simulator's outputs
that its export kept beside it (<artifact>.simulator.npz: the same photos through the board preprocessing).
The reference is ``../shared/fixtures/official-photos/cls_photos_io.pt`` (official ml-cvnets v0.1 code).
Also prints how far the preprocessing is from the official tensor (grey levels), for ours and for Pillow's
bilinear resize that the runtime used before.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTOS_IO = Path(os.environ.get("EDGEFORMER_FIXTURES", REPO.parent / "shared" / "fixtures" / "official")).parent \
    / "official-photos" / "cls_photos_io.pt"


def grey_levels(official) -> dict:
    from PIL import Image

    from edgeformer_deploy.runtime.preprocess import preprocess, read_image, resized_size, sample_images

    rows = {}
    for photo in sample_images():
        expected = np.round(official["inputs"][photo.name]["input"].numpy()[0] * 255).astype(int)
        ours = np.round(preprocess(photo, 256, channel_order="BGR")[0] * 255).astype(int)
        image = read_image(photo)
        w, h = resized_size(*image.size, 288)
        pil = image.transform((w, h), Image.Transform.AFFINE, (image.size[0] / w, 0, 0, 0, image.size[1] / h, 0),
                              resample=Image.Resampling.BILINEAR)
        top, left = (h - 256) // 2, (w - 256) // 2
        old = np.asarray(pil)[top:top + 256, left:left + 256, ::-1].transpose(2, 0, 1).astype(int)
        rows[photo.name] = {"ours_values_off": int((ours != expected).sum()),
                            "pillow_values_off": int((old != expected).sum()),
                            "pillow_fraction_off": round(float((old != expected).mean()), 4),
                            "pillow_max_grey_levels": int(np.abs(old - expected).max())}
    return rows


def artifact_logits(path: Path, photos) -> np.ndarray:
    if path.suffix == ".rknn":
        return np.load(path.with_name(path.name + ".simulator.npz"))["outputs"][:len(photos)]
    from edgeformer_deploy.runtime import Predictor

    with Predictor(path) as predictor:
        return predictor.logits(photos)


def main() -> None:
    import torch

    from edgeformer_deploy.runtime.artifact import load_artifact
    from edgeformer_deploy.runtime.preprocess import sample_images

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifacts", nargs="*", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    official = torch.load(PHOTOS_IO, weights_only=True)
    photos = sample_images()
    result = {"preprocessing": grey_levels(official), "artifacts": {}}
    for path in args.artifacts:
        model = load_artifact(path, check_sha256=False).model
        ours = artifact_logits(path, photos).astype(np.float64)
        ref = np.stack([official["outputs"][model][p.name]["logits"][0].numpy() for p in photos]).astype(np.float64)
        cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
        top5 = lambda x: np.argsort(-x, axis=1, kind="stable")[:, :5]  # noqa: E731
        result["artifacts"][path.name] = {
            "model": model, "max_abs": float(np.abs(ours - ref).max()), "min_cosine": float(cos.min()),
            "top1_same": int((top5(ours)[:, 0] == top5(ref)[:, 0]).sum()),
            "top5_same_order": int(sum((a == b).all() for a, b in zip(top5(ours), top5(ref)))),
            "top5_same_set": int(sum(set(a) == set(b) for a, b in zip(top5(ours), top5(ref)))), "photos": len(photos)}
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
