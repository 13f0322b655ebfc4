"""``edgeformer-val``: the accuracy of an exported artifact on a labelled set — ImageNet-style folders (top-1 /
top-5), COCO (mAP, pycocotools), PASCAL VOC (mIoU) — optionally beside the un-lowered PyTorch model.

Board side like the runtime (numpy + one runtime; pycocotools for detection); torch only for a reference.
"""
from .datasets import DataError, load_dataset
from .runner import SCHEMA, Evaluation, evaluate

__all__ = ["evaluate", "Evaluation", "DataError", "load_dataset", "SCHEMA"]
