"""An exported model file plus the manifest JSON beside it (written by ``edgeformer-export``).

The manifest is the contract: the task, preprocessing, input layout/dtype/quantisation, every output and
the task's post-processing parameters. Nothing is guessed from the model file; the backend's own view of
the model is checked against the manifest instead. Version 1 manifests (classification only, one
``output``) still load.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

from .errors import ArtifactError
from .formats import SUFFIX_FORMATS
from .preprocess import CHANNEL_ORDERS, RESIZE_MODES

TASKS = ("classification", "detection", "segmentation")
LAYOUTS = ("NCHW", "NHWC")
DTYPES = ("float32", "float16", "int8", "uint8")

Dim = Union[int, None]  # None: dynamic (the manifest writes a name such as "batch")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: Tuple[Dim, ...]
    dtype: str
    layout: Optional[str] = None
    scale: Optional[float] = None  # quantised tensors: real = (q - zero_point) * scale
    zero_point: Optional[int] = None
    tensor: Optional[str] = None  # the runtime's own name for it when that differs (TFLite: "Identity_1")

    @property
    def quantized(self) -> bool:
        return self.scale is not None


@dataclass(frozen=True)
class Artifact:
    path: Path
    format: str
    model: str
    input: TensorSpec
    outputs: Tuple[TensorSpec, ...]
    resize: int
    crop: int
    num_classes: int
    manifest: dict
    channel_order: str = "RGB"  # what the artifact's input takes; manifests without the field: RGB
    task: str = "classification"
    resize_mode: str = "center_crop"  # "stretch": straight to crop x crop, aspect ratio not kept
    labels: Optional[str] = None  # name of the shipped label list; None: by the number of classes

    @property
    def output(self) -> TensorSpec:
        """The first output (classification: the logits)."""
        return self.outputs[0]

    @property
    def postprocess(self) -> dict:
        return self.manifest.get("postprocess") or {}

    @property
    def batch(self) -> Optional[int]:
        """Images per inference the artifact takes; None = any (dynamic batch)."""
        return self.input.shape[0]

    @property
    def name(self) -> str:
        return self.path.name


MAX_MANIFEST_BYTES = 16 << 20


def manifest_path(artifact: Path) -> Path:
    """``<artifact file name>.json``: each artifact owns its manifest (an ONNX and a TFLite export of the
    same model and size no longer share ``<stem>.json``)."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def legacy_manifest_path(artifact: Path) -> Path:
    """``<stem>.json``, the layout of exports made before manifests were named after the whole file."""
    return Path(artifact).with_suffix(".json")


