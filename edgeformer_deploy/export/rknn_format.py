"""RKNN (Rockchip NPU) from the lowered ONNX, with rknn-toolkit2 in its managed environment.

The board feeds uint8 NHWC frames; the NPU does the ml-cvnets normalisation (x / 255). Verification runs
the toolkit's x86 simulator on the freshly built model (it cannot run a model loaded back from disk).
"""
from __future__ import annotations

import collections
import json
import re
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ExportError
from .calibration import calibration_images, calibration_tensor
from .converter_env import require_env, run_worker
from .formats import BuildResult
from .onnx_format import onnx_outputs

WORKER = Path(__file__).resolve().parent / "workers" / "rknn_worker.py"
DEFAULT_TARGET = "rk3588"
TARGETS = ("rk3588", "rk3576", "rk3566", "rk3568", "rk3562")  # NPUs rknn-toolkit2 2.5.0 builds for
# Chips people run these models on that rknn-toolkit2 cannot target: CPU-only, or the 1.x toolkit's NPUs.
CPU_ONLY = ("rk3288", "rk3399", "rk3328", "rk3368", "rk3326", "rk3308", "px30")
TOOLKIT1_NPU = ("rk3399pro", "rk1808", "rv1109", "rv1126")
# detectors / segmenters only: SSD-EdgeFormer-S fp16 on rk3588 measured detection agreement 0.9959,
# DeepLabv3-EdgeFormer-S fp16 mask agreement 0.99967
LIMITS = {"fp16": {"cosine": 0.999, "detection_agreement": 0.99, "mask_agreement": 0.999}, "int8": {"cosine": 0.99}}
SIMULATOR_OUTPUTS = ".simulator.npz"
# --calibration: the toolkit's own min/max-based "normal", or its least-error "mmse" (about 3x the build time;
# DeepLabv3-EdgeFormer-S int8 photo cosines 0.71-0.99 -> 0.87-0.997, BENCHMARKS.md)
QUANTIZED_ALGORITHM = {"minmax": "normal", "mse": "mmse"}
# "D RKNN: [12:00:00.000] 5   Conv   FLOAT16  NPU   (1,32,47,32),...   ...   Conv:pad_slice_conv"
LAYER_ROW = re.compile(r"^D RKNN: \[[\d:.]+\] (\d+)\s+(\S+)\s+(\S+)\s+(NPU|CPU)\s+.*\s(\S+:\S+)\s*$")
IO_OPERATORS = ("InputOperator", "OutputOperator")


def check_target(target: str) -> str:
    """The normalised target, or a one-line refusal that says where the chip's models come from."""
    name = target.lower()
    if name in TARGETS:
        return name
    if name in CPU_ONLY:
        raise ExportError(f"{name} has no NPU that RKNN supports (CPU only) — export with --format tflite "
                          f"for its ARM CPU instead")
    if name in TOOLKIT1_NPU:
        raise ExportError(f"{name}'s NPU is only supported by the old rknn-toolkit 1.x, not rknn-toolkit2 — "
                          f"use --format tflite for its ARM CPU instead")
    raise ExportError(f"unknown --target {target!r}; choose one of: {', '.join(TARGETS)}")


def precision(job) -> str:
    return "int8" if job.int8 else "fp16"


def artifact_name(job) -> str:
    return f"{job.stem}{'_int8' if job.int8 else ''}.rknn"


