"""``Predictor``: artifact + manifest -> backend; images -> top-k (class id, label, probability)."""
from __future__ import annotations

from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Union

import numpy as np

from .artifact import Artifact, load_artifact
from .backends import open_backend, run_in_batches
from .cpu import pin_to_cpus
from .errors import ArtifactError, PredictError
from .labels import labels_for
from .preprocess import ImageLike, load_image, resize_crop, to_model_input


class Prediction(NamedTuple):
    class_id: int
    label: str
    probability: float


class Predictor:
    """Board-side classifier for one exported artifact (``.onnx``, ``.tflite`` or ``.rknn``).

    ``backend``: "auto" (by file type) or a name from ``backends.BACKEND_CHOICES``; ``threads``: the
    runtime's CPU threads; ``cpus``: pin this process to these cores first (e.g. "4-7", the big
    cores of an RK3588); ``npu_cores``: RKNN core mask.
    """

    def __init__(self, artifact_path: Union[str, Path], backend: str = "auto", threads: Optional[int] = None,
                 cpus: Union[str, Sequence[int], None] = None, npu_cores: str = "auto",
                 labels: Optional[Sequence[str]] = None, check_sha256: bool = True):
        if threads is not None and threads < 1:
            raise PredictError(f"threads must be at least 1 (got {threads})")
        self.artifact: Artifact = load_artifact(artifact_path, check_sha256=check_sha256)
        if cpus is not None:
            pin_to_cpus(cpus)
        self.backend = open_backend(self.artifact, backend, threads, npu_cores)
        self._check_contract()
        self.labels = tuple(labels) if labels is not None else labels_for(self.artifact.num_classes)
        if len(self.labels) != self.artifact.num_classes:
            raise PredictError(f"{len(self.labels)} labels for a {self.artifact.num_classes}-class model")

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def imgsz(self) -> int:
        return self.artifact.crop

    @property
    def batch(self) -> Optional[int]:
        """Images per inference of the artifact (None: any number)."""
        return self.artifact.batch

    def _check_contract(self) -> None:
        """The model as the backend sees it must be what the manifest says."""
        spec, backend = self.artifact.input, self.backend
        want = tuple(spec.shape)
        got = tuple(backend.input_shape)
        if len(got) != len(want) or any(w is not None and g is not None and w != g for w, g in zip(want, got)):
            raise ArtifactError(f"{self.artifact.path}: manifest/artifact mismatch: model input is "
                                f"{list(got)}, manifest says {list(want)}")
        if backend.input_dtype != spec.dtype:
            raise ArtifactError(f"{self.artifact.path}: manifest/artifact mismatch: model input is "
                                f"{backend.input_dtype}, manifest says {spec.dtype}")
        quant = getattr(backend, "input_quantization", None)
        declared = (spec.scale, spec.zero_point) if spec.quantized else None
        if (quant is None) != (declared is None) or (
                quant is not None and (not np.isclose(quant[0], declared[0], rtol=1e-6) or quant[1] != declared[1])):
            raise ArtifactError(f"{self.artifact.path}: manifest/artifact mismatch: input quantisation is "
                                f"{quant}, manifest says {declared}")

    # -- tensors ---------------------------------------------------------------------------------
    def crops(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Images -> NHWC uint8 crops (ml-cvnets evaluation geometry)."""
        return np.stack([resize_crop(load_image(image), self.artifact.resize, self.artifact.crop)
                         for image in images])

    def preprocess(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Images -> the artifact's input tensor (layout, dtype, quantisation from the manifest)."""
        return self.to_input(self.crops(images))

    def to_input(self, crops: np.ndarray) -> np.ndarray:
        """NHWC uint8 RGB crops (:meth:`crops`) -> the artifact's input tensor: channel order, layout,
        dtype and quantisation as the manifest says."""
        spec = self.artifact.input
        return to_model_input(crops, spec.layout, spec.dtype, spec.scale, spec.zero_point,
                              channel_order=self.artifact.channel_order)

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """Input tensor (any number of images) -> float32 logits [N, classes]. Fixed-batch artifacts
        run in chunks of their batch, the last chunk padded by repeating its last image."""
        tensor = np.asarray(tensor)
        if tensor.ndim != 4 or tensor.dtype != np.dtype(self.artifact.input.dtype):
            raise PredictError(f"run() takes a 4-d {self.artifact.input.dtype} tensor shaped like "
                               f"{list(self.artifact.input.shape)}, got {tensor.dtype} {list(tensor.shape)}")
        logits = run_in_batches(lambda chunk: self._dequantize(self.backend.run(chunk)), tensor,
                                self.batch or len(tensor))
        return logits.reshape(len(tensor), -1)

    def _dequantize(self, raw: np.ndarray) -> np.ndarray:
        quant = self.backend.output_quantization
        if quant is None:
            return raw.astype(np.float32, copy=False)
        scale, zero_point = quant
        return ((raw.astype(np.float32) - zero_point) * np.float32(scale)).astype(np.float32)

    def logits(self, images: Sequence[ImageLike]) -> np.ndarray:
        return self.run(self.preprocess(images))

    # -- classification --------------------------------------------------------------------------
    def predict(self, images, topk: int = 5):
        """One image (path, PIL image, HxW[x3] uint8 array) -> list of top-k :class:`Prediction`;
        a list of images or an NxHxWx3 uint8 array -> one such list per image."""
        single = not isinstance(images, (list, tuple)) and not (isinstance(images, np.ndarray) and images.ndim == 4)
        batch = [images] if single else list(images)
        results = self.top_k(self.logits(batch), topk)
        return results[0] if single else results

    def top_k(self, logits: np.ndarray, topk: int = 5) -> List[List[Prediction]]:
        probabilities = softmax(logits)
        topk = max(1, min(topk, probabilities.shape[1]))
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :topk]
        return [[Prediction(int(c), self.labels[int(c)], float(p[c])) for c in row]
                for row, p in zip(order, probabilities)]

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    x = np.exp(x - x.max(axis=1, keepdims=True))
    return x / x.sum(axis=1, keepdims=True)
