"""``edgeformer-val ARTIFACT --data PATH [--reference WEIGHTS] [--limit N] [--json OUT] [--markdown OUT]``:
the accuracy of an exported artifact on a labelled set (ImageNet-style folder, COCO, PASCAL VOC), optionally
side by side with the un-lowered PyTorch model.

Exit codes: 0 all images evaluated; 1 some were skipped (unreadable: each reported in one line, the rest
counted); 2 nothing could be evaluated (bad data, artifact or option: one line); 130 interrupted (Ctrl-C),
the metrics of what was evaluated so far still printed and written. Never a traceback.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import EdgeformerError
from ..runtime.backends import BACKEND_CHOICES

EXIT_SKIPPED, EXIT_FAILED, EXIT_INTERRUPTED = 1, 2, 130


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)


def _check_output(path: Path, option: str) -> None:
    from ..runtime.folders import folder_problem

    if path.is_dir():
        raise EdgeformerError(f"{option} {path} is a folder; give a file name")
    problem = folder_problem(path.parent if str(path.parent) else Path("."), f"the folder of {option}")
    if problem:
        raise EdgeformerError(problem)


def _progress_bar():
    """A rich progress bar on stderr when it is a terminal; else a line every 10 % (CI logs, pipes)."""
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        bar = Progress("evaluating", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)
        state = {}

        def update(done: int, total: int) -> None:
            if "task" not in state:
                bar.start()
                state["task"] = bar.add_task("val", total=total)
            bar.update(state["task"], completed=done)
            if done == total:
                bar.stop()

        return update, bar.stop
    marks = set()

    def lines(done: int, total: int) -> None:
        step = done * 10 // total
        if step not in marks and (step > 0 or done == 1):
            marks.add(step)
            click.echo(f"evaluated {done}/{total}", err=True)

    return lines, lambda: None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("artifact", type=click.Path(path_type=Path), metavar="ARTIFACT")
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="classification: a folder of class folders (n01440764/ or 0042/); detection: a COCO root "
              "(annotations/instances_*.json + images) or the json; segmentation: a VOC root (JPEGImages, "
              "SegmentationClass, ImageSets/Segmentation/<split>.txt) or the list file")
@click.option("--reference", "reference", type=click.Path(path_type=Path), default=None, metavar="WEIGHTS",
              help="also run the un-lowered PyTorch model with these weights (host: needs torch)")
@click.option("--limit", type=int, default=None, help="evaluate the first N images only")
@click.option("--split", default="val", show_default=True, help="segmentation: the image list to use")
@click.option("--images", "images", type=click.Path(path_type=Path), default=None,
              help="detection: the image folder, when it is not beside the annotations")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="write the result document here (schema edgeformer-val/1, val/SCHEMA.md)")
@click.option("--markdown", "markdown_out", type=click.Path(path_type=Path), default=None,
              help="write the Markdown section here (edgeformer-bench report merges the JSON too)")
@click.option("--backend", default="auto", show_default=True, type=click.Choice(BACKEND_CHOICES),
              help="runtime; auto picks by file type")
@click.option("--threads", type=click.IntRange(1), help="CPU threads of the runtime")
def main(artifact, data, reference, limit, split, images, json_out, markdown_out, backend, threads):
    """Accuracy of an exported artifact on your labelled data (top-1/5, COCO mAP, VOC mIoU)."""
    try:
        code = validate(artifact, data, reference, limit, split, images, json_out, markdown_out, backend, threads)
    except EdgeformerError as exc:
        _fail(str(exc))
        code = EXIT_FAILED
    except KeyboardInterrupt:  # before the loop (model loading): nothing evaluated, nothing written
        code = EXIT_INTERRUPTED
    except Exception as exc:  # a bug, still one line
        _fail(f"unexpected {type(exc).__name__}: {exc}")
        code = EXIT_FAILED
    sys.exit(code)


def validate(artifact, data, reference, limit, split, images, json_out, markdown_out, backend, threads) -> int:
    from rich.console import Console

    from ..bench.schema import write_atomic
    from .report import markdown_section, print_result
    from .runner import Evaluation

    for path, option in ((json_out, "--json"), (markdown_out, "--markdown")):
        if path is not None:
            _check_output(path, option)
    evaluation = Evaluation(artifact, data, reference=reference, limit=limit, split=split, images=images,
                            backend=backend, threads=threads)
    update, stop = _progress_bar()
    try:
        document = evaluation.run(progress=update, on_skip=_fail)
    finally:
        stop()
        evaluation.close()
    data_info = document["data"]
    if not data_info["evaluated"]:
        if data_info["interrupted"]:
            return EXIT_INTERRUPTED
        raise EdgeformerError(f"no image could be evaluated ({len(data_info['skipped'])} skipped)")
    print_result(document, Console(width=110))
    try:
        if json_out is not None:
            write_atomic(json_out, json.dumps(document, indent=2, allow_nan=False) + "\n")
            click.echo(f"wrote {json_out}", err=True)
        if markdown_out is not None:
            write_atomic(markdown_out, markdown_section(document))
            click.echo(f"wrote {markdown_out}", err=True)
    except OSError as exc:
        raise EdgeformerError(f"cannot write the result: {exc.strerror or exc}") from None
    except ValueError:
        raise EdgeformerError("the result holds a non-finite number (NaN/inf) — not written") from None
    if data_info["interrupted"]:
        return EXIT_INTERRUPTED
    return EXIT_SKIPPED if data_info["skipped"] else 0


if __name__ == "__main__":
    main()
