"""Artifacts for the runtime tests: the real ONNX exports (through the export CLI) and a tiny TFLite
classifier written here with the TFLite flatbuffer schema, so the TFLite backend is tested on real
interpreters before the TFLite export exists.

The tiny model: NHWC [1, S, S, 3] -> CONV_2D 3x3/2 VALID (8 ch, ReLU) -> MEAN(H, W) -> FULLY_CONNECTED
-> [1, 1000] logits; the int8 variant wraps it in QUANTIZE/DEQUANTIZE, i.e. int8 input/output with the
manifest's scale/zero-point, exactly the contract of an int8 TFLite export.
"""
from __future__ import annotations

import json
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeformer_deploy.runtime.artifact import manifest_path

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_IMGSZ = 64
NUM_CLASSES = 1000
INPUT_QUANT = (1 / 255, -128)  # int8 input: [0, 1] -> [-128, 127]
OUTPUT_QUANT = (0.06, 3)  # covers the tiny model's logits (|logit| < 7.4)


@dataclass
class TinyWeights:
    conv_w: np.ndarray  # [8, 3, 3, 3] OHWI
    conv_b: np.ndarray
    fc_w: np.ndarray  # [1000, 8]
    fc_b: np.ndarray


def tiny_weights(seed: int = 0) -> TinyWeights:
    rng = np.random.default_rng(seed)
    return TinyWeights(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32),
                       rng.normal(0, 0.1, 8).astype(np.float32),
                       rng.normal(0, 1.0, (NUM_CLASSES, 8)).astype(np.float32),
                       rng.normal(0, 0.1, NUM_CLASSES).astype(np.float32))


def tiny_reference(weights: TinyWeights, x: np.ndarray) -> np.ndarray:
    """numpy float64 forward pass of the tiny model on NHWC float input [N, S, S, 3]."""
    x = x.astype(np.float64)
    n, h, w, _ = x.shape
    oh, ow = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    patches = np.stack([x[:, i:i + 2 * oh:2, j:j + 2 * ow:2, :] for i in range(3) for j in range(3)], axis=3)
    kernel = weights.conv_w.astype(np.float64).transpose(1, 2, 0, 3).reshape(9, 8, 3)  # [kh*kw, O, I]
    conv = np.maximum(np.einsum("nhwki,koi->nhwo", patches, kernel) + weights.conv_b, 0)
    return conv.mean(axis=(1, 2)) @ weights.fc_w.T.astype(np.float64) + weights.fc_b


