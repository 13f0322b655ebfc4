"""Where does int8 lose a model? TFLite's QuantizationDebugger on the exact graph our TFLite export converts.

    python scripts/probe_int8_layers.py --model ssd_edgeformer_s --weights W.pt [--imgsz 320] [--data DIR]
        [--calibration minmax|mse] [--float small:1024 first:20 first:60 first:175 last:175]

1. runs ``edgeformer-export --format tflite --int8`` (gate off) and keeps the lowered ONNX and the calibration
   array the converter worker receives;
2. in the managed ``tflite`` environment: onnx2tf -> SavedModel, per-layer statistics (RMSE / scale per op,
   written to ``<work>/layer_stats.csv``), then for each ``--float`` set (``small:N`` = ops with <= N outputs,
   ``first:N`` / ``last:N`` = the first / last N ops in graph order) a selectively quantised model and its worst
   cosine vs the fp32 TFLite over the calibration images + 4 noise images (float I/O).

Every quantisation here takes its activation ranges as the export's does (``tflite_worker.refine_ranges``:
measured in TFLite's reference kernels, ``--calibration`` minmax or mse), not TF's calibrator's.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = r'''
import csv, math, os, sys
import numpy as np
import onnx2tf
import onnx2tf.onnx2tf as o2t
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

work, workers, ranges, sets = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
calib = np.load(os.path.join(work, "calib.npy")).astype(np.float32)
sys.path.insert(0, workers)
import tflite_worker
from tensorflow.lite.python import convert as tf_convert

quantize, refined = tf_convert.mlir_quantize, {}

def mlir_quantize(calibrated, *args, **kwargs):  # what the debugger calls: the export's ranges first
    key = hash(bytes(calibrated))
    if key not in refined:
        refined[key] = tflite_worker.refine_ranges(calibrated, calib, ranges)
    return quantize(refined[key], *args, **kwargs)

tf_convert.mlir_quantize = mlir_quantize
o2t.download_test_image_data = lambda: calib
saved = os.path.join(work, "saved_model")
onnx2tf.convert(input_onnx_file_path=os.path.join(work, "model.onnx"), output_folder_path=saved,
                verbosity="error", output_signaturedefs=True)

def rep():
    for x in calib:
        yield [x[None]]

def converter():
    c = tf.lite.TFLiteConverter.from_saved_model(saved)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = rep
    c._experimental_disable_per_channel_quantization_for_dense_layers = True  # as the export does
    return c

stats = os.path.join(work, "layer_stats.csv")
debugger = tf.lite.experimental.QuantizationDebugger(converter=converter(), debug_dataset=rep)
debugger.run()
with open(stats, "w") as fh:
    debugger.layer_statistics_dump(fh)
rows = list(csv.DictReader(open(stats)))
rms = lambda r: math.sqrt(float(r["mean_squared_error"])) / float(r["scale"]) if float(r["scale"]) else 0.0
print(f"{len(rows)} quantised ops; RMSE/scale median {np.median([rms(r) for r in rows]):.3f}; worst:")
for r in sorted(rows, key=rms, reverse=True)[:8]:
    print(f"  {rms(r):.2f}  {r['op_name']:<18} {int(float(r['num_elements'])):>8} outputs  {r['tensor_name'][-60:]}")

rng = np.random.default_rng(0)
inputs = list(calib) + [rng.random(calib.shape[1:], dtype=np.float32) for _ in range(4)]

def outputs(content):
    it = Interpreter(model_content=content)
    it.allocate_tensors()
    d, result = it.get_input_details()[0], []
    for x in inputs:
        it.set_tensor(d["index"], x[None])
        it.invoke()
        result.append(np.concatenate([it.get_tensor(o["index"]).astype(np.float64).ravel()
                                      for o in sorted(it.get_output_details(), key=lambda o: o["name"])]))
    return result

reference = outputs(tf.lite.TFLiteConverter.from_saved_model(saved).convert())
for spec in ["none:0"] + sets:
    kind, n = spec.split(":")
    n = int(n)
    names = [r["tensor_name"] for r in (rows if kind != "small" else [])]
    deny = {"none": [], "small": [r["tensor_name"] for r in rows if float(r["num_elements"]) <= n],
            "first": names[:n], "last": names[-n:] if n else []}[kind]
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=deny) if deny else None
    model = tf.lite.experimental.QuantizationDebugger(converter=converter(), debug_dataset=rep,
                                                      debug_options=options).get_nondebug_quantized_model()
    cosines = [a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(reference, outputs(model))]
    print(f"| {spec} | {len(deny)} ops in float | worst cosine {min(cosines):.4f} |", flush=True)
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ssd_edgeformer_s")
    parser.add_argument("--weights", required=True, type=Path)
    parser.add_argument("--imgsz", type=int)
    parser.add_argument("--data", type=Path, help="calibration folder (default: the shipped photos)")
    parser.add_argument("--calibration", choices=["minmax", "mse"], default="minmax")
    parser.add_argument("--float", nargs="*", default=["small:1024", "first:20", "first:60", "first:175", "last:175"])
    parser.add_argument("--work", type=Path, help="keep the files here (default: a temporary folder)")
    args = parser.parse_args()

    from edgeformer_deploy.export import cli, tflite_format
    from edgeformer_deploy.export.converter_env import require_env

    work = args.work or Path(tempfile.mkdtemp(prefix="int8-probe-"))
    work.mkdir(parents=True, exist_ok=True)
    convert = tflite_format.run_worker

    def keep_inputs(env, worker, worker_args, *rest, **kwargs):
        if worker_args[0] == "convert":
            shutil.copy(worker_args[worker_args.index("--onnx") + 1], work / "model.onnx")
            shutil.copy(worker_args[worker_args.index("--calib") + 1], work / "calib.npy")
        return convert(env, worker, worker_args, *rest, **kwargs)

    tflite_format.run_worker = keep_inputs
    export = ["--model", args.model, "--weights", str(args.weights), "--format", "tflite", "--int8",
              "--calibration", args.calibration, "--min-cosine", "0", "--output", str(work / "export")]
    export += ["--imgsz", str(args.imgsz)] if args.imgsz else []
    export += ["--data", str(args.data)] if args.data else []
    try:
        cli.main(export, standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            sys.exit(exc.code)
    workers = Path(tflite_format.__file__).parent / "workers"
    subprocess.run([str(require_env("tflite").python), "-c", PROBE, str(work), str(workers), args.calibration,
                    *args.float], check=True)
    print(f"files in {work}")


if __name__ == "__main__":
    main()
