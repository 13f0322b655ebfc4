"""One export: build -> lower -> ONNX -> (format conversion) -> verify -> manifest, all or nothing.

Everything is written into a staging folder inside the output folder and moved into place only once
the artifact passed its checks, so a failed export leaves no partial file behind.
"""
from __future__ import annotations

import importlib
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ExportError
from ..runtime.artifact import legacy_manifest_path, read_json_object
from ..runtime.preprocess import CHANNEL_ORDERS
from .commit import commit
from .formats import CALIBRATIONS, FORMATS, GCC_FORMS, LOWERING_DEFAULTS, BuildResult

MIN_IMGSZ = 64  # the last stage must still be at least 2x2 for the official GCC/MobileViT blocks
# Largest input size accepted: --imgsz 4096 was past 8 GB of memory after 150 s; EdgeFormer-S at 1024 (stage-3
# GCC kernels of 128 taps) exports and verifies to ONNX in 90 s at 3.9 GB peak RSS (measured 2026-12-01).
MAX_IMGSZ = 1024
# Shape arithmetic and dynamic ops a lowered EdgeFormer graph must not contain.
FORBIDDEN_EDGEFORMER_OPS = ("Resize", "Shape", "Gather", "Expand", "Where", "ConstantOfShape",
                            "BatchNormalization")
ONNX_MAX_ABS, ONNX_MIN_COSINE = 1e-4, 0.99999
ONNX_MIN_DETECTIONS = 0.99  # detection: final detections with a twin (verify.py), both ways
ONNX_MIN_MASKS = 0.999  # segmentation: pixels of the final masks that agree
SEGMENTATION_MAX_REL = 1e-5  # segmentation fp32 gates: max-abs / max |reference logit| (replaces max-abs)
INPUT_NAME = "images"
# Every artifact takes RGB: a BGR-trained checkpoint's channel swap is folded into its stem convolution at
# lowering (exact, free at run time), so cameras, decoders, RKNN frames and every runtime share one order.
ARTIFACT_CHANNEL_ORDER = "RGB"


@dataclass
class ExportJob:
    model: str = "edgeformer_s"
    weights: Path | None = None
    fmt: str = "onnx"
    imgsz: int | None = None  # None: the model's official evaluation size (classification 256, detection 320)
    output: Path = Path("exports")
    batch: int = 1
    dynamic_batch: bool = False
    opset: int = 17
    exporter: str = "legacy"
    gcc: str | None = None  # GCC formulation; None = the format's measured default
    gcc_taps: int | None = None  # max taps per depthwise GCC conv; None = the format's default, 0 = no split
    verify: bool = True
    half: bool = False
    int8: bool = False
    data: Path | None = None  # int8 calibration images
    calibration: str = "minmax"  # int8 activation ranges: minmax (the converter's) | mse (least int8 error)
    min_cosine: float | None = None  # overrides the format's cosine gate
    verbose: bool = False
    target: str | None = None  # RKNN: the Rockchip chip (default rk3588); TFLite: the CPU class (armv7 | aarch64)
    analyze: bool = False  # RKNN: per-layer accuracy_analysis saved beside the artifact
    channel_order: str | None = None  # what the checkpoint was trained on; None = the model's (BGR: official)

    @property
    def cpu_target(self):
        """TFLite: the CPU class whose measured GCC choice applies (``--target``), else None."""
        from .formats import tflite_target

        if self.fmt != "tflite" or not self.target:
            return None  # no --target: the format's portable default (conv, 16 taps), verified for every task
        return tflite_target(self.target)

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp16" if self.half else "fp32"

    @property
    def gcc_formulation(self) -> str:
        target = self.cpu_target
        return self.gcc or (target.choice(self.precision)[0] if target else FORMATS[self.fmt].gcc_default)

    @property
    def gcc_max_taps(self) -> int | None:
        target = self.cpu_target
        if self.gcc_formulation != "conv":
            return None  # only the depthwise form has taps; the others are matrix products
        if self.gcc_taps is not None:
            return self.gcc_taps or None
        if target and (self.gcc is None or self.gcc == target.choice(self.precision)[0]):
            return target.choice(self.precision)[1]
        return FORMATS[self.fmt].gcc_taps_default

    @property
    def gcc_conv_upto(self) -> int:
        """The target's per-size exception (small maps as conv), only under the target's own formulation."""
        target = self.cpu_target
        if not target or (self.gcc is not None and self.gcc != target.choice(self.precision)[0]):
            return 0
        return target.conv_upto.get(self.precision, 0)

    @property
    def lowering_forms(self) -> dict:
        """The lowering's per-target op forms (``lower_model`` keyword -> form; the manifest records each)."""
        forms = dict(LOWERING_DEFAULTS)
        if self.int8:
            forms["layer_norm"] = FORMATS[self.fmt].int8_layer_norm
        target = self.cpu_target
        if target:
            for name, table in (("silu", target.silu), ("pair_conv", target.pair_conv),
                                ("strided_pad", target.strided_pad), ("hardswish", target.hardswish)):
                forms[name] = table.get(self.precision, forms[name])
        return forms

    @property
    def spec(self):
        from ..models import model_spec

        return model_spec(self.model)

    @property
    def trained_channel_order(self) -> str:
        return (self.channel_order or self.spec.channel_order).upper()

    @property
    def stem(self) -> str:
        return f"{self.model}_{self.imgsz}" + (f"_{self.target}" if self.target else "")


