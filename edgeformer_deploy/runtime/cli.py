"""``edgeformer-predict IMAGE_OR_DIR… --model ARTIFACT``: top-k classes per image, as tables or JSON lines.

A bad image gets one error line and the others are still processed; the exit code is 1 when any image
failed, 2 when the model cannot be used. Never a traceback.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from ..errors import EdgeformerError
from .backends import BACKEND_CHOICES
from .errors import ImageError, PredictError
from .rknn_backend import NPU_CORE_MASKS

EXIT_BAD_IMAGE, EXIT_BAD_MODEL = 1, 2
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a tool ended by SIGPIPE


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
def main(inputs, model_path, topk, as_json, with_logits, backend, threads, cpus, npu_cores, batch):
    """Classify images with an exported EdgeFormer/MobileViT artifact (ImageNet-1k labels)."""
    try:
        code = predict_images(inputs, model_path, topk, as_json, with_logits, backend, threads, cpus,
                              npu_cores, batch)
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


def predict_images(inputs, model_path, topk, as_json, with_logits, backend, threads, cpus, npu_cores,
                   batch) -> int:
    import numpy as np

    from .predictor import Predictor
    from .preprocess import read_image

    predictor = Predictor(model_path, backend=backend, threads=threads, cpus=cpus, npu_cores=npu_cores)
    chunk = predictor.batch or batch or 1
    failed = 0
    pending: list[tuple[Path, object]] = []  # (path, its crop: everything per image is done already)

    def flush() -> int:
        if not pending:
            return 0
        started = time.perf_counter()
        logits = predictor.run(predictor.to_input(np.stack([crop for _, crop in pending])))
        elapsed_ms = (time.perf_counter() - started) * 1e3
        bad = 0
        for (path, _), row in zip(pending, logits):
            if not np.isfinite(row).all():  # never printed as NaN, never counted as a prediction
                bad += 1
                _fail(f"{path}: the model produced non-finite outputs (NaN/inf) — the artifact is broken")
                continue
            top = predictor.top_k(row[None], topk)[0]
            show(path, top, row if with_logits else None, elapsed_ms, predictor, as_json)
        pending.clear()
        return bad

    for path, error in expand_inputs(inputs):
        try:
            if error:
                raise ImageError(error)
            pending.append((path, predictor.crops([read_image(path)])[0]))
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
