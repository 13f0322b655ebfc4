"""ImageNet-1k class names shipped with the package (assets/labels, no download)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

LABELS_FILE = Path(__file__).resolve().parent.parent / "assets" / "labels" / "imagenet1k.txt"


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """Line i = class id i, the ml-cvnets / torchvision class order."""
    labels = tuple(LABELS_FILE.read_text(encoding="utf-8").splitlines())
    assert len(labels) == 1000, f"{LABELS_FILE} holds {len(labels)} labels, expected 1000"
    return labels


def labels_for(num_classes: int) -> tuple[str, ...]:
    """ImageNet names for 1000-class models, else the class ids as text."""
    return imagenet_labels() if num_classes == 1000 else tuple(str(i) for i in range(num_classes))
