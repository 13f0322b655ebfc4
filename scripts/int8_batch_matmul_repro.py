"""Minimal reproducer: an attention-shaped BATCH_MATMUL of two activations (MobileViT-S's q @ k^T and
attn @ v) is slower in int8 than in float32 on x86 ai-edge-litert 2.3, because XNNPACK takes only a constant
right operand and TFLite's int8 BATCH_MATMUL kernel is the reference one.

    ~/.cache/edgeformer-deploy/envs/tflite/bin/python scripts/int8_batch_matmul_repro.py OUT_DIR
    python scripts/int8_batch_matmul_repro.py --run OUT_DIR      # ai-edge-litert (the dev extra), one thread

Shapes: MobileViT-S's first transformer (144 channels, 4 heads of 36, 2x2 patches of a 32x32 map: 4 x 256 tokens).
Measured on this host (BENCHMARKS.md, session 13) and profiled with perf: the int8 models spend their time in
tflite::reference_ops::BatchMatMul<signed char, int, signed char, signed char> and MultiplyByQuantizedMultiplier.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

BATCH, HEADS, TOKENS, DIM = 4, 4, 256, 36  # patches x heads x tokens x head dim


def build(out: Path) -> None:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    shape = (BATCH, HEADS, TOKENS, DIM)

    def convert(fn, name, int8):
        concrete = tf.function(fn).get_concrete_function(tf.TensorSpec(shape, tf.float32),
                                                         tf.TensorSpec(shape, tf.float32))
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn)
        if int8:
            def representative():
                for _ in range(8):
                    yield [rng.standard_normal(shape).astype(np.float32) for _ in range(2)]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = converter.inference_output_type = tf.int8
        (out / f"{name}_{'int8' if int8 else 'fp32'}.tflite").write_bytes(converter.convert())

    out.mkdir(parents=True, exist_ok=True)
    for int8 in (False, True):
        convert(lambda q, k: tf.matmul(q, k, transpose_b=True), "q_kT", int8)  # the [.., T, T] scores
        # ... and the scores times v (here k), the second product, not transposed
        convert(lambda q, k: tf.matmul(tf.matmul(q, k, transpose_b=True), k), "q_kT_k", int8)


def run(folder: Path, runs: int = 50) -> None:
    from ai_edge_litert.interpreter import Interpreter

    for path in sorted(folder.glob("*.tflite")):
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.ones(detail["shape"], detail["dtype"]))
        interpreter.invoke()
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            interpreter.invoke()
            times.append(time.perf_counter() - started)
        print(f"{path.name}: {np.median(times) * 1e3:.3f} ms (median of {runs})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path, help="output folder (build) or the folder of .tflite files (--run)")
    parser.add_argument("--run", action="store_true", help="time every model in the folder")
    args = parser.parse_args()
    run(args.path) if args.run else build(args.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