def validate(job: ExportJob) -> None:
    """Every check that needs no model, so bad input fails fast with one line."""
    from ..models import list_models

    if job.model not in list_models():
        raise ExportError(f"unknown model {job.model!r}; choose one of: {', '.join(list_models())}")
    if job.fmt not in FORMATS:
        raise ExportError(f"unknown format {job.fmt!r}; choose one of: {', '.join(FORMATS)}")
    if job.imgsz is None:
        job.imgsz = job.spec.imgsz
    if job.channel_order is not None and str(job.channel_order).upper() not in CHANNEL_ORDERS:
        raise ExportError(f"--channel-order must be rgb or bgr (got {job.channel_order!r})")
    if job.gcc is not None and job.gcc not in GCC_FORMS:
        raise ExportError(f"unknown GCC formulation {job.gcc!r}; choose one of: {', '.join(GCC_FORMS)}")
    if job.imgsz < MIN_IMGSZ or job.imgsz > MAX_IMGSZ or job.imgsz % 32:
        raise ExportError(f"--imgsz must be a multiple of 32 from {MIN_IMGSZ} to {MAX_IMGSZ} (got {job.imgsz})")
    if job.min_cosine is not None and not (math.isfinite(job.min_cosine) and 0.0 <= job.min_cosine <= 1.0):
        raise ExportError(f"--min-cosine must be a number from 0 to 1 (got {job.min_cosine})")
    if job.data is not None and not job.int8:
        raise ExportError("--data is the int8 calibration set: add --int8 (or drop --data)")
    if job.calibration not in CALIBRATIONS:
        raise ExportError(f"unknown --calibration {job.calibration!r}; choose {' or '.join(CALIBRATIONS)}")
    if job.calibration != "minmax" and not job.int8:
        raise ExportError(f"--calibration {job.calibration} sets int8 activation ranges: add --int8 (or drop it)")
    if job.exporter == "dynamo" and job.opset < 18:
        raise ExportError(f"the dynamo exporter writes opset 18 or newer (got --opset {job.opset})")
    if job.batch < 1:
        raise ExportError(f"--batch must be at least 1 (got {job.batch})")
    if job.gcc_taps is not None and job.gcc_taps < 0:
        raise ExportError(f"--gcc-taps must be 0 (no split) or positive (got {job.gcc_taps})")
    if FORMATS[job.fmt].static_batch_only and (job.batch != 1 or job.dynamic_batch):
        raise ExportError(f"--format {job.fmt} exports batch 1 only")
    if job.half and job.int8:
        raise ExportError("--half and --int8 exclude each other")
    precisions = FORMATS[job.fmt].info.precisions
    for flag, precision in (("--half", "fp16"), ("--int8", "int8")):
        if getattr(job, "half" if precision == "fp16" else "int8") and precision not in precisions:
            takes = [name for name, f in FORMATS.items() if precision in f.info.precisions]
            raise ExportError(f"{flag} applies to --format {' or '.join(takes)}, not {job.fmt}")
    if job.fmt == "rknn":
        from .rknn_format import DEFAULT_TARGET, check_target

        job.target = check_target(job.target or DEFAULT_TARGET)
        if job.opset > 19:
            raise ExportError(f"rknn-toolkit2 reads ONNX opset 19 at most (got --opset {job.opset})")
    elif job.fmt == "tflite" and job.target is not None:
        job.target = job.cpu_target.name  # refuses an unknown one; a chip name becomes its CPU class
    elif job.target is not None:
        raise ExportError(f"--target applies to --format rknn or tflite, not {job.fmt}")
    if job.analyze and job.fmt != "rknn":
        raise ExportError("--analyze applies to --format rknn")
    if job.data is not None:
        from .calibration import calibration_images

        calibration_images(job.data)  # refuse an empty or unreadable folder before any work
    if job.weights is not None and not Path(job.weights).is_file():
        raise ExportError(f"weights file not found: {job.weights}")
    needed = FORMATS[job.fmt].requires + (("onnxscript",) if job.exporter == "dynamo" else ())
    missing = [name for name in needed if not _importable(name)]
    if missing:
        raise ExportError(f"missing {', '.join(missing)} — install the export extra: "
                          f"pip install torch==2.13.0 'edgeformer-deploy[export]'")
    _check_output_dir(Path(job.output))
    for name in artifact_names(job):
        if (Path(job.output) / name).is_dir():
            raise ExportError(f"{Path(job.output) / name} is a folder: it would be replaced by the export — "
                              f"move it or choose another --output")


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _check_output_dir(output: Path) -> None:
    from ..runtime.folders import folder_problem

    problem = folder_problem(output, "output folder")
    if problem:
        raise ExportError(problem)


