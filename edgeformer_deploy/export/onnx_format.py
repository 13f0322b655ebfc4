"""ONNX: the lowered model through torch's exporter, simplified with onnxsim, checked with onnx.checker."""
from __future__ import annotations

import collections
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ExportError
from ..runtime.backends import run_in_batches
from ..runtime.onnx_backend import create_session

INPUT_NAME = "images"
OUTPUT_NAMES = {"classification": ("logits",), "detection": ("confidences", "locations"),
                "segmentation": ("logits_os16",)}
OUTPUT_NAME = OUTPUT_NAMES["classification"][0]


def export_onnx(model: nn.Module, path: Path, imgsz: int, batch: int = 1, dynamic_batch: bool = False,
                opset: int = 17, exporter: str = "legacy", output_names: tuple = (OUTPUT_NAME,)) -> None:
    """Write a self-contained, simplified ``.onnx`` of ``model`` (already lowered) to ``path``."""
    import onnx
    import onnxsim

    example = torch.zeros(batch, 3, imgsz, imgsz)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about constant shapes are the point here
        if exporter == "legacy":
            axes = ({name: {0: "batch"} for name in (INPUT_NAME, *output_names)} if dynamic_batch else None)
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=list(output_names), dynamic_axes=axes)
        else:
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            shapes = ({"x": {0: torch.export.Dim("batch", min=1, max=1024)}} if dynamic_batch else None)
            program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset,
                                        input_names=[INPUT_NAME], output_names=list(output_names),
                                        dynamic_shapes=shapes, verbose=False)
            program.save(str(path), external_data=False)
    proto = onnx.load(str(path))
    simplified, ok = onnxsim.simplify(proto)
    if not ok:
        raise ExportError("onnxsim could not validate the simplified graph")
    simplified.producer_name = "edgeformer-deploy"
    for node in simplified.graph.node:
        # torch names nodes "/layer_3/…"; TensorFlow (onnx2tf) rejects op names starting with "/".
        node.name = node.name.lstrip("/")
    onnx.checker.check_model(simplified, full_check=True)
    onnx.save(simplified, str(path))


def op_census(path: Path) -> dict[str, int]:
    """op type -> count over the whole graph (subgraphs included)."""
    import onnx

    counts: collections.Counter[str] = collections.Counter()

    def visit(graph):
        for node in graph.node:
            counts[node.op_type] += 1
            for attr in node.attribute:
                if attr.g is not None:
                    visit(attr.g)

    visit(onnx.load(str(path), load_external_data=False).graph)
    return dict(sorted(counts.items()))


def onnx_outputs(path: Path) -> list[dict]:
    """Name, shape and dtype of every graph output (symbolic dims as their names)."""
    import onnx

    specs = []
    for out in onnx.load(str(path), load_external_data=False).graph.output:
        tensor = out.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "batch") for d in tensor.shape.dim]
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
        specs.append({"name": out.name, "shape": dims, "dtype": dtype})
    return specs


def onnx_runner(path: Path, batch: int | None):
    """Callable NCHW float32 batch -> every output, through onnxruntime (fixed-batch artifacts run chunked)."""
    session = create_session(path, threads=None)

    def run(x: np.ndarray) -> list[np.ndarray]:
        return run_in_batches(lambda chunk: session.run(None, {INPUT_NAME: chunk}), x, batch)

    return run
