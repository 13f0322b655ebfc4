"""``edgeformer-bench compare``: export (or reuse) MobileViT-S and EdgeFormer-S, for the runner.

Host side: imports the export toolchain (torch) — only the CLI's ``compare`` command imports this module.
An artifact in the output folder is reused when its manifest says it is exactly what would be exported
(model, format, size, precision, weights sha256, GCC formulation, batch 1, target) and the file still
matches the manifest (size + sha256); otherwise it is exported again.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from ..runtime.artifact import SUFFIX_FORMATS, find_manifest, load_artifact, read_json_object, sha256
from ..runtime.errors import PredictError
from .runner import BenchError, artifact_precision

# per task, baseline first: ratios read EdgeFormer-S / MobileViT-S
TASK_MODELS = {"classification": ("mobilevit_s", "edgeformer_s"),
               "detection": ("ssd_mobilevit_s", "ssd_edgeformer_s"),
               "segmentation": ("deeplabv3_mobilevit_s", "deeplabv3_edgeformer_s")}
EXPORT_HINT = "pip install torch==2.13.0 'edgeformer-deploy[export]'"


def wanted_precision(int8: bool, half: bool) -> str:
    return "int8" if int8 else "fp16" if half else "fp32"


def find_reusable(output: Path, job, weights_sha: Optional[str]) -> Optional[Path]:
    """An artifact in ``output`` whose manifest matches what ``job`` (an ``export.pipeline.ExportJob``) would
    export: model, format, size, precision, weights, GCC formulation and every lowering form."""
    from ..export.formats import LOWERING_DEFAULTS

    model, fmt, imgsz, target = job.model, job.fmt, job.imgsz, job.target
    if not output.is_dir():
        return None
    for manifest_path in sorted(output.glob(f"{model}_{imgsz}*.json")):  # both manifest layouts
        manifest = read_json_object(manifest_path)
        if manifest is None or not isinstance(manifest.get("file"), str):
            continue
        path = output / manifest["file"]
        if SUFFIX_FORMATS.get(path.suffix.lower()) != fmt.split("_")[0] or find_manifest(path) != manifest_path:
            continue
        weights = manifest.get("weights") if isinstance(manifest.get("weights"), dict) else {}
        have_sha = weights.get("sha256") if not weights.get("random") else None
        section = manifest.get(fmt) if isinstance(manifest.get(fmt), dict) else {}
        pre = manifest.get("preprocess") if isinstance(manifest.get("preprocess"), dict) else {}
        # manifests from before the field fed the checkpoint what the artifact took (RGB)
        trained = pre.get("trained_channel_order", pre.get("channel_order", "RGB"))
        checks = [manifest.get("model") == model, manifest.get("format") == fmt, manifest.get("imgsz") == imgsz,
                  artifact_precision(manifest, path) == job.precision, have_sha == weights_sha,
                  manifest.get("batch", 1) == 1,
                  manifest.get("gcc", job.gcc_formulation) == job.gcc_formulation,
                  manifest.get("gcc_max_taps", job.gcc_max_taps) == job.gcc_max_taps,
                  manifest.get("gcc_conv_upto", 0) == job.gcc_conv_upto,  # older manifests: one formulation
                  target is None or target in (manifest.get("target"), section.get("target")),
                  trained == job.trained_channel_order]
        checks += [manifest.get(name, LOWERING_DEFAULTS[name]) == form
                   for name, form in job.lowering_forms.items()]
        if not all(checks):
            continue
        try:
            load_artifact(path, check_sha256=True)  # the file is still what the manifest describes
        except PredictError:
            continue
        return path
    return None


def _export_summary(artifact: Path) -> str:
    manifest = json.loads(find_manifest(artifact).read_text(encoding="utf-8"))
    parity = manifest.get("parity")
    checked = (f"max-abs {parity['max_abs']:.2e}, cosine {parity['cosine']:.7f} vs PyTorch" if parity
               else "not verified")
    return f"wrote {artifact} ({manifest.get('size_bytes', 0) / 1e6:.1f} MB); parity: {checked}"


def prepare_artifacts(*, fmt: str, imgsz: Optional[int], int8: bool, half: bool, data: Optional[Path],
                      target: Optional[str], weights: Dict[str, Optional[Path]], output: Path, reexport: bool,
                      export_only: bool, log: Callable[[str], None],
                      task: str = "classification") -> Tuple[List[Path], dict]:
    """Export or reuse the task's two models (:data:`TASK_MODELS`) for ``fmt``; ``weights`` is keyed by
    family ("edgeformer", "mobilevit"). Returns (artifact paths, baseline first; info for the JSON)."""
    from ..export.formats import FORMATS
    from ..models import model_spec

    if task not in TASK_MODELS:
        raise BenchError(f"unknown --task {task!r}; choose one of: {', '.join(TASK_MODELS)}")
    models = TASK_MODELS[task]
    imgsz = imgsz or model_spec(models[0]).imgsz
    weights = {m: weights.get(model_spec(m).family, weights.get(m)) for m in models}

    if fmt not in FORMATS:
        raise BenchError(f"unknown format {fmt!r}; this edgeformer-export knows: {', '.join(FORMATS)}")
    if importlib.util.find_spec("torch") is None:
        raise BenchError(f"compare exports with torch, which is not installed — {EXPORT_HINT}")
    from ..export.pipeline import ExportJob, run_export

    job_fields = {f.name for f in dataclasses.fields(ExportJob)}
    if target is not None and "target" not in job_fields:
        raise BenchError(f"--target: this edgeformer-export takes no target for --format {fmt}")
    if fmt.split("_")[0] == "rknn" and not export_only and importlib.util.find_spec("rknnlite") is None:
        raise BenchError(".rknn artifacts run only on a Rockchip RK3566/RK3568/RK3588 board with rknn-toolkit-lite2 "
                         "(not installed here) — add --export-only here, then run edgeformer-bench on the board")
    for model, path in weights.items():
        if path is not None and not Path(path).is_file():
            raise BenchError(f"weights file not found: {path}")
    missing = [m for m in models if weights.get(m) is None]
    if missing:
        log(f"warning: no {' / '.join('--weights-' + model_spec(m).family for m in missing)} — {', '.join(missing)} "
            f"use RANDOM weights (the latency is that of the real model; predictions are meaningless)")

    precision = wanted_precision(int8, half)
    output = Path(output)
    artifacts: List[Path] = []
    info = {"task": task, "format": fmt, "imgsz": imgsz, "precision": precision, "target": target,
            "output": str(output), "baseline": models[0], "models": {}}
    for model in models:
        extra = {"target": target} if target is not None else {}
        job = ExportJob(model=model, weights=weights.get(model), fmt=fmt, imgsz=imgsz, output=output,
                        int8=int8, half=half, data=data, **extra)
        weights_sha = sha256(Path(job.weights)) if job.weights is not None else None
        found = None if reexport else find_reusable(output, job, weights_sha)
        if found is not None:
            log(f"reusing {found} (manifest matches: {fmt}, {imgsz}x{imgsz}, {precision}, "
                f"{'weights ' + weights_sha[:12] if weights_sha else 'random weights'})")
            artifacts.append(found)
        else:
            log(f"exporting {model} ({fmt}, {imgsz}x{imgsz}, {precision}) into {output}")
            artifacts.append(run_export(job, log=log))
            log(_export_summary(artifacts[-1]))
        info["models"][model] = {"artifact": str(artifacts[-1]), "reused": found is not None,
                                 "weights_sha256": weights_sha, "random_weights": weights_sha is None}
    if export_only:
        log("exported: " + " ".join(str(a) for a in artifacts))
        log("benchmark them where they run with: edgeformer-bench " + " ".join(a.name for a in artifacts)
            + " --json result.json")
    return artifacts, info
