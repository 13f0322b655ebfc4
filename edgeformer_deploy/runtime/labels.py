"""Class names shipped with the package (assets/labels, no download): ImageNet-1k, COCO's 80 classes,
PASCAL VOC's 21 (background first)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Optional

LABELS_DIR = Path(__file__).resolve().parent.parent / "assets" / "labels"
LABELS_FILE = LABELS_DIR / "imagenet1k.txt"
# name -> (file, number of classes)
LABEL_SETS = {"imagenet1k": ("imagenet1k.txt", 1000), "coco80": ("coco80.txt", 80), "voc21": ("voc21.txt", 21),
              "imagenet1k_wnids": ("imagenet1k_wnids.txt", 1000)}
# COCO category id of each of the 80 contiguous classes (the sorted ids of instances_*.json, as the official
# evaluation maps them: ``getCatIds()`` order)
COCO_CATEGORY_IDS = (tuple(range(1, 12)) + tuple(range(13, 26)) + (27, 28) + tuple(range(31, 45))
                     + tuple(range(46, 66)) + (67, 70) + tuple(range(72, 83)) + tuple(range(84, 91)))


@lru_cache(maxsize=None)
def label_set(name: str) -> tuple[str, ...]:
    """Line i = class id i (ImageNet: the ml-cvnets / torchvision order; COCO: the 80 contiguous classes)."""
    file, count = LABEL_SETS[name]
    labels = tuple((LABELS_DIR / file).read_text(encoding="utf-8").splitlines())
    assert len(labels) == count, f"{file} holds {len(labels)} labels, expected {count}"
    return labels


def imagenet_labels() -> tuple[str, ...]:
    return label_set("imagenet1k")


def imagenet_wnids() -> tuple[str, ...]:
    """WordNet id of each ImageNet-1k class (the class folder names of the standard ImageNet layout)."""
    return label_set("imagenet1k_wnids")


def labels_for(num_classes: int, name: Optional[str] = None) -> tuple[str, ...]:
    """The named label set when it fits (ImageNet for any 1000-class model), else the class ids as text."""
    name = name if name in LABEL_SETS else ("imagenet1k" if num_classes == 1000 else None)
    if name and LABEL_SETS[name][1] == num_classes:
        return label_set(name)
    return tuple(str(i) for i in range(num_classes))