def build(job, onnx_path: Path, staging: Path, log: Callable[[str], None]):
    env = require_env("rknn", log)
    kind = precision(job)
    work = Path(tempfile.mkdtemp(prefix="rknn-", dir=staging))
    artifact = staging / artifact_name(job)
    args = ["--onnx", str(onnx_path), "--out", str(artifact), "--target", job.target, "--report",
            str(work / "report.json")]
    calibration = None
    if job.int8:
        images = calibration_images(job.data)
        if job.data is None:
            log(f"warning: no --data given — calibrating int8 on the {len(images)} shipped sample photos "
                f"(fine for testing; use a few hundred of your own images)")
        args += ["--int8", "--dataset", str(_write_dataset(images, job.imgsz, work, job.spec.resize)),
                 "--quantized-algorithm", QUANTIZED_ALGORITHM[job.calibration]]
        calibration = {"images": len(images), "source": str(job.data) if job.data else "shipped sample photos",
                       "ranges": job.calibration, "quantized_algorithm": QUANTIZED_ALGORITHM[job.calibration]}
    if job.verify:
        from .verify import verification_inputs

        pixels = _nhwc_pixels(verification_inputs(job.imgsz, mode=job.spec.resize)[0])
        np.save(work / "inputs.npy", pixels)
        args += ["--inputs", str(work / "inputs.npy"), "--outputs", str(work / "outputs.npz")]
    analysis_dir = staging / f"{artifact.stem}.analysis"
    if job.analyze:
        args += ["--analyze", str(_analysis_input(job.imgsz, work, job.spec.resize)), "--analyze-dir",
                 str(analysis_dir)]
    log(f"converting to RKNN {kind} for {job.target} with rknn-toolkit2"
        + (" (+ simulator verification)" if job.verify else ""))
    log_file = run_worker(env, WORKER, args, work, job, "build")
    report = json.loads((work / "report.json").read_text())
    build_log = log_file.read_text(errors="replace")
    layers = parse_layer_table(build_log)
    if not layers:
        raise ExportError("rknn-toolkit2 printed no layer table — cannot check where the layers run")
    io = io_layers(layers)
    cpu = [f"{op} {name}" for i, (op, target, name) in enumerate(layers) if target == "CPU" and i not in io]
    if cpu and job.spec.has_gcc:
        raise ExportError(f"{len(cpu)} layer(s) fall back to the CPU: {', '.join(cpu[:5])}")
    files = []
    if job.verify:
        # Kept beside the artifact: what the simulator computed on the verification frames (the shipped
        # photos through the board's preprocessing, then noise) — the reference a board's outputs can be
        # checked against, since the simulator cannot run a saved .rknn.
        simulated = artifact.with_name(artifact.name + SIMULATOR_OUTPUTS)
        with np.load(work / "outputs.npz") as produced:
            outputs = [produced[f"arr_{i}"] for i in range(len(produced.files))]
        np.savez(simulated, inputs=pixels, **{f"output_{i}": out for i, out in enumerate(outputs)})
        files.append(simulated)
    rknn = {"target": job.target, "precision": kind, "toolkit": report["toolkit"],
            "build_seconds": report["build_seconds"],
            "layers": {"total": len(layers), "npu": sum(t == "NPU" for _, t, _ in layers),
                       "io_on_cpu": [f"{layers[i][0]} {layers[i][2]}" for i in sorted(io) if layers[i][1] == "CPU"],
                       "cpu_fallback": len(cpu), "cpu_fallback_layers": cpu},
            # rknn-toolkit2 cuts depthwise kernels longer than 16 taps itself (it logs "seperate_large_kernel_conv")
            "toolkit_split_large_kernels": build_log.count("seperate_large_kernel_conv"),
            "normalization": {"mean": [0, 0, 0], "std": [255, 255, 255], "on": "npu"}}
    if calibration:
        rknn["calibration"] = calibration
    if job.analyze:
        rknn["analysis"] = {"dir": analysis_dir.name, **summarize_analysis(analysis_dir / "error_analysis.txt")}
        files.append(analysis_dir)
    return BuildResult(artifact, ops=dict(collections.Counter(op for op, _, _ in layers if op not in IO_OPERATORS)),
                       input={"name": "images", "shape": [1, job.imgsz, job.imgsz, 3], "layout": "NHWC",
                              "dtype": "uint8"},
                       outputs=onnx_outputs(onnx_path), parity_limits=LIMITS[kind], files=files,
                       section={"rknn": rknn})


def _nhwc_pixels(nchw: np.ndarray) -> np.ndarray:
    """[0, 1] NCHW -> float32 NHWC pixels in [0, 255] (the simulator applies the same /255 as to uint8)."""
    return np.ascontiguousarray(nchw.transpose(0, 2, 3, 1) * np.float32(255), dtype=np.float32)


