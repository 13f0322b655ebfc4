"""Runs inside the managed ``tflite`` (or ``tflite-runtime``) environment; imports nothing from edgeformer_deploy.

    python tflite_worker.py convert --onnx M.onnx --out DIR --calib CALIB.npy [--int8]
    python tflite_worker.py run --model M.tflite --inputs X.npy --out Y.npz [--report R.json]

Errors are reported as one ``WORKER-ERROR: …`` line and exit code 1.
"""
import argparse
import collections
import json
import os
import shutil
import socket
import sys
import tempfile

import numpy as np

# onnx2tf's fallback downloads a calibration sample from the web; this toolchain must never touch the network.
CALIBRATION_PLACEHOLDER = "calibration_image_sample_data_20x128x128x3_float32.npy"


def _no_network(*_args, **_kwargs):
    raise OSError("network access is disabled in the edgeformer-deploy converter")


def convert(args):
    socket.socket.connect = _no_network
    socket.create_connection = _no_network
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")  # onnxsim
    calib = np.load(args.calib).astype(np.float32)  # NHWC [n, H, W, 3] in [0, 1], preprocessed like inference
    import onnx2tf
    import onnx2tf.onnx2tf as o2t

    o2t.download_test_image_data = lambda: calib
    if args.int8 and args.dense_per_tensor:
        per_tensor_dense_layers()
    if args.int8:
        recalibrate(calib, args.ranges)
    if args.keep:
        skip_other_variants(args.keep)
    if args.keep in ("fp32", "fp16"):
        skip_unused_saved_models()
    work = tempfile.mkdtemp(dir=args.out)
    try:
        np.save(os.path.join(work, CALIBRATION_PLACEHOLDER), calib)  # the only file onnx2tf looks for
        model = os.path.join(work, "model.onnx")
        shutil.copy(args.onnx, model)  # onnx2tf rewrites its input in place
        os.chdir(work)
        kwargs = {}
        if args.int8:
            zeros, ones = np.zeros((1, 1, 1, 3), np.float32), np.ones((1, 1, 1, 3), np.float32)
            kwargs = dict(output_integer_quantized_tflite=True,
                          custom_input_op_name_np_data_path=[[args.input_name, args.calib, zeros, ones]],
                          input_quant_dtype="int8", output_quant_dtype="int8")
        onnx2tf.convert(input_onnx_file_path=model, output_folder_path=os.path.join(work, "out"),
                        verbosity="warn", **kwargs)
        fp16_model = os.path.join(work, "out", "model_float16.tflite")
        if args.fp16_inference and os.path.exists(fp16_model):
            allow_fp16_inference(fp16_model)
        produced = {"fp32": "model_float32.tflite", "fp16": "model_float16.tflite"}
        if args.int8:
            produced["int8"] = "model_full_integer_quant.tflite"
        if args.keep:
            produced = {args.keep: produced[args.keep]}
        result = {}
        for precision, name in produced.items():
            source = os.path.join(work, "out", name)
            if not os.path.exists(source):
                raise RuntimeError(f"onnx2tf did not write {name}")
            target = os.path.join(args.out, f"{precision}.tflite")
            shutil.move(source, target)
            result[precision] = target
        with open(os.path.join(args.out, "converted.json"), "w") as fh:
            json.dump(result, fh)
    finally:
        os.chdir(args.out)
        shutil.rmtree(work, ignore_errors=True)


# XNNPACK runs a model in fp16 arithmetic where the CPU has it (ARMv8.2 FP16: Cortex-A55/A76, the RK3588's and
# RK3566's cores) only when the model says it may: this metadata, with fp16 accumulation too. Elsewhere (x86,
# armv7) the same artifact runs in fp32 from its fp16 weights.
REDUCED_PRECISION_KEY, FP16_INFERENCE = "reduced_precision_support", b"fp16accfp16"


