"""The JSON manifest written beside every artifact; the runtime reads it to know the input contract."""
from __future__ import annotations

import datetime
import json
import platform
from importlib import metadata
from pathlib import Path

from .. import __version__
from ..runtime.artifact import sha256

MANIFEST_VERSION = 2  # 2: task, every output, the task's post-processing; 1 still loads


def package_versions(*names: str) -> dict[str, str]:
    versions = {"edgeformer_deploy": __version__, "python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def preprocess_contract(imgsz: int, channel_order: str, trained_channel_order: str,
                        resize_mode: str = "center_crop") -> dict:
    """ml-cvnets evaluation: classification short side -> imgsz+32 (OpenCV bilinear) + center crop;
    detection straight to imgsz x imgsz ("stretch"); [0, 1], no mean/std. ``channel_order`` is what the
    artifact takes, ``trained_channel_order`` what the checkpoint saw."""
    swap = "folded into the stem convolution" if channel_order != trained_channel_order else None
    resize = imgsz + 32 if resize_mode == "center_crop" else imgsz
    return {"resize_mode": resize_mode, "resize": resize, "crop": imgsz, "interpolation": "bilinear", "scale": 1 / 255,
            "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "channel_order": channel_order,
            "trained_channel_order": trained_channel_order, "channel_swap": swap}


def build_manifest(*, model: str, variant: str, family: str, task: str, fmt: str, artifact: Path, input_spec: dict,
                   outputs: list[dict], imgsz: int, resize_mode: str, channel_order: str, trained_channel_order: str,
                   num_classes: int, labels: str, postprocess: dict | None, params: int, macs: int,
                   ops: dict[str, int], parity: dict | None, weights: dict | None, versions: dict[str, str],
                   extra: dict | None = None) -> dict:
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "model": model,
        "variant": variant,
        "family": family,
        "task": task,
        "format": fmt,
        "file": artifact.name,
        "size_bytes": artifact.stat().st_size,
        "sha256": sha256(artifact),
        "input": input_spec,
        "outputs": outputs,
        "imgsz": imgsz,
        "preprocess": preprocess_contract(imgsz, channel_order, trained_channel_order, resize_mode),
        "num_classes": num_classes,
        "labels": labels,
        "postprocess": postprocess,
        "params": params,
        "macs": macs,
        "ops": ops,
        "parity": parity,
        "weights": weights,
        "versions": versions,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    manifest.update(extra or {})
    return manifest


def write_manifest(manifest: dict, path: Path) -> None:
    """Valid JSON only: a NaN or infinity anywhere is an error, never written as ``NaN``."""
    try:
        text = json.dumps(manifest, indent=2, allow_nan=False)
    except ValueError:
        from ..errors import ExportError

        raise ExportError("the manifest would hold a non-finite number (NaN/inf) — no artifact written") from None
    path.write_text(text + "\n")
