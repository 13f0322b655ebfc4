"""Runs inside the managed ``rknn`` environment (rknn-toolkit2); imports nothing from edgeformer_deploy.

    python rknn_worker.py --onnx M.onnx --out M.rknn --target rk3588 --report R.json
        [--int8 --dataset DATASET.txt [--quantized-algorithm normal|mmse]] [--inputs X.npy --outputs Y.npy]
        [--analyze A.npy --analyze-dir DIR]

One process builds, exports and (optionally) runs the simulator: the toolkit's simulator only runs a
model built in the same session, never one loaded back with ``load_rknn``. The native layer table (where
CPU fallback shows) goes to fd 1, i.e. the log the host reads. Errors: one ``WORKER-ERROR: …`` line, exit 1.
"""
import argparse
import json
import socket
import sys
import time

import numpy as np


def _no_network(*_args, **_kwargs):
    raise OSError("network access is disabled in the edgeformer-deploy converter")


def _check(what, ret):
    if ret != 0:
        raise RuntimeError(f"rknn-toolkit2 {what} failed (returned {ret}; see the converter log)")


def main(args):
    socket.socket.connect = _no_network
    socket.create_connection = _no_network
    from importlib import metadata

    from rknn.api import RKNN

    report = {"toolkit": metadata.version("rknn-toolkit2")}
    # verbose: the per-layer table with each layer's NPU/CPU placement is printed only in verbose mode
    rknn = RKNN(verbose=True)
    try:
        # ml-cvnets models take RGB in [0, 1]: the NPU divides the board's uint8 pixels by 255 itself
        rknn.config(mean_values=[[0, 0, 0]], std_values=[[255, 255, 255]], target_platform=args.target,
                    quantized_algorithm=args.quantized_algorithm)
        _check("load_onnx", rknn.load_onnx(model=args.onnx))
        started = time.perf_counter()
        _check("build", rknn.build(do_quantization=args.int8, dataset=args.dataset if args.int8 else None))
        report["build_seconds"] = round(time.perf_counter() - started, 2)
        _check("export_rknn", rknn.export_rknn(args.out))
        if args.inputs or args.analyze:
            _check("init_runtime (simulator)", rknn.init_runtime())
        if args.inputs:
            # float NHWC pixels in [0, 255]: the simulator applies the same mean/std as for uint8 frames,
            # so the reference can use the exact same (not re-rounded) inputs; batch 1 only
            inputs = np.load(args.inputs)
            outputs = []
            for sample in inputs:
                result = rknn.inference(inputs=[sample[None].astype(np.float32)], data_format="nhwc")
                if not result:
                    raise RuntimeError("simulator inference returned nothing")
                outputs.append([np.asarray(r, np.float32)[0] for r in result])
            # every output, in the model's output order, stacked over the samples
            np.savez(args.outputs, *[np.stack(per_output) for per_output in zip(*outputs)])
        if args.analyze:
            sys.stdout.flush()
            _check("accuracy_analysis", rknn.accuracy_analysis(inputs=[args.analyze], output_dir=args.analyze_dir))
    finally:
        rknn.release()
    with open(args.report, "w") as fh:
        json.dump(report, fh)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--report", required=True)
    parser.add_argument("--int8", action="store_true")
    parser.add_argument("--dataset")
    parser.add_argument("--quantized-algorithm", default="normal", choices=["normal", "mmse", "kl_divergence"])
    parser.add_argument("--inputs")
    parser.add_argument("--outputs")
    parser.add_argument("--analyze")
    parser.add_argument("--analyze-dir")
    try:
        main(parser.parse_args())
    except Exception as exc:  # one line for the host; the full traceback stays in the log
        import traceback

        traceback.print_exc()
        # the toolkit re-raises with its whole traceback in the message: its last line is the reason
        reason = (str(exc).strip().splitlines() or [""])[-1]
        print(f"WORKER-ERROR: {type(exc).__name__}: {reason}", flush=True)
        sys.exit(1)