def allow_fp16_inference(path):
    from tensorflow.lite.python import schema_py_generated as fb
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(path)
    buffer = fb.BufferT()
    buffer.data = np.frombuffer(FP16_INFERENCE, np.uint8)
    model.buffers.append(buffer)
    entry = fb.MetadataT()
    entry.name, entry.buffer = REDUCED_PRECISION_KEY, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != REDUCED_PRECISION_KEY.encode()] + [entry]
    flatbuffer_utils.write_model(model, path)


def per_tensor_dense_layers():
    """Every TFLite converter onnx2tf creates quantises FULLY_CONNECTED weights per tensor (convolutions
    stay per channel): tflite-runtime 2.14's armv7 build (gemmlowp, no XNNPACK) crashes in
    gemmlowp::UnpackResult on a per-channel int8 FULLY_CONNECTED with more than one row."""
    from tensorflow.lite.python import lite

    init = lite.TFLiteConverterBase.__init__

    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._experimental_disable_per_channel_quantization_for_dense_layers = True

    lite.TFLiteConverterBase.__init__ = patched


# --calibration mse: per tensor, the range among [min, max] shrunk by these factors (each end on its own side of
# zero) with the least int8 error on the calibration set; a bounded sample of each tensor keeps memory flat
SHRINK = np.linspace(0.3, 1.0, 36)
SAMPLES_PER_TENSOR = 1 << 18


def mse_range(values, lo: float, hi: float):
    """The [lo', hi'] within [lo, hi] whose asymmetric 8-bit quantisation (clipping included) of ``values``
    has the least mean squared error; [lo, hi] itself when nothing beats it."""
    values = np.asarray(values, np.float64)
    best = (_int8_error(values, lo, hi), lo, hi)
    for factor in SHRINK[:-1]:
        a, b = (lo * factor if lo < 0 else lo), (hi * factor if hi > 0 else hi)
        error = _int8_error(values, a, b)
        if error < best[0]:
            best = (error, a, b)
    return best[1], best[2]


def _int8_error(values, lo: float, hi: float) -> float:
    step = (hi - lo) / 255.0
    if step <= 0:
        return 0.0
    restored = np.clip(np.round((values - lo) / step), 0, 255) * step + lo
    return float(np.mean((restored - values) ** 2))


def recalibrate(calib, ranges: str) -> None:
    """Between calibration and quantisation (the converter's ``_mlir_quantize``), run the calibrated float
    model over the calibration images in TFLite's reference kernels, every tensor kept, and give each
    activation its range anew (graph inputs keep theirs: they are the board's pixels):

    - minmax: each tensor's full [min, max], which TFLite's calibrator (TF 2.19) does not deliver: for 51
      of EdgeFormer-S's tensors it records the range of another tensor (a LOGISTIC output at [-0.28, 1.72] —
      the SiLU product's range —, an ADD at [-6.05, 6.14] that spans [-1.85, 2.60]: the range of an ADD two
      ops on), and the others through optimised kernels whose float rounding depends on the host's SIMD
      code path (1e-7 to 1e-6 apart from the reference kernels'); the reference kernels give every tensor
      its own range, and the same on every host;
    - mse: within that, the range with the least int8 error (:func:`mse_range`): one outlier in the full
      range coarsens every other value's step.
    """
    from tensorflow.lite.python import lite

    quantize = lite._mlir_quantize
    lite._mlir_quantize = lambda calibrated, *args, **kwargs: quantize(refine_ranges(calibrated, calib, ranges),
                                                                       *args, **kwargs)


