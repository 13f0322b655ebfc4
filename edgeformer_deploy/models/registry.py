"""Name -> model spec (family, task, classes, preprocessing) and constructor for the reference models."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from ..errors import EdgeformerError
from .edgeformer import EdgeFormer
from .mobilevit import MobileViT

# The official ParC-Net / ml-cvnets v0.1 pipeline reads images with cv2.imread and never converts them
# (data/datasets/dataset_base.py: read_image), so its checkpoints were trained on BGR in [0, 1].
OFFICIAL_CHANNEL_ORDER = "BGR"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # "edgeformer" | "mobilevit"
    task: str  # "classification"
    num_classes: int
    build: Callable[[int], nn.Module]
    channel_order: str = OFFICIAL_CHANNEL_ORDER  # what the official checkpoints were trained on

    @property
    def has_gcc(self) -> bool:
        return self.family == "edgeformer"


def _classifier(name: str, family: str, build: Callable[[int], nn.Module]) -> ModelSpec:
    return ModelSpec(name=name, family=family, task="classification", num_classes=1000, build=build)


_SPECS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    _classifier("edgeformer_xs", "edgeformer", lambda n: EdgeFormer("xs", n)),
    _classifier("edgeformer_s", "edgeformer", lambda n: EdgeFormer("s", n)),
    _classifier("edgeformer_h", "edgeformer", lambda n: EdgeFormer("h", n)),
    _classifier("mobilevit_xxs", "mobilevit", lambda n: MobileViT("xxs", n)),
    _classifier("mobilevit_xs", "mobilevit", lambda n: MobileViT("xs", n)),
    _classifier("mobilevit_s", "mobilevit", lambda n: MobileViT("s", n)),
)}


def list_models() -> list[str]:
    return list(_SPECS)


def model_spec(name: str) -> ModelSpec:
    if name not in _SPECS:
        raise EdgeformerError(f"unknown model {name!r}; choose one of: {', '.join(_SPECS)}")
    return _SPECS[name]


def create_model(name: str, num_classes: int | None = None, weights: str | Path | None = None) -> nn.Module:
    """Build a registered model (in eval mode when weights are given)."""
    spec = model_spec(name)
    model = spec.build(num_classes or spec.num_classes)
    model.model_name = name
    if weights is not None:
        from .checkpoint import load_weights

        load_weights(model, weights)
        model.eval()
    return model
