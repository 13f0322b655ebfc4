"""A task-agnostic session: artifact + manifest -> backend; input tensors -> every output, batched and
dequantised, in the manifest's order. Task heads (classify, detect) sit on top of it."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from .artifact import Artifact, load_artifact
from .backends import BackendOptions, open_backend, run_in_batches
from .cpu import pin_to_cpus
from .errors import ArtifactError, PredictError
from .preprocess import ImageLike, fit_image, load_image, to_model_input


class Session:
    """One exported artifact (``.onnx``, ``.tflite`` or ``.rknn``) opened in its runtime.

    ``cpus``: pin this process to these cores first (e.g. "4-7", the big cores of an RK3588).
    """

    def __init__(self, artifact_path: Union[str, Path], options: BackendOptions = BackendOptions(),
                 cpus: Union[str, Sequence[int], None] = None, check_sha256: bool = True):
        options.check()
        self.artifact: Artifact = load_artifact(artifact_path, check_sha256=check_sha256)
        if cpus is not None:
            pin_to_cpus(cpus)
        self.backend = open_backend(self.artifact, options)
        self._check_contract()
        self._order = self._output_order()

    @property
    def batch(self) -> Optional[int]:
        """Images per inference of the artifact (None: any number)."""
        return self.artifact.batch

    def _check_contract(self) -> None:
        """The model as the backend sees it must be what the manifest says."""
        spec, backend, path = self.artifact.input, self.backend, self.artifact.path
        want, got = tuple(spec.shape), tuple(backend.input_shape)
        if len(got) != len(want) or any(w is not None and g is not None and w != g for w, g in zip(want, got)):
            raise ArtifactError(f"{path}: manifest/artifact mismatch: model input is {list(got)}, "
                                f"manifest says {list(want)}")
        if backend.input_dtype != spec.dtype:
            raise ArtifactError(f"{path}: manifest/artifact mismatch: model input is {backend.input_dtype}, "
                                f"manifest says {spec.dtype}")
        quant = backend.input_quantization
        declared = (spec.scale, spec.zero_point) if spec.quantized else None
        if (quant is None) != (declared is None) or (
                quant is not None and (not np.isclose(quant[0], declared[0], rtol=1e-6) or quant[1] != declared[1])):
            raise ArtifactError(f"{path}: manifest/artifact mismatch: input quantisation is {quant}, "
                                f"manifest says {declared}")
        if len(backend.output_names) != len(self.artifact.outputs):
            raise ArtifactError(f"{path}: manifest/artifact mismatch: the model has {len(backend.output_names)} "
                                f"output(s), the manifest lists {len(self.artifact.outputs)}")

    def _output_order(self) -> List[int]:
        """Backend output index of each manifest output, by the runtime's tensor name (a single output needs
        no name: manifests from before the field)."""
        names = list(self.backend.output_names)
        wanted = [spec.tensor or spec.name for spec in self.artifact.outputs]
        if sorted(names) == sorted(wanted):
            return [names.index(name) for name in wanted]
        if len(wanted) > 1:
            raise ArtifactError(f"{self.artifact.path}: manifest/artifact mismatch: the model's outputs are "
                                f"{names}, the manifest lists {wanted}")
        return [0]

    # -- tensors ---------------------------------------------------------------------------------
    def fit(self, image: ImageLike) -> np.ndarray:
        """One image -> the network's H x W x 3 uint8 RGB view (resize / crop as the manifest says)."""
        a = self.artifact
        return fit_image(load_image(image), a.resize, a.crop, a.resize_mode)

    def crops(self, images: Sequence[ImageLike]) -> np.ndarray:
        return np.stack([self.fit(image) for image in images])

    def to_input(self, crops: np.ndarray) -> np.ndarray:
        """NHWC uint8 RGB crops -> the artifact's input tensor: channel order, layout, dtype and
        quantisation as the manifest says."""
        spec = self.artifact.input
        return to_model_input(crops, spec.layout, spec.dtype, spec.scale, spec.zero_point,
                              channel_order=self.artifact.channel_order)

    def outputs(self, tensor: np.ndarray) -> List[np.ndarray]:
        """Input tensor (any number of images) -> every output as float32, in the manifest's order, shaped
        [N, …] like the manifest. Fixed-batch artifacts run in chunks of their batch, the last chunk
        padded by repeating its last image."""
        tensor = np.asarray(tensor)
        if tensor.ndim != 4 or tensor.dtype != np.dtype(self.artifact.input.dtype):
            raise PredictError(f"run() takes a 4-d {self.artifact.input.dtype} tensor shaped like "
                               f"{list(self.artifact.input.shape)}, got {tensor.dtype} {list(tensor.shape)}")
        raw = run_in_batches(self._run_once, tensor, self.batch or len(tensor))
        return [out.reshape((len(tensor),) + tuple(d or -1 for d in spec.shape[1:]))
                for out, spec in zip(raw, self.artifact.outputs)]

    def _run_once(self, chunk: np.ndarray) -> List[np.ndarray]:
        raw = self.backend.run(chunk)
        quant = self.backend.output_quantization
        return [_dequantize(raw[i], quant[i] if i < len(quant) else None) for i in self._order]

    def close(self) -> None:
        self.backend.close()


def _dequantize(raw: np.ndarray, quant) -> np.ndarray:
    if quant is None:
        return np.asarray(raw).astype(np.float32, copy=False)
    scale, zero_point = quant
    return ((np.asarray(raw).astype(np.float32) - zero_point) * np.float32(scale)).astype(np.float32)
