"""Name -> constructor table for the reference models."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import nn

from ..errors import EdgeformerError
from .edgeformer import EdgeFormer
from .mobilevit import MobileViT

_MODELS: dict[str, Callable[[int], nn.Module]] = {
    "edgeformer_xs": lambda n: EdgeFormer("xs", n),
    "edgeformer_s": lambda n: EdgeFormer("s", n),
    "edgeformer_h": lambda n: EdgeFormer("h", n),
    "mobilevit_xxs": lambda n: MobileViT("xxs", n),
    "mobilevit_xs": lambda n: MobileViT("xs", n),
    "mobilevit_s": lambda n: MobileViT("s", n),
}


def list_models() -> list[str]:
    return list(_MODELS)


def create_model(name: str, num_classes: int = 1000, weights: str | Path | None = None) -> nn.Module:
    """Build a registered model (in eval mode when weights are given)."""
    if name not in _MODELS:
        raise EdgeformerError(f"unknown model {name!r}; choose one of: {', '.join(_MODELS)}")
    model = _MODELS[name](num_classes)
    model.model_name = name
    if weights is not None:
        from .checkpoint import load_weights

        load_weights(model, weights)
        model.eval()
    return model