def _write_dataset(images: list[Path], imgsz: int, work: Path, mode: str = "center_crop") -> Path:
    """The toolkit's dataset file: one path per line. The entries are our own center crops saved as uint8
    .npy (NCHW, the ONNX layout the toolkit expects of .npy), because the toolkit would plainly resize a
    JPEG, not short-side-resize + crop like inference."""
    pixels = np.round(calibration_tensor(images, imgsz, mode).transpose(0, 3, 1, 2) * 255).astype(np.uint8)
    folder = work / "calibration"
    folder.mkdir()
    lines = []
    for i, crop in enumerate(pixels):
        np.save(folder / f"{i:05d}.npy", crop[None])
        lines.append(str(folder / f"{i:05d}.npy"))
    dataset = work / "dataset.txt"
    dataset.write_text("\n".join(lines) + "\n")
    return dataset


def _analysis_input(imgsz: int, work: Path, mode: str = "center_crop") -> Path:
    from ..runtime.preprocess import preprocess, sample_images

    path = work / "analysis_input.npy"
    pixels = preprocess(sample_images()[0], imgsz, mode=mode)
    np.save(path, np.round(pixels * 255).astype(np.uint8))  # NCHW, as .npy must be
    return path


def parse_layer_table(log: str) -> list[tuple[str, str, str]]:
    """(op type, NPU|CPU, full name) per row of the toolkit's "Network Layer Information Table"."""
    return [(m.group(2), m.group(4), m.group(5)) for m in map(LAYER_ROW.match, log.splitlines()) if m]


def io_layers(layers: list[tuple[str, str, str]]) -> set[int]:
    """Rows that are I/O, not compute: the Input/OutputOperators and a Reshape straight before the output
    (the toolkit turns the classifier into a 1x1 conv and reshapes its [1, C, 1, 1] result on the CPU in
    int8 builds: 1000 values, output formatting)."""
    io = {i for i, (op, _, _) in enumerate(layers) if op in IO_OPERATORS}
    for i, (op, _, _) in enumerate(layers[:-1]):
        if op == "Reshape" and layers[i + 1][0] == "OutputOperator":
            io.add(i)
    return io


def summarize_analysis(report: Path) -> dict:
    """The worst layers of ``accuracy_analysis``'s error_analysis.txt (simulator vs fp32 golden)."""
    rows = []
    for line in report.read_text(errors="replace").splitlines():
        m = re.match(r"^\[(\S+)\]\s+(\S+)\s+([\d.]+) \| [\d.]+\s+([\d.]+) \|", line)
        if m:
            rows.append((f"{m.group(1)} {m.group(2)}", float(m.group(3)), float(m.group(4))))
    if not rows:
        raise ExportError(f"accuracy_analysis wrote no per-layer rows to {report.name}")
    worst_single = min(rows, key=lambda r: r[2])
    return {"layers": len(rows), "output_cosine": rows[-1][1], "min_entire_cosine": min(r[1] for r in rows),
            "worst_single_layer": {"layer": worst_single[0], "cosine": worst_single[2]}}


def simulator_outputs(saved) -> list[np.ndarray]:
    """Every output of a ``.simulator.npz`` in order (files of older exports hold one "outputs" array)."""
    if "outputs" in saved.files:
        return [saved["outputs"]]
    return [saved[f"output_{i}"] for i in range(sum(k.startswith("output_") for k in saved.files))]


def simulator_runner(path: Path, job) -> Callable[[np.ndarray], np.ndarray]:
    """The simulator's outputs for the verification inputs it was given while building ``path``."""
    saved = np.load(path.with_name(path.name + SIMULATOR_OUTPUTS))

    def run(x: np.ndarray) -> list[np.ndarray]:
        if not np.array_equal(_nhwc_pixels(x), saved["inputs"]):
            raise ExportError("the RKNN simulator only ran the build's verification inputs")
        return simulator_outputs(saved)

    return run
