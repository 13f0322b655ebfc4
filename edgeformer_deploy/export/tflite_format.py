"""TFLite (fp32 / fp16 / int8) from the lowered ONNX, with onnx2tf in its managed environment."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ExportError
from .calibration import calibration_images, calibration_tensor
from .converter_env import require_env, run_in_env, run_worker
from .formats import BuildResult
from .onnx_format import onnx_outputs

WORKER = Path(__file__).resolve().parent / "workers" / "tflite_worker.py"
# Graph quality: a lowered EdgeFormer must be plain NHWC convolutions end to end.
FORBIDDEN_PREFIXES = ("RESIZE_", "GATHER", "FLEX", "CUSTOM")
# The parity gate runs the artifact in a board's interpreter: tflite-runtime 2.14, what an armv7 board
# (RK3288) installs, also used on aarch64. The converter environment's ai-edge-litert 2.1 runs int8 MobileViT-S
# less accurately than both board runtimes (cosine 0.987 vs 0.996 for tflite-runtime 2.14 and ai-edge-litert 2.3).
# Its builtin kernels, as the armv7 wheel (built without XNNPACK) runs them: the x86 wheel's XNNPACK picks
# micro-kernels by the host's ISA, and on an AVX-512 host its fp32 sums put DeepLabv3-EdgeFormer-S 1.3e-5 (of
# the largest logit) from the float64 model, vs 2.7e-6 on an AVX2 host (BENCHMARKS.md); the builtin kernels
# 5.1e-6 — the gate then depends on the artifact, not on the machine that exports it. (Its int8 already ran
# in the builtin kernels: XNNPACK's int8 is opt-in in 2.14.)
VERIFY_ENV, VERIFY_RUNTIME, VERIFY_KERNELS = "tflite-runtime", "tflite_runtime", "builtin"
# detection_agreement: final detections with a twin; mask_agreement: pixels of the final masks that agree
# (export/verify.py) — applied to detectors / segmenters only
LIMITS = {"fp32": {"max_abs": 1e-4, "cosine": 0.99999, "detection_agreement": 0.99, "mask_agreement": 0.999},
          "fp16": {"cosine": 0.9999, "detection_agreement": 0.99, "mask_agreement": 0.999},
          "int8": {"cosine": 0.99}}
# Full-integer int8: int8 activations, weights per channel for convolutions and per tensor for FULLY_CONNECTED —
# tflite-runtime 2.14's armv7 build crashes (SIGSEGV in gemmlowp::UnpackResult) on a per-channel int8
# FULLY_CONNECTED with more than one row, e.g. every MobileViT transformer layer (BENCHMARKS.md, #15).
INT8_RECIPE = {"activations": "int8 per tensor", "conv_weights": "int8 per channel",
               "fully_connected_weights": "int8 per tensor"}

# fp16 artifacts carry TFLite's reduced_precision_support metadata ("fp16accfp16"): XNNPACK then computes in fp16
# on cores with ARMv8.2 FP16 arithmetic and in fp32 (from the fp16 weights) everywhere else.
FP16_ARITHMETIC = "allowed: XNNPACK computes in fp16 on ARMv8.2 FP16 cores (Cortex-A55/A76), fp32 elsewhere"
# ...except with the GCC as circulant MatMuls: ai-edge-litert 2.3's XNNPACK delegate claims their BATCH_MATMULs
# (a constant operand) in fp16 mode and then fails to prepare them, so on an FP16 core such an artifact does not
# load at all (emulated Cortex-A76, BENCHMARKS.md); without the metadata it loads and computes in fp32.
FP16_ARITHMETIC_MATMUL = ("not allowed: ai-edge-litert's XNNPACK cannot run the GCC's circulant BATCH_MATMULs in "
                          "fp16 (the artifact would not load on FP16 cores); fp32 from the fp16 weights everywhere")


def fp16_arithmetic(job) -> bool:
    """Whether an fp16 artifact may carry the fp16-arithmetic metadata (see FP16_ARITHMETIC_MATMUL)."""
    return not (job.spec.has_gcc and job.gcc_formulation == "matmul")


def artifact_name(job) -> str:
    kind = job.precision
    return f"{job.stem}{'' if kind == 'fp32' else '_' + kind}.tflite"


def _pins(env_name: str) -> dict[str, str]:
    lock = (Path(__file__).resolve().parent / "envs" / f"{env_name}.txt").read_text().splitlines()
    return dict(line.split("==", 1) for line in lock if "==" in line and not line.startswith("#"))


def _converter_versions() -> dict[str, str]:
    pins = _pins("tflite")
    return {name: pins[name] for name in ("onnx2tf", "tensorflow", "ai-edge-litert") if name in pins}


def build(job, onnx_path: Path, staging: Path, log: Callable[[str], None]):
    env = require_env("tflite", log)
    kind = job.precision
    images = calibration_images(job.data)
    if kind == "int8" and job.data is None:
        log(f"warning: no --data given — calibrating int8 on the {len(images)} shipped sample photos "
            f"(fine for testing; use a few hundred of your own images)")
    work = Path(tempfile.mkdtemp(prefix="onnx2tf-", dir=staging))
    calib = work / "calibration.npy"
    np.save(calib, calibration_tensor(images, job.imgsz, job.spec.resize))
    log(f"converting to TFLite {kind} with onnx2tf")
    if kind == "fp16" and not fp16_arithmetic(job):
        log("note: the GCC is a circulant MatMul, which XNNPACK cannot run in fp16 arithmetic: this artifact computes "
            "in fp32 from its fp16 weights on every CPU (--gcc conv allows fp16 arithmetic)")
    run_worker(env, WORKER, ["convert", "--onnx", str(onnx_path), "--out", str(work), "--calib", str(calib),
                             "--keep", kind]
               + {"int8": ["--int8", "--dense-per-tensor", "--ranges", job.calibration],
                  "fp16": ["--fp16-inference"] if fp16_arithmetic(job) else []}.get(kind, []),
               work, job, "convert")
    produced = json.loads((work / "converted.json").read_text())
    artifact = staging / artifact_name(job)
    shutil.move(produced[kind], artifact)
    report = inspect(artifact, job.imgsz, env, work, job)
    bad = graph_problems(job.spec.has_gcc, report, job.gcc_formulation)
    if bad:
        raise ExportError(f"TFLite graph is not clean: {'; '.join(bad)}")
    outputs = match_outputs(report["outputs"], onnx_outputs(onnx_path))
    section = {"tflite": {"precision": kind, "target": job.target, "converter": _converter_versions(),
                          "verified_with": f"tflite-runtime {_pins(VERIFY_ENV)['tflite-runtime']}, "
                                           f"{VERIFY_KERNELS} kernels",
                          "gcc_depthwise_filters": [f for f in report["depthwise_filters"] if max(f[1:3]) > 3],
                          **({"calibration": {"images": len(images), "source": str(job.data) if job.data
                                              else "shipped sample photos", "ranges": job.calibration},
                              "quantization": INT8_RECIPE} if kind == "int8" else {}),
                          **({"fp16_arithmetic": FP16_ARITHMETIC if fp16_arithmetic(job) else FP16_ARITHMETIC_MATMUL}
                             if kind == "fp16" else {})}}
    return BuildResult(artifact, ops=report["ops"], input={**report["input"], "layout": "NHWC"},
                       # the ONNX (task) name, and the interpreter's own tensor name the board looks it up by
                       outputs=[{**spec, "name": onnx["name"], "tensor": spec["name"],
                                 **({"layout": layout} if layout else {})}
                                for (spec, _, layout), onnx in zip(outputs, onnx_outputs(onnx_path))],
                       parity_limits=LIMITS[kind], section=section)


def _nhwc(shape: list) -> list:
    return [shape[0], *shape[2:], shape[1]] if len(shape) == 4 else shape


def match_outputs(tflite: list[dict], onnx: list[dict]) -> list[tuple[dict, int, str | None]]:
    """Each ONNX output (in ONNX order) with its TFLite output, that output's interpreter index and its
    layout ("NHWC" when onnx2tf made a 4-d NCHW output channels-last, else None): by name (when onnx2tf
    keeps the ONNX names), else by shape."""
    matched: list[tuple[dict, int, str | None]] = []
    for spec in onnx:
        taken = [m for _, m, _ in matched]
        index = next((i for i, t in enumerate(tflite) if t["name"] == spec["name"]), None)
        if index is None:
            index = next((i for i, t in enumerate(tflite) if i not in taken and t["shape"] == spec["shape"]), None)
        if index is None:
            index = next((i for i, t in enumerate(tflite) if i not in taken and t["shape"] == _nhwc(spec["shape"])),
                         None)
        if index is None:
            raise ExportError(f"the TFLite model has no output like ONNX output {spec['name']} {spec['shape']} "
                              f"(it has {[(t['name'], t['shape']) for t in tflite]})")
        layout = "NHWC" if len(spec["shape"]) == 4 and tflite[index]["shape"] != spec["shape"] else None
        matched.append((tflite[index], index, layout))
    return matched


def inspect(artifact: Path, imgsz: int, env, work: Path, job) -> dict:
    """Op census and I/O details of a .tflite, read by the interpreter itself."""
    sample = work / "inspect_in.npy"
    np.save(sample, np.zeros((1, 3, imgsz, imgsz), np.float32))
    report = work / "report.json"
    run_worker(env, WORKER, ["run", "--model", str(artifact), "--inputs", str(sample), "--out",
                             str(work / "inspect_out.npy"), "--report", str(report)], work, job, "inspect")
    return json.loads(report.read_text())


def graph_problems(has_gcc: bool, report: dict, gcc: str = "conv") -> list[str]:
    problems = [op for op in report["ops"] if op.startswith(("FLEX", "CUSTOM"))]
    if not has_gcc:
        return problems  # MobileViT's unfold/fold are transposes by design
    sequence = report["op_sequence"]
    transposes = [i for i, op in enumerate(sequence) if op == "TRANSPOSE"]
    # the conv formulation is NHWC end to end, so a TRANSPOSE there is a layout failure; the circulant MatMul
    # and its grouped-conv form multiply along H and W, so NHWC needs transposes by design (their cost is
    # measured, BENCHMARKS.md)
    if gcc == "conv" and transposes and transposes != [0]:
        problems.append(f"{len(transposes)} TRANSPOSE op(s) inside the network")
    problems += [op for op in report["ops"] if op.startswith(FORBIDDEN_PREFIXES) and op not in problems]
    return problems


def tflite_runner(path: Path, job, runtime: str | None = None, env_name: str = "tflite", kernels: str = "xnnpack"):
    """Callable NCHW float32 batch -> every output (dequantised), in the ONNX output order and layout during
    an export (``job``), else in the interpreter's; run by the interpreter in a managed environment, with
    XNNPACK or TFLite's builtin kernels."""
    env = require_env(env_name)

    def run(x: np.ndarray) -> list[np.ndarray]:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            np.save(tmp / "x.npy", np.ascontiguousarray(x, dtype=np.float32))
            args = ["run", "--model", str(path), "--inputs", str(tmp / "x.npy"), "--out", str(tmp / "y.npz"),
                    "--kernels", kernels]
            run_in_env(env, WORKER, args + (["--runtime", runtime] if runtime else []), cwd=tmp,
                       log_file=tmp / "run.log")
            with np.load(tmp / "y.npz") as saved:
                found = {int(key.split(":", 1)[0]): (key.split(":", 1)[1], saved[key]) for key in saved.files}
        tflite = [{"name": name, "shape": [1, *array.shape[1:]]} for _, (name, array) in sorted(found.items())]
        lowered = path.parent / f"{job.stem}.onnx" if job is not None else None  # beside it while exporting
        if lowered is None or not lowered.exists():
            return [found[i][1] for i in sorted(found)]
        return [found[index][1].transpose(0, 3, 1, 2) if layout == "NHWC" else found[index][1]  # ONNX layout
                for _, index, layout in match_outputs(tflite, onnx_outputs(lowered))]

    return run
