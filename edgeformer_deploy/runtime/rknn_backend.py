"""RKNN artifacts on a Rockchip NPU through rknn-toolkit-lite2 (``rknnlite.api.RKNNLite``).

The contract of an RKNN artifact: NHWC uint8 pixels (the model normalises on the NPU), one output of
float32 logits. Only runs on an RK356x/RK3588 board; the tests use a named test double of RKNNLite.
"""
from __future__ import annotations

import numpy as np

from .artifact import Artifact
from .backends import require
from .errors import ArtifactError, PredictError

# --npu-cores value -> RKNNLite core-mask constant (multi-core masks exist on RK3588 only)
NPU_CORE_MASKS = {"auto": "NPU_CORE_AUTO", "0": "NPU_CORE_0", "1": "NPU_CORE_1", "2": "NPU_CORE_2",
                  "0_1": "NPU_CORE_0_1", "0_1_2": "NPU_CORE_0_1_2", "all": "NPU_CORE_ALL"}


class RknnBackend:
    name = "rknn-toolkit-lite2"

    def __init__(self, artifact: Artifact, npu_cores: str = "auto"):
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
        self.output_quantization = None

    def run(self, x: np.ndarray) -> np.ndarray:
        outputs = self.rknn.inference(inputs=[x], data_format="nhwc")
        if not outputs:
            raise PredictError("RKNN inference failed (RKNNLite.inference returned nothing)")
        return np.asarray(outputs[0], dtype=np.float32)

    def close(self) -> None:
        if self.rknn is not None:
            self.rknn.release()
            self.rknn = None