def refine_ranges(calibrated, calib, ranges: str) -> bytes:
    """A calibrated (not yet quantised) TFLite model with every activation's range measured anew
    (:func:`recalibrate`); also used by ``scripts/probe_int8_layers.py`` so its probes quantise as the export."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    graph = model.subgraphs[0]
    inputs = set(graph.inputs)
    stats = {i: t for i, t in enumerate(graph.tensors) if i not in inputs
             and t.quantization is not None and t.quantization.min is not None
             and len(t.quantization.min) == 1}
    low, high = {i: np.inf for i in stats}, {i: -np.inf for i in stats}
    samples = {i: [] for i in stats}
    per_image = max(1, SAMPLES_PER_TENSOR // len(calib))
    rng = np.random.default_rng(0)
    interpreter = _interpreter(bytes(calibrated), reference_kernels=True)
    index = interpreter.get_input_details()[0]["index"]
    for image in calib:
        interpreter.set_tensor(index, image[None])
        interpreter.invoke()
        for i in stats:
            v = interpreter.get_tensor(i).ravel()
            low[i], high[i] = min(low[i], float(v.min())), max(high[i], float(v.max()))
            if ranges == "mse":
                samples[i].append(v if v.size <= per_image else v[rng.integers(0, v.size, per_image)])
    for i, tensor in stats.items():
        lo, hi = low[i], high[i]
        if ranges == "mse" and hi > lo:
            lo, hi = mse_range(np.concatenate(samples[i]), lo, hi)
        tensor.quantization.min = np.array([lo], np.float32)
        tensor.quantization.max = np.array([hi], np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _interpreter(content: bytes, reference_kernels: bool = False):
    name, Interpreter = _interpreter_class(None)
    options = {}
    if reference_kernels:
        from importlib import import_module

        options["experimental_op_resolver_type"] = import_module(f"{name}.interpreter").OpResolverType.BUILTIN_REF
    interpreter = Interpreter(model_content=content, experimental_preserve_all_tensors=True, **options)
    interpreter.allocate_tensors()
    return interpreter


def conversion_variant(converter) -> str:
    """Which of onnx2tf's outputs a TFLite converter is set up to make."""
    import tensorflow as tf

    if not converter.optimizations:
        return "fp32"
    if tf.float16 in (converter.target_spec.supported_types or []):
        return "fp16"
    if converter.representative_dataset is None:
        return "dynamic-range"
    if converter.inference_input_type in (tf.int8, tf.uint8):
        return "int8"  # full integer, integer I/O: the artifact
    return "integer, float or int16 I/O"


def skip_other_variants(keep: str) -> None:
    """onnx2tf converts every variant it knows — float32 and float16, and with int8 also dynamic-range,
    integer with float I/O, full integer and two int16-activation ones: 7 conversions, 4 of them calibrating.
    One is used; the others return an empty model (written by onnx2tf, never read): an int8 export takes about
    a third less time, fp32 about a seventh (README, measured interleaved)."""
    from tensorflow.lite.python import lite

    for cls in (lite.TFLiteConverterV2, lite.TFLiteKerasModelConverterV2):  # what onnx2tf instantiates
        def convert(self, _original=cls.convert):
            return _original(self) if conversion_variant(self) == keep else b""

        cls.convert = convert


def skip_unused_saved_models() -> None:
    """A float conversion writes SavedModels nobody needs, each about as long as the conversion itself:
    onnx2tf's own output folder (only its int8 path reads it back), and the temporary one TF's Keras converter
    converts from (for EdgeFormer-S/H it then drops it for its frozen-graph path anyway). Going straight to the
    frozen graph gives the same operators in the same order and bit-identical outputs for every registered
    model (fp32 and fp16; byte-identical files where the frozen graph was already taken; elsewhere tensors
    are named after the ONNX graph, ``images`` instead of ``serving_default_images:0``)."""
    import tensorflow as tf
    from tensorflow.lite.python import lite

    tf.saved_model.save = lambda *args, **kwargs: None  # the public name onnx2tf calls; TF's own code is untouched
    lite.TFLiteKerasModelConverterV2._convert_as_saved_model = lambda self: None  # -> _freeze_keras_model


