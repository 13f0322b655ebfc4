"""``--reference WEIGHTS``: the un-lowered PyTorch model beside the artifact, fed the same crop.

Host side: imports torch and ``edgeformer_deploy.models`` — only when a reference is asked for. The crop is
the board's own (the runtime's preprocessing), turned into what the checkpoint was trained on (the
manifest's ``trained_channel_order``, [0, 1], NCHW float32); the outputs then go through the official
heads: logits; SSD ``predict()`` (the runtime's bit-exact replay) and boxes scaled and clipped to the
image; DeepLabv3's full-resolution logits -> ``F.interpolate(nearest)`` to the image size -> argmax, the
official ``predict_and_save``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..runtime.preprocess import to_model_input
from .datasets import DataError


class Reference:
    def __init__(self, artifact, weights: Path):
        if importlib.util.find_spec("torch") is None:
            raise DataError("--reference runs the PyTorch model: it needs torch (pip install 'edgeformer-deploy[export]')")
        from ..models import create_model, model_spec
        from ..runtime.artifact import sha256

        weights = Path(weights)
        if not weights.is_file():
            raise DataError(f"--reference {weights}: file not found")
        spec = model_spec(artifact.model)
        self.model = create_model(artifact.model, artifact.num_classes, weights).eval()
        self.order = (artifact.manifest.get("preprocess") or {}).get("trained_channel_order") or spec.channel_order
        self.task = artifact.task
        self.weights, self.sha256 = weights, sha256(weights)
        exported = (artifact.manifest.get("weights") or {}).get("sha256")
        self.same_weights = None if exported is None else exported == self.sha256

    def _forward(self, crop: np.ndarray):
        import torch

        tensor = to_model_input(crop[None], "NCHW", "float32", channel_order=self.order)
        with torch.no_grad():
            return self.model(torch.from_numpy(tensor))

    def logits(self, crop: np.ndarray) -> np.ndarray:
        return self._forward(crop)[0].numpy()

    def detections(self, crop: np.ndarray, head, width: int, height: int) -> list:
        confidences, locations = self._forward(crop)
        return head.detections((confidences.numpy(), locations.numpy()), 0, width, height)

    def mask(self, crop: np.ndarray, width: int, height: int) -> np.ndarray:
        import torch.nn.functional as F

        logits = self._forward(crop)
        return F.interpolate(logits, size=(height, width), mode="nearest").argmax(1)[0].numpy().astype(np.uint8)
