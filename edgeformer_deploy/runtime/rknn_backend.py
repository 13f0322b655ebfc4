"""RKNN artifacts on a Rockchip NPU through rknn-toolkit-lite2 (``rknnlite.api.RKNNLite``).

The contract of an RKNN artifact: NHWC uint8 pixels (the model normalises on the NPU), float32 outputs
in the manifest's order. Only runs on an RK356x/RK3588 board; the tests use a named test double of RKNNLite.
"""
from __future__ import annotations

import numpy as np

from .artifact import Artifact
from .backends import Backend, BackendOptions, require
from .errors import ArtifactError, PredictError

# --npu-cores value -> RKNNLite core-mask constant (multi-core masks exist on RK3588 only)
NPU_CORE_MASKS = {"auto": "NPU_CORE_AUTO", "0": "NPU_CORE_0", "1": "NPU_CORE_1", "2": "NPU_CORE_2",
                  "0_1": "NPU_CORE_0_1", "0_1_2": "NPU_CORE_0_1_2", "all": "NPU_CORE_ALL"}


class RknnBackend(Backend):
    name = "rknn-toolkit-lite2"

    def __init__(self, artifact: Artifact, options: BackendOptions = BackendOptions()):
        npu_cores = options.npu_cores
        if npu_cores not in NPU_CORE_MASKS:
            raise PredictError(f"unknown NPU core mask {npu_cores!r}; choose one of: {', '.join(NPU_CORE_MASKS)}")
        rknnlite_api = require("rknnlite.api", "rknn")
        rknn_class = rknnlite_api.RKNNLite
        core_mask = getattr(rknn_class, NPU_CORE_MASKS[npu_cores], None)
        if core_mask is None:
            raise PredictError(f"this rknn-toolkit-lite2 has no {NPU_CORE_MASKS[npu_cores]} (RK3588 only)")
        self.rknn = rknn_class()
        if self.rknn.load_rknn(str(artifact.path)) != 0:
            raise ArtifactError(f"{artifact.path}: RKNNLite cannot load it (not an .rknn model for this toolkit?)")
        if self.rknn.init_runtime(core_mask=core_mask) != 0:
            raise PredictError("RKNN NPU runtime failed to start: this needs a Rockchip RK3566/RK3568/RK3588 "
                               "board with the rknpu driver and librknnrt.so")
        # RKNNLite does not report tensor shapes before inference: the manifest is the contract
        self.input_shape = artifact.input.shape
        self.input_dtype = artifact.input.dtype
        self.output_names = tuple(spec.name for spec in artifact.outputs)
        self.output_quantization = (None,) * len(self.output_names)

    def run(self, x: np.ndarray):
        outputs = self.rknn.inference(inputs=[x], data_format="nhwc")
        if not outputs or len(outputs) != len(self.output_names):
            raise PredictError(f"RKNN inference failed (RKNNLite.inference returned "
                               f"{len(outputs or [])} outputs, the model has {len(self.output_names)})")
        return [np.asarray(out, dtype=np.float32) for out in outputs]

    def close(self) -> None:
        if self.rknn is not None:
            self.rknn.release()
            self.rknn = None
