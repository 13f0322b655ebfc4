"""``Predictor`` = a :class:`~.session.Session` + the head of the artifact's task: images -> top-k classes
(classification) or boxes (detection)."""
from __future__ import annotations

from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Union

import numpy as np

from .backends import BackendOptions
from .detect import (Detection, DetectionParams, Detections, assemble_levels, expand_anchors, postprocess,
                     scale_boxes)
from .errors import ArtifactError, PredictError
from .labels import labels_for
from .preprocess import ImageLike, load_image
from .segment import official_mask
from .session import Session


class Prediction(NamedTuple):
    class_id: int
    label: str
    probability: float


class Predictor:
    """Board-side inference for one exported artifact (``.onnx``, ``.tflite`` or ``.rknn``).

    ``backend``: "auto" (by file type) or a name from ``formats.BACKEND_CHOICES``; ``threads``: the
    runtime's CPU threads; ``cpus``: pin this process to these cores first (e.g. "4-7", the big
    cores of an RK3588); ``npu_cores``: RKNN core mask; ``task``: refuse an artifact of another task.
    Detection options (``conf``, ``iou``, ``max_det``, ``agnostic``) default to the official ``predict()``.
    """

    def __init__(self, artifact_path: Union[str, Path], backend: str = "auto", threads: Optional[int] = None,
                 cpus: Union[str, Sequence[int], None] = None, npu_cores: str = "auto",
                 labels: Optional[Sequence[str]] = None, check_sha256: bool = True, task: Optional[str] = None,
                 conf: Optional[float] = None, iou: Optional[float] = None, max_det: Optional[int] = None,
                 agnostic: bool = False):
        if threads is not None and threads < 1:
            raise PredictError(f"threads must be at least 1 (got {threads})")
        self.session = Session(artifact_path, BackendOptions(backend, threads, npu_cores), cpus, check_sha256)
        self.artifact = self.session.artifact
        self.backend = self.session.backend
        if task is not None and task != self.artifact.task:
            self.close()
            raise ArtifactError(f"{self.artifact.path}: a {self.artifact.task} artifact, not {task} "
                                f"(model {self.artifact.model})")
        self.task = self.artifact.task
        if self.task == "detection":
            self.head = DetectHead(self.artifact, conf, iou, max_det, agnostic)
        elif self.task == "segmentation":
            self.head = SegmentHead(self.artifact)
        else:
            self.head = ClassifyHead(self.artifact, labels)
        self.labels = self.head.labels

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def imgsz(self) -> int:
        return self.artifact.crop

    @property
    def batch(self) -> Optional[int]:
        return self.session.batch

    # -- tensors ---------------------------------------------------------------------------------
    def crops(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Images -> NHWC uint8 RGB network views (the task's evaluation geometry)."""
        return self.session.crops(images)

    def preprocess(self, images: Sequence[ImageLike]) -> np.ndarray:
        return self.to_input(self.crops(images))

    def to_input(self, crops: np.ndarray) -> np.ndarray:
        return self.session.to_input(crops)

    def run(self, tensor: np.ndarray):
        """Input tensor -> raw outputs: the logits [N, classes] of a classifier; a list of every output
        (manifest order) otherwise."""
        outputs = self.session.outputs(tensor)
        return outputs[0] if self.task == "classification" else outputs

    def logits(self, images: Sequence[ImageLike]) -> np.ndarray:
        return self.run(self.preprocess(images))

    # -- task results ----------------------------------------------------------------------------
    def predict(self, images, topk: int = 5):
        """One image (path, PIL image, HxW[x3] uint8 array) -> its result (top-k :class:`Prediction` list,
        :class:`Detection` list, or an H x W uint8 class mask at the image's size); a list of images or an
        NxHxWx3 uint8 array -> one result per image."""
        single = not isinstance(images, (list, tuple)) and not (isinstance(images, np.ndarray) and images.ndim == 4)
        batch = [load_image(image) for image in ([images] if single else list(images))]
        outputs = self.session.outputs(self.preprocess(batch))
        results = self.head.results(outputs, [image.size for image in batch], topk)
        return results[0] if single else results

    def top_k(self, logits: np.ndarray, topk: int = 5) -> List[List[Prediction]]:
        return self.head.top_k(logits, topk)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ClassifyHead:
    def __init__(self, artifact, labels: Optional[Sequence[str]] = None):
        self.labels = tuple(labels) if labels is not None else labels_for(artifact.num_classes, artifact.labels)
        if len(self.labels) != artifact.num_classes:
            raise PredictError(f"{len(self.labels)} labels for a {artifact.num_classes}-class model")

    def results(self, outputs: Sequence[np.ndarray], sizes: Sequence[tuple], topk: int = 5) -> list:
        """Every image's top-k :class:`Prediction` list (``sizes`` unused: classes need no geometry)."""
        return self.top_k(outputs[0], topk)

    def top_k(self, logits: np.ndarray, topk: int = 5) -> List[List[Prediction]]:
        probabilities = softmax(logits)
        topk = max(1, min(topk, probabilities.shape[1]))
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :topk]
        return [[Prediction(int(c), self.labels[int(c)], float(p[c])) for c in row]
                for row, p in zip(order, probabilities)]


def check_detection_options(conf: Optional[float], iou: Optional[float], max_det: Optional[int]) -> None:
    if conf is not None and not (0.0 <= conf <= 1.0):
        raise PredictError(f"--conf must be from 0 to 1 (got {conf})")
    if iou is not None and not (0.0 < iou <= 1.0):
        raise PredictError(f"--iou must be above 0 and at most 1 (got {iou})")
    if max_det is not None and max_det < 1:
        raise PredictError(f"--max-det must be at least 1 (got {max_det})")


class DetectHead:
    """SSD outputs -> detections in original-image pixels (official post-processing by default)."""

    def __init__(self, artifact, conf=None, iou=None, max_det=None, agnostic=False):
        check_detection_options(conf, iou, max_det)
        post = artifact.postprocess
        defaults = DetectionParams(score_threshold=float(post.get("score_threshold", 0.05)),
                                   iou_threshold=float(post.get("iou_threshold", 0.5)),
                                   top_k=int(post.get("top_k", 200)),
                                   center_variance=float(post.get("center_variance", 0.1)),
                                   size_variance=float(post.get("size_variance", 0.2)))
        self.params = defaults._replace(**{k: v for k, v in (("score_threshold", conf), ("iou_threshold", iou),
                                                               ("max_det", max_det)) if v is not None},
                                        class_agnostic=bool(agnostic))
        self.anchors = expand_anchors(post["anchors"])
        # class ids 0..C-2: COCO's 80-class order, the network's label minus the background
        self.labels = labels_for(artifact.num_classes - 1, artifact.labels)
        self.num_classes = artifact.num_classes
        names = [spec.name for spec in artifact.outputs]
        roles = post["outputs"]
        self.levels = [names.index(name) for name in roles["levels"]] if "levels" in roles else None
        self.layout = roles.get("layout", "NCHW")
        if self.levels is None:
            self.conf_index, self.loc_index = names.index(roles["confidences"]), names.index(roles["locations"])

    def rows(self, outputs: Sequence[np.ndarray]) -> tuple:
        """(confidences [B, N, C], locations [B, N, 4]) from the artifact's outputs."""
        if self.levels is not None:
            return assemble_levels([outputs[k] for k in self.levels], self.num_classes, self.layout)
        return outputs[self.conf_index], outputs[self.loc_index]

    def raw(self, rows: tuple, i: int) -> Detections:
        """Image ``i``'s detections from :meth:`rows`, normalised to the network input (the official
        ``predict()``)."""
        confidences, locations = rows
        return postprocess(confidences[i], locations[i], self.anchors, self.params)

    def results(self, outputs: Sequence[np.ndarray], sizes: Sequence[tuple], topk: int = 5) -> list:
        """Every image's :class:`Detection` list in its original pixels (``sizes``: (width, height) each)."""
        rows = self.rows(outputs)
        return [self.detections(rows, i, *size) for i, size in enumerate(sizes)]

    def detections(self, rows: tuple, i: int, width: int, height: int) -> List[Detection]:
        """Image ``i``'s detections in its original pixels (``width`` x ``height``)."""
        found = self.raw(rows, i)
        boxes = scale_boxes(found.boxes, width, height)
        return [Detection([float(v) for v in box], float(score), int(label) - 1, self.labels[int(label) - 1])
                for box, score, label in zip(boxes, found.scores, found.labels)]


class SegmentHead:
    """Stride-16 logits -> the official class mask at the original image size (runtime/segment.py)."""

    def __init__(self, artifact):
        post = artifact.postprocess
        self.factor = int(post.get("upsample", 16))
        self.labels = labels_for(artifact.num_classes, artifact.labels)
        names = [spec.name for spec in artifact.outputs]
        self.index = names.index(post["outputs"]["logits"])
        self.nhwc = artifact.outputs[self.index].layout == "NHWC"

    def logits(self, outputs: Sequence[np.ndarray], i: int) -> np.ndarray:
        """Image ``i``'s stride-16 logits, [classes, h, w]."""
        x = outputs[self.index][i]
        return x.transpose(2, 0, 1) if self.nhwc else x

    def results(self, outputs: Sequence[np.ndarray], sizes: Sequence[tuple], topk: int = 5) -> list:
        """Every image's H x W uint8 class mask at its original size (``sizes``: (width, height) each)."""
        return [self.mask(outputs, i, *size) for i, size in enumerate(sizes)]

    def mask(self, outputs: Sequence[np.ndarray], i: int, width: int, height: int) -> np.ndarray:
        return official_mask(self.logits(outputs, i), self.factor, height, width)

    def classes(self, mask: np.ndarray) -> List[SegmentClass]:
        """The classes present in ``mask`` with their pixel fractions, largest first."""
        counts = np.bincount(mask.ravel(), minlength=len(self.labels))
        order = np.argsort(-counts, kind="stable")
        return [SegmentClass(int(c), self.labels[int(c)], float(counts[c] / mask.size)) for c in order if counts[c]]


class SegmentClass(NamedTuple):
    class_id: int
    label: str
    fraction: float


def softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    x = np.exp(x - x.max(axis=1, keepdims=True))
    return x / x.sum(axis=1, keepdims=True)