def _missing_parents(output: Path) -> list[Path]:
    """The folders ``output.mkdir(parents=True)`` would create, deepest first."""
    missing = []
    for folder in (output, *output.parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first; stops at the first that holds something
        try:
            folder.rmdir()
        except OSError:
            return


def artifact_names(job: ExportJob) -> tuple[str, str]:
    """(artifact file name, manifest file name) that ``job`` will write."""
    from ..runtime.artifact import manifest_path

    if job.fmt == "rknn":
        from .rknn_format import artifact_name
    elif job.fmt == "tflite":
        from .tflite_format import artifact_name
    else:
        def artifact_name(job: ExportJob) -> str:
            return f"{job.stem}.onnx"
    name = artifact_name(job)
    return name, manifest_path(Path(name)).name


def forbidden_ops(model: str, ops: dict[str, int], onnx_path: Path) -> list[str]:
    import onnx

    from ..models import model_spec

    bad = [op for op in ("BatchNormalization",) if op in ops]
    if model_spec(model).has_gcc:
        bad = [op for op in FORBIDDEN_EDGEFORMER_OPS if op in ops]
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
        if any(n.op_type == "Pad" and any(a.name == "mode" and a.s == b"wrap" for a in n.attribute)
               for n in graph.node):
            bad.append("Pad(wrap)")
    return bad


def run_export(job: ExportJob, log: Callable[[str], None] = print) -> Path:
    """Run ``job``; returns the artifact path. Raises :class:`ExportError` / ``CheckpointError``."""
    import torch

    from ..models import count_macs, count_params, create_model
    from .lowering import lower_model
    from .manifest import build_manifest, package_versions, sha256, write_manifest
    from .onnx_format import OUTPUT_NAMES, export_onnx, onnx_outputs, op_census
    from .verify import check_parity

    output = Path(job.output)
    created = _missing_parents(output)
    try:
        validate(job)
    except BaseException:
        _remove_empty(created)  # validate() creates the output folder before its last checks
        raise
    fmt, spec = FORMATS[job.fmt], job.spec
    started = time.perf_counter()
    try:  # absolute: converter workers run in their own working directories
        staging = Path(tempfile.mkdtemp(prefix=".edgeformer-export-", dir=output)).resolve()
    except OSError as exc:
        _remove_empty(created)
        raise ExportError(f"cannot write into the output folder {output}: {exc.strerror or exc}") from None
    finished = False
    try:
        torch.manual_seed(0)  # reproducible random weights when none are given
        model = create_model(job.model, weights=job.weights).eval()
        taps = f", at most {job.gcc_max_taps} taps" if job.gcc_max_taps and job.gcc_formulation == "conv" else ""
        small = f"; maps up to {job.gcc_conv_upto}x{job.gcc_conv_upto} as conv" if job.gcc_conv_upto else ""
        gcc = f" (GCC as {job.gcc_formulation}{taps}{small})" if spec.has_gcc else ""
        log(f"lowering {job.model} for {job.imgsz}x{job.imgsz}{gcc}")
        swap = job.trained_channel_order != ARTIFACT_CHANNEL_ORDER
        if swap:
            log(f"folding the {job.trained_channel_order} -> {ARTIFACT_CHANNEL_ORDER} channel swap into the stem "
                f"convolution (the artifact takes {ARTIFACT_CHANNEL_ORDER})")
        forms = job.lowering_forms
        lowered = lower_model(model, job.imgsz, job.gcc_formulation, job.gcc_max_taps, swap_input_channels=swap,
                              conv_upto=job.gcc_conv_upto, **forms)
        onnx_path = staging / f"{job.stem}.onnx"
        names = graph_names = OUTPUT_NAMES[spec.task]
        levels = spec.task == "detection" and fmt.detection_outputs == "levels"
        reference = model
        if levels:
            from ..models.ssd import HeadMapsOutput

            lowered = HeadMapsOutput(lowered)
            graph_names = tuple(f"head_{k}" for k in range(len(model.ssd_heads)))
        if spec.task == "segmentation":  # the graph ends before the x16 upsampling (runtime/segment.py)
            from ..models.deeplab import LogitsOS16Output

            lowered, reference = LogitsOS16Output(lowered), LogitsOS16Output(model)
        log(f"exporting ONNX (opset {job.opset}, {job.exporter} exporter)")
        export_onnx(lowered, onnx_path, job.imgsz, job.batch, job.dynamic_batch, job.opset, job.exporter,
                    graph_names)
        ops = op_census(onnx_path)
        bad = forbidden_ops(job.model, ops, onnx_path)
        if bad:
            raise ExportError(f"lowered graph still contains {', '.join(bad)}")
        post = task_postprocess(model, job, graph_names if levels else None)
        built = (BuildResult(onnx_path, parity_limits={"max_abs": ONNX_MAX_ABS, "cosine": ONNX_MIN_COSINE,
                                                       "detection_agreement": ONNX_MIN_DETECTIONS,
                                                       "mask_agreement": ONNX_MIN_MASKS})
                 if fmt.build is None else fmt.build(job, onnx_path, staging, log))
        artifact = built.artifact
        limits = dict(built.parity_limits)
        if spec.task == "segmentation" and "max_abs" in limits:
            # logits of 1e2-1e3 on photos: an absolute 1e-4 is below float32 resolution there
            limits["max_rel"] = SEGMENTATION_MAX_REL
            del limits["max_abs"]
        if job.min_cosine is not None:
            limits["cosine"] = job.min_cosine
        parity = None
        if job.verify:
            log("verifying against the un-lowered PyTorch model")
            run = fmt.runner(artifact, job)
            if levels:  # compare what the board computes: the head maps laid out as the official rows
                run = _assembled(run, spec.num_classes)
            result = check_parity(reference, run, job.imgsz, ARTIFACT_CHANNEL_ORDER,
                                  job.trained_channel_order, spec.task, spec.resize, names,
                                  _anchors(post))
            parity = result.as_dict()
            parity["limits"] = limits
            failure = parity_failure(result.max_abs, result.cosine, limits, result.detections, result.masks,
                                     result.max_rel)
            if failure:
                raise ExportError(f"verification failed: {failure} — no artifact written")
        batch = "batch" if job.dynamic_batch else job.batch
        layout = fmt.input_layout
        shape = [batch, 3, job.imgsz, job.imgsz] if layout == "NCHW" else [batch, job.imgsz, job.imgsz, 3]
        input_spec = built.input or {"name": INPUT_NAME, "shape": shape, "layout": layout, "dtype": "float32"}
        outputs = built.outputs or onnx_outputs(onnx_path)
        weights = ({"file": Path(job.weights).name, "sha256": sha256(Path(job.weights))} if job.weights
                   else {"file": None, "random": True})
        manifest = build_manifest(
            model=job.model, variant=job.model.rsplit("_", 1)[1], family=spec.family, task=spec.task, fmt=job.fmt,
            artifact=artifact,
            input_spec=input_spec, outputs=outputs, imgsz=job.imgsz, resize_mode=spec.resize,
            channel_order=ARTIFACT_CHANNEL_ORDER, trained_channel_order=job.trained_channel_order,
            num_classes=spec.num_classes, labels=spec.labels, postprocess=post,
            params=count_params(model), macs=count_macs(model, job.imgsz),
            ops=built.ops or ops, parity=parity, weights=weights,
            versions=package_versions("torch", "onnx", "onnxruntime", "onnxsim", *built.versions),
            extra={"opset": job.opset, "exporter": job.exporter, "batch": batch, "gcc": job.gcc_formulation,
                   "gcc_max_taps": job.gcc_max_taps, **forms, "gcc_conv_upto": job.gcc_conv_upto,
                   **({"cpu_target": {"name": job.cpu_target.name, "runtime": job.cpu_target.runtime,
                                      "gcc_measured": job.cpu_target.measured[job.precision]}}
                      if job.cpu_target else {}), "export_seconds": round(time.perf_counter() - started, 2),
                   **({"output": outputs[0]} if spec.task == "classification" else {}),  # what v1 readers read
                   **built.section})
        manifest_file = staging / manifest_name(artifact)
        write_manifest(manifest, manifest_file)
        final = output / artifact.name
        # one unit: the artifact, its manifest and the reports that belong beside it (RKNN analysis, …)
        moves = [(artifact, final), (manifest_file, output / manifest_file.name)]
        moves += [(path, output / path.name) for path in built.files]
        commit(moves, backup_dir=staging)
        finished = True
        legacy = legacy_manifest_path(final)  # an old-layout "<stem>.json" of this very file is now stale
        if (read_json_object(legacy) or {}).get("file") == final.name:
            legacy.unlink()
        return final
    except OSError as exc:  # a full disk, a vanished folder: one line naming the path
        raise ExportError(f"cannot write {exc.filename or output}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not finished:
            _remove_empty(created)  # leave the file system as we found it


def _assembled(run, num_classes: int):
    from ..runtime.detect import assemble_levels

    return lambda x: list(assemble_levels(run(x), num_classes))


def task_postprocess(model, job: ExportJob, level_names: tuple | None = None) -> dict | None:
    """The task's post-processing parameters for the manifest. Detection: the official ``predict()``
    settings and the anchors for this input size, per level (grid + prior sizes) — the board expands them
    (runtime.detect.expand_anchors), checked here to give the model's own priors bit for bit.
    Segmentation: the upsampling the graph leaves to the board."""
    if job.spec.task == "segmentation":
        from ..models.deeplab import OUTPUT_STRIDE

        return {"type": "deeplabv3", "outputs": {"logits": "logits_os16"}, "upsample": OUTPUT_STRIDE,
                "mask": "bilinear x16 (align_corners false), nearest to the original size, argmax — evaluated "
                        "at the original size only (runtime.segment.official_mask)"}
    if job.spec.task != "detection":
        return None
    import numpy as np

    from ..models.ssd import CENTER_VARIANCE, SIZE_VARIANCE
    from ..runtime.detect import DetectionParams, expand_anchors

    levels = model.anchor_levels(job.imgsz)
    if not np.array_equal(expand_anchors(levels), model.anchors(job.imgsz).numpy()):
        raise ExportError("the board's anchor expansion differs from the model's priors")
    defaults = DetectionParams()
    outputs = ({"levels": list(level_names), "layout": "NCHW"} if level_names
               else {"confidences": "confidences", "locations": "locations"})
    return {"type": "ssd", "outputs": outputs,
            "background_class": 0, "score_threshold": defaults.score_threshold,
            "iou_threshold": defaults.iou_threshold, "top_k": defaults.top_k, "max_det": None,
            "center_variance": CENTER_VARIANCE, "size_variance": SIZE_VARIANCE,
            "box_format": "xyxy, normalised to the network input", "anchors": levels}


def _anchors(post: dict | None):
    if not post or "anchors" not in post:
        return None
    from ..runtime.detect import expand_anchors

    return expand_anchors(post["anchors"])


def parity_failure(max_abs: float, cosine: float, limits: dict, detections: dict | None = None,
                   masks: dict | None = None, max_rel: float | None = None) -> str | None:
    """Why the gate fails (None: it passes). A NaN or infinity fails every gate: comparisons with NaN are
    false, so "not above the limit" is not "within the limit"."""
    numbers = f"max-abs {max_abs:.3g} (limit {limits.get('max_abs', 'none')}), cosine {cosine:.7f} " \
              f"(limit {limits['cosine']})"
    if not (math.isfinite(max_abs) and math.isfinite(cosine)):
        return f"non-finite outputs: {numbers}"
    if max_abs > limits.get("max_abs", math.inf) or not cosine >= limits["cosine"]:
        return numbers
    if max_rel is not None and not max_rel <= limits.get("max_rel", math.inf):
        return f"max-abs relative to the largest output {max_rel:.3g} (limit {limits['max_rel']})"
    floor = limits.get("detection_agreement")
    if detections is not None and floor is not None and not detections["agreement"] >= floor:
        return f"detections agree {detections['agreement']:.4f} (limit {floor}; {detections['rule']})"
    floor = limits.get("mask_agreement")
    if masks is not None and floor is not None and not masks["pixel_agreement"] >= floor:
        return f"masks agree on {masks['pixel_agreement']:.5f} of the pixels (limit {floor})"
    return None


def manifest_name(artifact: Path) -> str:
    from ..runtime.artifact import manifest_path

    return manifest_path(artifact).name

