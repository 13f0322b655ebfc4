"""Minimal reproducer: tflite-runtime 2.14 (armv7 wheel) crashes on a per-channel int8 FULLY_CONNECTED with
more than one row; per-tensor weights, a single row, or the same product as a 1x1 CONV_2D all run.

    ~/.cache/edgeformer-deploy/envs/tflite/bin/python scripts/arm/fc_crash_repro.py OUT_DIR
    for f in OUT_DIR/*.tflite; do ~/.cache/edgeformer-deploy/arm/boards/armhf/run-python \\
        scripts/arm/fc_crash_repro.py --run "$f"; done

Measured under qemu-arm 7.2 (-cpu cortex-a15, tflite-runtime 2.14.0, one thread; BENCHMARKS.md, issue #15):
fc_per_channel_rows8 and fc_per_channel_rows1024 die with SIGSEGV in gemmlowp::UnpackResult (the per-channel
output stage, OutputStageScaleInt32ByFixedPointAndExponentPC); fc_per_tensor_rows1024, fc_per_channel_rows1
and conv1x1_per_channel run. This is why int8 exports quantise FULLY_CONNECTED weights per tensor.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def build(out: Path) -> None:
    import tensorflow as tf

    rng = np.random.default_rng(0)

    def convert(model, shape, name, per_tensor_dense=False):
        def representative():
            for _ in range(8):
                yield [rng.standard_normal(shape).astype(np.float32)]

        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
        converter._experimental_disable_per_channel_quantization_for_dense_layers = per_tensor_dense
        (out / f"{name}.tflite").write_bytes(converter.convert())

    def dense(rows, per_tensor, name):
        x = tf.keras.Input((144,), batch_size=rows)
        convert(tf.keras.Model(x, tf.keras.layers.Dense(432)(x)), (rows, 144), name, per_tensor)

    out.mkdir(parents=True, exist_ok=True)
    dense(8, False, "fc_per_channel_rows8")
    dense(1024, False, "fc_per_channel_rows1024")
    dense(1024, True, "fc_per_tensor_rows1024")
    dense(1, False, "fc_per_channel_rows1")
    x = tf.keras.Input((32, 32, 144), batch_size=1)
    convert(tf.keras.Model(x, tf.keras.layers.Conv2D(432, 1)(x)), (1, 32, 32, 144), "conv1x1_per_channel")


def run(path: Path) -> None:
    from tflite_runtime.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()  # the crash happens here
    print(f"{path.name}: ran")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path, help="output folder (build) or a .tflite (--run)")
    parser.add_argument("--run", action="store_true", help="run one model in tflite-runtime (on the board)")
    args = parser.parse_args()
    run(args.path) if args.run else build(args.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
