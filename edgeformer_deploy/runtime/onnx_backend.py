"""onnxruntime session creation shared by the board runtime and export verification."""
from __future__ import annotations

from pathlib import Path

from .backends import Backend, BackendOptions, require


def create_session(path: str | Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


ONNX_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
               "tensor(int8)": "int8"}


class OnnxBackend(Backend):
    """An ONNX artifact in onnxruntime (CPU)."""

    name = "onnxruntime"

    def __init__(self, artifact, options: BackendOptions = BackendOptions()):
        require("onnxruntime", "onnx")
        path = artifact.path
        try:
            self.session = create_session(path, options.threads)
        except Exception as exc:  # onnxruntime raises its own exception types (InvalidProtobuf, Fail …)
            from .errors import ArtifactError

            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"{path}: onnxruntime cannot load it ({first})") from None
        spec = self.session.get_inputs()[0]
        self.input_name = spec.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in spec.shape)
        self.input_dtype = ONNX_DTYPES.get(spec.type, spec.type)
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        self.output_quantization = (None,) * len(self.output_names)

    def run(self, x):
        return self.session.run(None, {self.input_name: x})

    def close(self) -> None:
        self.session = None
