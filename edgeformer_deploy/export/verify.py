"""Parity gate: an exported artifact against the un-lowered PyTorch model, on real photos and noise."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..runtime.preprocess import preprocess, sample_images

NUM_RANDOM = 4


def verification_inputs(imgsz: int, seed: int = 0, channel_order: str = "RGB") -> tuple[np.ndarray, list[str]]:
    """The shipped real photos (ml-cvnets eval preprocessing, channels in ``channel_order``) followed by
    uniform-noise images."""
    photos = sample_images()
    rng = np.random.default_rng(seed)
    noise = rng.random((NUM_RANDOM, 3, imgsz, imgsz), dtype=np.float32)
    batch = np.concatenate([preprocess(p, imgsz, channel_order=channel_order) for p in photos] + [noise])
    return batch, [p.stem for p in photos] + [f"random_{i}" for i in range(NUM_RANDOM)]


@dataclass
class Parity:
    reference: str
    samples: int
    max_abs: float
    cosine: float  # the worst sample's cosine similarity
    top1_agreement: float
    top5_agreement: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@torch.no_grad()
def reference_logits(model: nn.Module, inputs: np.ndarray) -> np.ndarray:
    return model.eval()(torch.from_numpy(inputs)).numpy()


def compare(reference: np.ndarray, candidate: np.ndarray, label: str) -> Parity:
    reference, candidate = reference.astype(np.float64), candidate.astype(np.float64)
    cos = (reference * candidate).sum(1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
                                          + 1e-30)
    top5_ref = np.argsort(-reference, axis=1)[:, :5]
    top5_out = np.argsort(-candidate, axis=1)[:, :5]
    return Parity(reference=label, samples=len(reference),
                  max_abs=float(np.abs(reference - candidate).max()), cosine=float(cos.min()),
                  top1_agreement=float((top5_ref[:, 0] == top5_out[:, 0]).mean()),
                  top5_agreement=float(np.mean([set(a) == set(b) for a, b in zip(top5_ref, top5_out)])))


def check_parity(model: nn.Module, run: Callable[[np.ndarray], np.ndarray], imgsz: int,
                 input_order: str = "RGB", model_order: str = "RGB") -> Parity:
    """``run`` (the artifact, fed ``input_order``) against the un-lowered model fed what it was trained on
    (``model_order``): the photos through the same preprocessing, channels reversed if the orders differ."""
    inputs, _ = verification_inputs(imgsz, channel_order=input_order)
    reference_inputs = inputs if input_order == model_order else np.ascontiguousarray(inputs[:, ::-1])
    return compare(reference_logits(model, reference_inputs), run(inputs), "pytorch (un-lowered)")
