"""Name -> model spec (family, task, classes, input size, preprocessing, labels) and its constructor."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from ..errors import EdgeformerError
from .edgeformer import EdgeFormer
from .mobilevit import MobileViT
from .deeplab import NUM_CLASSES as VOC_CLASSES
from .deeplab import OUTPUT_STRIDE, DeepLabV3
from .ssd import NUM_CLASSES as SSD_CLASSES
from .ssd import SingleShotDetector

# The official ParC-Net / ml-cvnets v0.1 pipeline reads images with cv2.imread and never converts them
# (data/datasets/dataset_base.py: read_image), so its checkpoints were trained on BGR in [0, 1].
OFFICIAL_CHANNEL_ORDER = "BGR"
TASKS = ("classification", "detection", "segmentation")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # backbone: "edgeformer" | "mobilevit"
    task: str  # one of TASKS
    num_classes: int  # network outputs (detection: 80 COCO classes + background)
    build: Callable[[int], nn.Module]
    imgsz: int  # the official evaluation size
    # "center_crop": short side to imgsz + 32 then a center crop (classification evaluation);
    # "stretch": straight to imgsz x imgsz, aspect ratio not kept (detection evaluation, --resize-input-images)
    resize: str
    labels: str  # name of the shipped label list (runtime/labels.py)
    channel_order: str = OFFICIAL_CHANNEL_ORDER  # what the official checkpoints were trained on

    @property
    def has_gcc(self) -> bool:
        return self.family == "edgeformer"


def _classifier(name: str, family: str, build: Callable[[int], nn.Module]) -> ModelSpec:
    return ModelSpec(name=name, family=family, task="classification", num_classes=1000, build=build, imgsz=256,
                     resize="center_crop", labels="imagenet1k")


def _detector(name: str, family: str, backbone: Callable[[], nn.Module]) -> ModelSpec:
    return ModelSpec(name=name, family=family, task="detection", num_classes=SSD_CLASSES,
                     build=lambda n: SingleShotDetector(backbone(), n), imgsz=320, resize="stretch", labels="coco80")


def _segmenter(name: str, family: str, backbone: Callable[[], nn.Module]) -> ModelSpec:
    return ModelSpec(name=name, family=family, task="segmentation", num_classes=VOC_CLASSES,
                     build=lambda n: DeepLabV3(backbone(), n), imgsz=512, resize="stretch", labels="voc21")


_SPECS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    _classifier("edgeformer_xs", "edgeformer", lambda n: EdgeFormer("xs", n)),
    _classifier("edgeformer_s", "edgeformer", lambda n: EdgeFormer("s", n)),
    _classifier("edgeformer_h", "edgeformer", lambda n: EdgeFormer("h", n)),
    _classifier("mobilevit_xxs", "mobilevit", lambda n: MobileViT("xxs", n)),
    _classifier("mobilevit_xs", "mobilevit", lambda n: MobileViT("xs", n)),
    _classifier("mobilevit_s", "mobilevit", lambda n: MobileViT("s", n)),
    _detector("ssd_edgeformer_s", "edgeformer", lambda: EdgeFormer("s")),
    _detector("ssd_mobilevit_s", "mobilevit", lambda: MobileViT("s")),
    _segmenter("deeplabv3_edgeformer_s", "edgeformer", lambda: EdgeFormer("s", output_stride=OUTPUT_STRIDE)),
    _segmenter("deeplabv3_mobilevit_s", "mobilevit", lambda: MobileViT("s", output_stride=OUTPUT_STRIDE)),
)}


def list_models(task: str | None = None) -> list[str]:
    return [name for name, spec in _SPECS.items() if task in (None, spec.task)]


def model_spec(name: str) -> ModelSpec:
    if name not in _SPECS:
        raise EdgeformerError(f"unknown model {name!r}; choose one of: {', '.join(_SPECS)}")
    return _SPECS[name]


def create_model(name: str, num_classes: int | None = None, weights: str | Path | None = None) -> nn.Module:
    """Build a registered model (in eval mode when weights are given)."""
    spec = model_spec(name)
    model = spec.build(num_classes or spec.num_classes)
    model.model_name, model.task = name, spec.task
    if weights is not None:
        from .checkpoint import load_weights

        load_weights(model, weights)
        model.eval()
    return model