def _interpreter_class(preferred):
    names = [preferred] if preferred else ["ai_edge_litert", "tflite_runtime"]
    for name in names:
        try:
            if name == "ai_edge_litert":
                from ai_edge_litert.interpreter import Interpreter
            else:
                from tflite_runtime.interpreter import Interpreter
            return name, Interpreter
        except ImportError:
            continue
    raise RuntimeError(f"none of {names} is importable")


def _quant(detail):
    scale, zero_point = detail["quantization"]
    return {"scale": float(scale), "zero_point": int(zero_point)} if scale else None


def run(args):
    runtime, Interpreter = _interpreter_class(args.runtime)
    options = {}
    if args.kernels == "builtin":  # TFLite's own kernels, as a build without XNNPACK runs them
        from importlib import import_module

        resolver = import_module(f"{runtime}.interpreter").OpResolverType
        options["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_path=args.model, num_threads=args.threads, **options)
    interpreter.allocate_tensors()
    inp, outs = interpreter.get_input_details()[0], interpreter.get_output_details()
    x = np.load(args.inputs).astype(np.float32).transpose(0, 2, 3, 1)  # NCHW -> NHWC
    q_in = _quant(inp)
    results = [[] for _ in outs]
    for sample in x:
        sample = sample[None]
        if q_in:  # int8 input: quantise with the model's own scale / zero point
            info = np.iinfo(inp["dtype"])
            sample = np.clip(np.round(sample / q_in["scale"] + q_in["zero_point"]), info.min, info.max)
        interpreter.set_tensor(inp["index"], sample.astype(inp["dtype"]))
        interpreter.invoke()
        for i, out in enumerate(outs):
            y = interpreter.get_tensor(out["index"]).astype(np.float32)
            q_out = _quant(out)
            if q_out:
                y = (y - q_out["zero_point"]) * q_out["scale"]
            results[i].append(y)
    # every output, in the interpreter's order, under its tensor name
    np.savez(args.out, **{f"{i}:{out['name']}": np.concatenate(ys) for i, (out, ys) in enumerate(zip(outs, results))})
    if args.report:
        tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
        ops = [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
        depthwise = [list(map(int, tensors[op["inputs"][1]]["shape"])) for op in ops
                     if op["op_name"] == "DEPTHWISE_CONV_2D"]
        report = {
            "runtime": runtime,
            "ops": dict(sorted(collections.Counter(op["op_name"] for op in ops).items())),
            "op_sequence": [op["op_name"] for op in ops],
            "depthwise_filters": depthwise,
            "input": {"name": inp["name"], "shape": list(map(int, inp["shape"])), "dtype": np.dtype(inp["dtype"]).name,
                      "quantization": q_in},
            "outputs": [{"name": out["name"], "shape": list(map(int, out["shape"])),
                         "dtype": np.dtype(out["dtype"]).name, "quantization": _quant(out)} for out in outs],
        }
        with open(args.report, "w") as fh:
            json.dump(report, fh)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert")
    c.add_argument("--onnx", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--calib", required=True)
    c.add_argument("--input-name", default="images")
    c.add_argument("--int8", action="store_true")
    c.add_argument("--dense-per-tensor", action="store_true")
    c.add_argument("--ranges", choices=["minmax", "mse"], default="minmax")  # int8 activation ranges
    c.add_argument("--fp16-inference", action="store_true")  # mark the fp16 model for fp16 arithmetic
    c.add_argument("--keep", choices=["fp32", "fp16", "int8"])  # convert only this variant
    r = sub.add_parser("run")
    r.add_argument("--model", required=True)
    r.add_argument("--inputs", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--report")
    r.add_argument("--runtime", choices=["ai_edge_litert", "tflite_runtime"])
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--kernels", choices=["xnnpack", "builtin"], default="xnnpack")
    args = parser.parse_args()
    try:
        convert(args) if args.command == "convert" else run(args)
    except BaseException as exc:  # noqa: BLE001 — reported to the parent process as one line
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        message = str(exc).strip().splitlines()
        print(f"WORKER-ERROR: {type(exc).__name__}: {message[-1] if message else ''}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