def write_tiny_tflite(out_dir: Path, int8: bool = False, weights: TinyWeights | None = None) -> Path:
    """Write ``tiny_<S>[_int8].tflite`` + its manifest into ``out_dir``; returns the .tflite path."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    weights = weights or tiny_weights()
    size = TINY_IMGSZ
    oh = (size - 3) // 2 + 1
    buffers, tensors, operators, opcodes = [fb.BufferT()], [], [], []

    def tensor(name, shape, dtype=fb.TensorType.FLOAT32, data=None, quant=None):
        t = fb.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), dtype, 0
        if data is not None:
            b = fb.BufferT()
            b.data = list(np.ascontiguousarray(data).tobytes())
            buffers.append(b)
            t.buffer = len(buffers) - 1
        if quant is not None:
            q = fb.QuantizationParametersT()
            q.scale, q.zeroPoint = [float(quant[0])], [int(quant[1])]
            t.quantization = q
        tensors.append(t)
        return len(tensors) - 1

    def op(code, inputs, outputs, options_type=0, options=None):
        if code not in [c.builtinCode for c in opcodes]:
            c = fb.OperatorCodeT()
            c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), 1
            opcodes.append(c)
        o = fb.OperatorT()
        o.opcodeIndex = [c.builtinCode for c in opcodes].index(code)
        o.inputs, o.outputs = list(inputs), list(outputs)
        o.builtinOptionsType, o.builtinOptions = options_type, options
        operators.append(o)

    graph_in = x = tensor("images", [1, size, size, 3])
    if int8:
        graph_in = tensor("images", [1, size, size, 3], fb.TensorType.INT8, quant=INPUT_QUANT)
        tensors[x].name = "images_float"
        op(fb.BuiltinOperator.DEQUANTIZE, [graph_in], [x], fb.BuiltinOptions.DequantizeOptions,
           fb.DequantizeOptionsT())
    conv_opts = fb.Conv2DOptionsT()
    conv_opts.padding, conv_opts.strideW, conv_opts.strideH = fb.Padding.VALID, 2, 2
    conv_opts.fusedActivationFunction = fb.ActivationFunctionType.RELU
    conv = tensor("conv", [1, oh, oh, 8])
    op(fb.BuiltinOperator.CONV_2D, [x, tensor("conv_w", [8, 3, 3, 3], data=weights.conv_w),
                                    tensor("conv_b", [8], data=weights.conv_b)], [conv],
       fb.BuiltinOptions.Conv2DOptions, conv_opts)
    pooled = tensor("pooled", [1, 8])
    reducer = fb.ReducerOptionsT()
    reducer.keepDims = False
    op(fb.BuiltinOperator.MEAN, [conv, tensor("axes", [2], fb.TensorType.INT32, np.array([1, 2], np.int32))],
       [pooled], fb.BuiltinOptions.ReducerOptions, reducer)
    logits = tensor("logits_float" if int8 else "logits", [1, NUM_CLASSES])
    op(fb.BuiltinOperator.FULLY_CONNECTED, [pooled, tensor("fc_w", [NUM_CLASSES, 8], data=weights.fc_w),
                                            tensor("fc_b", [NUM_CLASSES], data=weights.fc_b)], [logits],
       fb.BuiltinOptions.FullyConnectedOptions, fb.FullyConnectedOptionsT())
    graph_out = logits
    if int8:
        graph_out = tensor("logits", [1, NUM_CLASSES], fb.TensorType.INT8, quant=OUTPUT_QUANT)
        op(fb.BuiltinOperator.QUANTIZE, [logits], [graph_out], fb.BuiltinOptions.QuantizeOptions,
           fb.QuantizeOptionsT())

    subgraph = fb.SubGraphT()
    subgraph.tensors, subgraph.operators, subgraph.name = tensors, operators, "main"
    subgraph.inputs, subgraph.outputs = [graph_in], [graph_out]
    model = fb.ModelT()
    model.version, model.description = 3, "edgeformer-deploy runtime test model"
    model.operatorCodes, model.subgraphs, model.buffers = opcodes, [subgraph], buffers
    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"tiny_{size}{'_int8' if int8 else ''}.tflite"
    path.write_bytes(builder.Output())
    dtype = "int8" if int8 else "float32"
    input_spec = {"name": "images", "shape": [1, size, size, 3], "layout": "NHWC", "dtype": dtype}
    output_spec = {"name": "logits", "shape": [1, NUM_CLASSES], "dtype": dtype}
    if int8:
        input_spec["quantization"] = {"scale": INPUT_QUANT[0], "zero_point": INPUT_QUANT[1]}
        output_spec["quantization"] = {"scale": OUTPUT_QUANT[0], "zero_point": OUTPUT_QUANT[1]}
    write_manifest(path, fmt="tflite", model="tiny", imgsz=size, input_spec=input_spec, output_spec=output_spec)
    return path


def write_manifest(path: Path, *, fmt: str, model: str, imgsz: int, input_spec: dict, output_spec: dict,
                   **extra) -> Path:
    """A manifest with the schema of ``edgeformer_deploy.export.manifest`` (fields the runtime reads)."""
    manifest = {"manifest_version": 1, "model": model, "variant": "test", "format": fmt, "file": path.name,
                "size_bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "input": input_spec, "output": output_spec, "imgsz": imgsz,
                "preprocess": {"resize": imgsz + 32, "crop": imgsz, "interpolation": "bilinear",
                               "scale": 1 / 255, "mean": [0.0] * 3, "std": [1.0] * 3, "channel_order": "RGB"},
                "num_classes": output_spec["shape"][-1], **extra}
    target = manifest_path(path)
    target.write_text(json.dumps(manifest, indent=2) + "\n")
    return target


# -- real exports through the export CLI, cached per test session -----------------------------------
ARM_IMGSZ = 64  # ARM runs are emulated (~15 s per EdgeFormer-S inference at 64, ~3 min at 256)


def export_onnx(out_dir: Path, official_dir: Path, model: str, imgsz: int = ARM_IMGSZ) -> Path:
    """``edgeformer-export --model MODEL --weights <official fixture>`` into ``out_dir`` (once)."""
    from helpers import run_cli

    artifact = out_dir / f"{model}_{imgsz}.onnx"
    if not artifact.is_file():
        result = run_cli("edgeformer-export", "--model", model, "--weights", official_dir / f"{model}.pt",
                         "--format", "onnx", "--imgsz", imgsz, "--output", out_dir)
        assert result.returncode == 0, result.stderr
    return artifact
