"""``edgeformer-predict IMAGE_OR_DIR… --model ARTIFACT``: top-k classes (classifiers), boxes (detectors) or
the classes of the mask (segmenters) per image, as tables or JSON lines; ``--save DIR`` draws the boxes /
writes the mask and an overlay.

A bad image gets one error line and the others are still processed; the exit code is 1 when any image
failed, 2 when the model cannot be used. Never a traceback.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import NamedTuple, Optional

import click

from ..errors import EdgeformerError
from .backends import BACKEND_CHOICES
from .errors import ImageError, PredictError
from .rknn_backend import NPU_CORE_MASKS

EXIT_BAD_IMAGE, EXIT_BAD_MODEL = 1, 2
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a tool ended by SIGPIPE
TABLE_ROWS = 20  # detections shown per image in the table (highest scores); --json has them all


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's final flush of the dead pipe cannot raise again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def image_suffixes() -> set[str]:
    from PIL import Image

    Image.init()
    return {suffix.lower() for suffix in Image.registered_extensions()}


def expand_inputs(inputs) -> list[tuple[Path, str | None]]:
    """Files as given (each is tried); folders -> their image files (by Pillow's known suffixes), sorted.
    Returns (path, error or None)."""
    suffixes = image_suffixes()
    found: list[tuple[Path, str | None]] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            found.extend((f, None) for f in files)
            if not files:
                found.append((path, f"{path}: folder holds no image files"))
        else:
            found.append((path, None))
    return found


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("inputs", nargs=-1, required=True, metavar="IMAGE_OR_DIR...")
@click.option("--model", "-m", "model_path", required=True, metavar="ARTIFACT",
              help="exported .onnx / .tflite / .rknn with its manifest .json beside it")
@click.option("--topk", default=5, show_default=True, type=click.IntRange(1), help="classes shown per image")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per image instead of tables")
@click.option("--logits", "with_logits", is_flag=True, help="with --json: include the raw logits")
@click.option("--backend", default="auto", show_default=True, type=click.Choice(BACKEND_CHOICES),
              help="runtime; auto picks by file type")
@click.option("--threads", type=click.IntRange(1), help="CPU threads of the runtime")
@click.option("--cpus", metavar="LIST", help="pin to these cores, e.g. 4-7 (the big cores of an RK3588)")
@click.option("--npu-cores", default="auto", show_default=True, type=click.Choice(tuple(NPU_CORE_MASKS)),
              help="RKNN NPU core mask")
@click.option("--batch", type=click.IntRange(1),
              help="images per inference for dynamic-batch artifacts (default: the artifact's batch, else 1)")
@click.option("--conf", type=float, default=None,
              help="detection: keep class probabilities above this (default: the official 0.05)")
@click.option("--iou", type=float, default=None, help="detection: NMS IoU threshold (default: the official 0.5)")
@click.option("--max-det", type=int, default=None,
              help="detection: keep at most this many boxes per image, highest scores (default: no cap, as official)")
@click.option("--agnostic", is_flag=True, help="detection: one NMS over all classes instead of one per class")
@click.option("--save", "save_dir", type=click.Path(path_type=Path), default=None,
              help="detection: write each image with its boxes drawn into this folder; segmentation: the mask "
              "as a palette PNG (VOC colours) and a blended overlay")
def main(inputs, model_path, topk, as_json, with_logits, backend, threads, cpus, npu_cores, batch, conf, iou,
         max_det, agnostic, save_dir):
    """Classify (ImageNet-1k), detect (COCO) or segment (PASCAL VOC) images with an exported artifact."""
    try:
        options = TaskOptions(conf, iou, max_det, agnostic, save_dir)
        code = predict_images(inputs, model_path, topk, as_json, with_logits, backend, threads, cpus,
                              npu_cores, batch, options)
    except BrokenPipeError:  # `edgeformer-predict … | head`: the reader is gone; stop quietly, like cat does
        _silence_stdout()
        code = EXIT_BROKEN_PIPE
    except EdgeformerError as exc:
        _fail(str(exc))
        code = EXIT_BAD_MODEL
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # a bug, still one line: the board's operator gets no traceback
        _fail(f"unexpected {type(exc).__name__}: {exc}")
        code = EXIT_BAD_MODEL
    sys.exit(code)


class TaskOptions(NamedTuple):
    """The detection options and --save (detection and segmentation)."""
    conf: Optional[float] = None
    iou: Optional[float] = None
    max_det: Optional[int] = None
    agnostic: bool = False
    save_dir: Optional[Path] = None


def predict_images(inputs, model_path, topk, as_json, with_logits, backend, threads, cpus, npu_cores,
                   batch, task: TaskOptions = TaskOptions()) -> int:
    import numpy as np

    from .predictor import Predictor, check_detection_options
    from .preprocess import read_image

    check_detection_options(task.conf, task.iou, task.max_det)  # before the model is even opened
    predictor = Predictor(model_path, backend=backend, threads=threads, cpus=cpus, npu_cores=npu_cores,
                          conf=task.conf, iou=task.iou, max_det=task.max_det, agnostic=task.agnostic)
    detection, segmentation = predictor.task == "detection", predictor.task == "segmentation"
    used = [name for name, value in (("--conf", task.conf), ("--iou", task.iou), ("--max-det", task.max_det),
                                     ("--agnostic", task.agnostic or None)) if value is not None]
    if task.save_dir is not None and not (detection or segmentation):
        used.append("--save")
    if used and not detection:
        predictor.close()
        what = "detection" if "--save" not in used else "detection and segmentation"
        verb = "applies" if len(used) == 1 else "apply"
        raise PredictError(f"{', '.join(used)} {verb} to {what} artifacts; {predictor.artifact.name} is a "
                           f"{predictor.task} model")
    if task.save_dir is not None:
        from .draw import prepare_folder

        prepare_folder(task.save_dir)
    chunk = predictor.batch or batch or 1
    failed = 0
    pending: list[tuple[Path, object, tuple]] = []  # (path, its crop, its size): everything per image is done

    def flush() -> int:
        if not pending:
            return 0
        started = time.perf_counter()
        outputs = predictor.session.outputs(predictor.to_input(np.stack([crop for _, crop, _ in pending])))
        elapsed_ms = (time.perf_counter() - started) * 1e3
        results = predictor.head.results(outputs, [size for _, _, size in pending], topk)
        bad = 0
        for i, ((path, _, size), result) in enumerate(zip(pending, results)):
            if not all(np.isfinite(out[i]).all() for out in outputs):  # never printed as NaN, never counted
                bad += 1
                _fail(f"{path}: the model produced non-finite outputs (NaN/inf) — the artifact is broken")
                continue
            if segmentation:
                show_segmentation(path, predictor.head.classes(result), size, elapsed_ms, predictor, as_json)
            elif detection:
                show_detections(path, result, elapsed_ms, predictor, as_json)
            else:
                show(path, result, outputs[0][i] if with_logits else None, elapsed_ms, predictor, as_json)
            if task.save_dir is not None:
                bad += save_drawing(path, result, task.save_dir, predictor.head.labels if segmentation else None)
        pending.clear()
        return bad

    for path, error in expand_inputs(inputs):
        try:
            if error:
                raise ImageError(error)
            image = read_image(path)
            pending.append((path, predictor.crops([image])[0], image.size))
        except PredictError as exc:
            failed += 1
            _fail(str(exc))
            continue
        except MemoryError:
            failed += 1
            _fail(f"{path}: out of memory while preparing this image")
            continue
        if len(pending) == chunk:
            failed += flush()
    failed += flush()
    predictor.close()
    return EXIT_BAD_IMAGE if failed else 0


def save_drawing(path: Path, found, folder: Path, labels=None) -> int:
    """Draw ``found`` (detections, or a class mask) for the image into ``folder``; 1 (and one error line)
    when that fails, else 0."""
    from .draw import draw_detections, save_mask

    try:
        if labels is not None:
            save_mask(path, found, folder)
        else:
            draw_detections(path, found, folder)
    except OSError as exc:
        _fail(f"{path}: cannot write the drawing into {folder} ({exc.strerror or exc})")
        return 1
    return 0


def show_segmentation(path, classes, size, elapsed_ms, predictor, as_json) -> None:
    if as_json:
        record = {"file": str(path), "model": predictor.artifact.name, "backend": predictor.backend_name,
                  "size": list(size), "classes": [c._asdict() for c in classes],
                  "inference_ms": round(elapsed_ms, 3)}
        click.echo(json.dumps(record, allow_nan=False))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for column in ("class", "label", "pixels"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for c in classes:
        table.add_row(str(c.class_id), c.label, f"{c.fraction:.2%}")
    console = Console(width=100)
    console.print(Text(f"{path}  ({predictor.artifact.name}, {predictor.backend_name}): {size[0]}x{size[1]} mask",
                       style="bold"), soft_wrap=True)
    console.print(table)


def show_detections(path, found, elapsed_ms, predictor, as_json) -> None:
    if as_json:
        record = {"file": str(path), "model": predictor.artifact.name, "backend": predictor.backend_name,
                  "detections": [{"box": d.box, "score": d.score, "class_id": d.class_id, "label": d.label}
                                 for d in found],
                  "inference_ms": round(elapsed_ms, 3)}
        click.echo(json.dumps(record, allow_nan=False))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for column in ("#", "class", "label", "score", "x1", "y1", "x2", "y2"):
        table.add_column(column, justify="left" if column == "label" else "right")
    order = sorted(range(len(found)), key=lambda k: -found[k].score)
    for rank, k in enumerate(order[:TABLE_ROWS], 1):
        d = found[k]
        table.add_row(str(rank), str(d.class_id), d.label, f"{d.score:.4f}", *(f"{v:.1f}" for v in d.box))
    console = Console(width=100)
    more = f", {len(found) - TABLE_ROWS} more in --json" if len(found) > TABLE_ROWS else ""
    console.print(Text(f"{path}  ({predictor.artifact.name}, {predictor.backend_name}): {len(found)} "
                       f"detection(s){more}", style="bold"), soft_wrap=True)
    if found:
        console.print(table)


def show(path, top, logits, elapsed_ms, predictor, as_json) -> None:
    if as_json:
        record = {"image": str(path), "model": predictor.artifact.name, "backend": predictor.backend_name,
                  "top": [p._asdict() for p in top], "inference_ms": round(elapsed_ms, 3)}
        if logits is not None:
            record["logits"] = [float(v) for v in logits]
        click.echo(json.dumps(record, allow_nan=False))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table()
    table.add_column("#", justify="right")
    table.add_column("class", justify="right")
    table.add_column("label")
    table.add_column("probability", justify="right")
    for rank, p in enumerate(top, 1):
        table.add_row(str(rank), str(p.class_id), p.label, f"{p.probability:.4f}")
    console = Console(width=100)
    # a Text, not markup: file names may hold "[...]"; soft_wrap keeps a long path on one line
    console.print(Text(f"{path}  ({predictor.artifact.name}, {predictor.backend_name})", style="bold"),
                  soft_wrap=True)
    console.print(table)


if __name__ == "__main__":
    main()