def read_json_object(path: Path) -> Optional[dict]:
    """The JSON object in ``path``, or None when it is not one (unreadable, too large, not JSON, not an
    object) — for looking around; :func:`load_artifact` says what is wrong with a manifest it needs."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_MANIFEST_BYTES:
            return None
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def find_manifest(artifact: Path) -> Optional[Path]:
    """The manifest of ``artifact``: its own, else a legacy ``<stem>.json`` that describes this very file."""
    own = manifest_path(artifact)
    if own.is_file():
        return own
    legacy = legacy_manifest_path(artifact)
    if legacy.is_file():
        document = read_json_object(legacy)
        if document is None or document.get("file") in (None, Path(artifact).name):
            return legacy  # an unreadable one: load_artifact reports it
    return None


def load_artifact(path: Union[str, Path], check_sha256: bool = True) -> Artifact:
    """Read and check ``path`` + its manifest; raises :class:`ArtifactError` with one line."""
    path = Path(path)
    fmt = SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ArtifactError(f"{path}: unsupported model file type {path.suffix or '(none)'!r}; "
                            f"expected {', '.join(SUFFIX_FORMATS)}")
    if not path.is_file():
        raise ArtifactError(f"{path}: model file not found")
    mpath = find_manifest(path)
    if mpath is None:
        raise ArtifactError(f"{path}: no manifest beside it (expected {manifest_path(path).name}, "
                            f"written by edgeformer-export)")
    manifest = _read_manifest(mpath)
    try:
        artifact = _from_manifest(path, fmt, manifest, mpath)
    except KeyError as exc:
        raise ArtifactError(f"{mpath}: malformed manifest (missing field {exc})") from None
    except (TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ArtifactError(f"{mpath}: malformed manifest ({_short(exc)})") from None
    _check_matches(artifact, check_sha256)
    return artifact


def _short(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "…"


def _read_manifest(mpath: Path) -> dict:
    try:
        if mpath.stat().st_size > MAX_MANIFEST_BYTES:
            raise ArtifactError(f"{mpath}: manifest is larger than {MAX_MANIFEST_BYTES >> 20} MB — not a manifest")
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ArtifactError(f"{mpath}: cannot read the manifest ({exc.strerror or exc})") from None
    except RecursionError:
        raise ArtifactError(f"{mpath}: manifest is not valid JSON (nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{mpath}: manifest is not valid JSON ({_short(exc)})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{mpath}: manifest is not a JSON object")
    return manifest


def _spec(raw: dict) -> TensorSpec:
    quant = raw.get("quantization") or {}
    shape = tuple(d if isinstance(d, int) else None for d in raw["shape"])
    return TensorSpec(name=str(raw["name"]), shape=shape, dtype=str(raw["dtype"]), layout=raw.get("layout"),
                      scale=float(quant["scale"]) if quant else None,
                      zero_point=int(quant["zero_point"]) if quant else None,
                      tensor=str(raw["tensor"]) if raw.get("tensor") else None)


def _from_manifest(path: Path, fmt: str, manifest: dict, mpath: Path) -> Artifact:
    pre = manifest["preprocess"]
    order = pre.get("channel_order", "RGB")
    if order not in CHANNEL_ORDERS:
        raise ArtifactError(f"{mpath}: channel_order must be \"RGB\" or \"BGR\", got {str(order)[:40]!r}")
    task = manifest.get("task", "classification")  # version 1: classification only
    if task not in TASKS:
        raise ArtifactError(f"{mpath}: unknown task {str(task)[:40]!r}; this runtime knows {', '.join(TASKS)}")
    mode = pre.get("resize_mode", "center_crop")
    if mode not in RESIZE_MODES:
        raise ArtifactError(f"{mpath}: unknown resize_mode {str(mode)[:40]!r}; expected {', '.join(RESIZE_MODES)}")
    raw_outputs = manifest["outputs"] if "outputs" in manifest else [manifest["output"]]
    if not isinstance(raw_outputs, list) or not raw_outputs:
        raise ValueError("'outputs' must be a non-empty list")
    artifact = Artifact(path=path, format=str(manifest["format"]), model=str(manifest["model"]),
                        input=_spec(manifest["input"]), outputs=tuple(_spec(o) for o in raw_outputs),
                        resize=int(pre["resize"]), crop=int(pre["crop"]),
                        num_classes=int(manifest["num_classes"]), manifest=manifest, channel_order=order,
                        task=task, resize_mode=mode, labels=manifest.get("labels"))
    _check_task_outputs(artifact, mpath)
    spec = artifact.input
    if spec.layout not in LAYOUTS or len(spec.shape) != 4:
        raise ValueError(f"input must be a 4-d NCHW or NHWC tensor, got {spec.layout} {list(spec.shape)}")
    channels = spec.shape[1] if spec.layout == "NCHW" else spec.shape[3]
    size = spec.shape[2:] if spec.layout == "NCHW" else spec.shape[1:3]
    if artifact.resize_mode == "stretch" and artifact.resize != artifact.crop:
        raise ValueError(f"resize_mode stretch resizes straight to the input size: resize {artifact.resize} "
                         f"must equal crop {artifact.crop}")
    if artifact.crop < 1 or artifact.resize < artifact.crop:
        raise ValueError(f"preprocess resize {artifact.resize} / crop {artifact.crop} make no center crop")
    if channels != 3 or tuple(size) != (artifact.crop, artifact.crop):
        raise ValueError(f"input shape {list(spec.shape)} ({spec.layout}) is not 3x{artifact.crop}x{artifact.crop}")
    if spec.dtype not in DTYPES:
        raise ValueError(f"unsupported input dtype {spec.dtype!r}")
    if spec.dtype in ("int8",) and not spec.quantized:
        raise ValueError("int8 input without 'quantization' {scale, zero_point}")
    return artifact


def _check_task_outputs(artifact: Artifact, mpath: Path) -> None:
    """The outputs must be what the task's post-processing reads."""
    outputs, classes = artifact.outputs, artifact.num_classes
    if artifact.task == "classification":
        if len(outputs) != 1 or outputs[0].shape[-1:] != (classes,):
            raise ArtifactError(f"{mpath}: task classification needs one [batch, {classes}] output, the manifest "
                                f"lists {[list(o.shape) for o in outputs]}")
        return
    if artifact.task == "segmentation":
        name = artifact.postprocess.get("outputs", {}).get("logits")
        spec = next((o for o in outputs if o.name == name), None)
        grid = artifact.crop // int(artifact.postprocess.get("upsample", 16) or 16)
        nhwc = spec is not None and spec.layout == "NHWC"  # TFLite keeps 4-d outputs channels-last
        want = (grid, grid, classes) if nhwc else (classes, grid, grid)
        if len(outputs) != 1 or spec is None or tuple(spec.shape[1:]) != want:
            raise ArtifactError(f"{mpath}: task segmentation needs one output named by postprocess.outputs.logits "
                                f"shaped [batch, {', '.join(map(str, want))}], the manifest lists "
                                f"{[(o.name, list(o.shape)) for o in outputs]}")
        return
    from .detect import anchor_count

    post = artifact.postprocess
    try:
        anchors = anchor_count(post["anchors"])
        roles = post["outputs"]
        names = {o.name: o for o in outputs}
        if "levels" in roles:  # per-level head maps [B, A * (4 + C), H, W]
            maps = [names[name] for name in roles["levels"]]
            levels = post["anchors"]
            want = [(len(lv["sizes"]) * (4 + classes), *lv["grid"]) for lv in levels]
            got = [tuple(m.shape[1:]) if roles.get("layout", "NCHW") == "NCHW" else
                   (m.shape[3], m.shape[1], m.shape[2]) for m in maps]
            if len(maps) != len(outputs) or got != want:
                raise ArtifactError(f"{mpath}: task detection: head maps {got} do not fit the anchors ({want})")
            return
        conf, loc = names[roles["confidences"]], names[roles["locations"]]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ArtifactError(f"{mpath}: task detection needs postprocess.anchors and postprocess.outputs naming "
                            f"the confidences and locations outputs ({_short(exc)})") from None
    if len(outputs) != 2 or conf.shape[1:] != (anchors, classes) or loc.shape[1:] != (anchors, 4):
        raise ArtifactError(f"{mpath}: task detection needs outputs [batch, {anchors}, {classes}] and "
                            f"[batch, {anchors}, 4], the manifest lists {[list(o.shape) for o in outputs]}")


def _check_matches(artifact: Artifact, check_sha256: bool) -> None:
    """The manifest must describe this very file (guards against a manifest copied or left over)."""
    manifest, path = artifact.manifest, artifact.path
    expected_format = SUFFIX_FORMATS[path.suffix.lower()]
    if artifact.format.split("_")[0] != expected_format:
        raise ArtifactError(f"{path}: manifest/artifact mismatch: manifest is for format "
                            f"{artifact.format!r}, the file is {path.suffix}")
    if manifest.get("file") not in (None, path.name):
        raise ArtifactError(f"{path}: manifest/artifact mismatch: manifest describes {manifest['file']!r}")
    size = path.stat().st_size
    if "size_bytes" in manifest and manifest["size_bytes"] != size:
        raise ArtifactError(f"{path}: manifest/artifact mismatch: file has {size} bytes, manifest says "
                            f"{manifest['size_bytes']}")
    if check_sha256 and manifest.get("sha256") and manifest["sha256"] != sha256(path):
        raise ArtifactError(f"{path}: manifest/artifact mismatch: sha256 differs (file changed after export?)")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
