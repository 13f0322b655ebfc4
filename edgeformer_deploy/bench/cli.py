"""``edgeformer-bench``: on-device benchmark of exported artifacts; ``report`` and ``compare`` subcommands.

    edgeformer-bench ARTIFACT… [--warmup 10] [--runs 100] [--threads N] [--cpus 4-7] [--json OUT]
    edgeformer-bench report RESULT.json… [--out DIR]
    edgeformer-bench compare [--format onnx|tflite|rknn] [--imgsz 256] …

The run path (this module, ``runner``, ``display``, ``rss``, ``system``, ``schema``) is board side: numpy,
click, rich and ``edgeformer_deploy.runtime`` only. ``report`` (matplotlib) and ``compare`` (the export
toolchain, torch) import their dependencies inside the command.
"""
from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Optional, Sequence

import click

from ..errors import EdgeformerError

from ..runtime.backends import BACKEND_CHOICES
from ..runtime.rknn_backend import NPU_CORE_MASKS
from .emulate import EMULATE_CHOICES

# platform.machine() -> the TFLite --target of that CPU class (export.formats.TFLITE_TARGETS)
HOST_TFLITE_TARGETS = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64",
                       "armv7l": "armv7"}

EXIT_FAILED, EXIT_INTERRUPTED = 1, 130
_SUBCOMMAND, _DISPATCHING = "edgeformer_bench.subcommand", "edgeformer_bench.dispatching"


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)


class BenchGroup(click.Group):
    """``edgeformer-bench ARTIFACT…`` runs the benchmark (the group's own options and arguments);
    ``edgeformer-bench report|compare …`` runs a subcommand. Errors become one line, never a traceback."""

    def parse_args(self, ctx: click.Context, args):
        if args and args[0] in self.commands:  # a subcommand: the run options keep their defaults
            ctx.meta[_SUBCOMMAND] = list(args)
            return super().parse_args(ctx, [])
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except EdgeformerError as exc:
            _fail(str(exc))
            sys.exit(EXIT_FAILED)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:  # a bug: still one line for the operator of the board
            from .runner import one_line

            _fail(f"unexpected {one_line(exc)}")
            sys.exit(EXIT_FAILED)


class _Artifacts(click.Argument):
    """The run path's ARTIFACT arguments; left out of a subcommand's usage line."""

    def get_usage_pieces(self, ctx: click.Context):
        return [] if ctx.meta.get(_DISPATCHING) else super().get_usage_pieces(ctx)


def run_options(function):
    """The runner's options, shared by the run path and ``compare``."""
    for decorator in reversed([
        click.option("--warmup", default=10, show_default=True, type=click.IntRange(0),
                     help="Untimed runs per artifact after the first inference (interleaved)."),
        click.option("--runs", default=100, show_default=True, type=click.IntRange(1),
                     help="Timed runs per artifact (interleaved A B A B …)."),
        click.option("--threads", type=click.IntRange(1), default=None,
                     help="CPU threads of the runtime (default: the runtime's own choice)."),
        click.option("--cpus", metavar="LIST", default=None,
                     help="Pin to these cores first, e.g. 4-7 (the big cores of an RK3588)."),
        click.option("--json", "json_out", metavar="OUT", default=None,
                     help="Write the result document here (atomically; '-' = stdout, table on stderr)."),
        click.option("--backend", default="auto", show_default=True, type=click.Choice(BACKEND_CHOICES),
                     help="Runtime; auto picks by file type."),
        click.option("--npu-cores", default="auto", show_default=True, type=click.Choice(tuple(NPU_CORE_MASKS)),
                     help="RKNN NPU core mask."),
        click.option("--no-rss", is_flag=True,
                     help="Skip the per-artifact child process that measures peak RSS."),
        click.option("--label", default=None,
                     help="Name of this machine in reports (default: board model, else CPU model)."),
        click.option("--emulate", type=click.Choice(EMULATE_CHOICES), default=None,
                     help="Run on an emulated ARM board (qemu-user; source checkout, apt-get install qemu-user gcc) "
                          "and count guest instructions per inference; one thread, --warmup 1 --runs 3 by default."),
        click.option("--profile", is_flag=True,
                     help="With --emulate: attribute each inference's instructions to the kernels that executed "
                          "them (shared library + function, grouped by kernel family), in the table and JSON."),
    ]):
        function = decorator(function)
    return function


@click.group(cls=BenchGroup, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"], "allow_interspersed_args": True})
@click.argument("artifacts", nargs=-1, metavar="[ARTIFACT]...", cls=_Artifacts)
@run_options
@click.pass_context
def main(ctx: click.Context, artifacts, warmup, runs, threads, cpus, json_out, backend, npu_cores, no_rss,
         label, emulate, profile) -> None:
    """Benchmark exported artifacts (.onnx / .tflite / .rknn with their manifests) on this machine.

    Several artifacts are measured interleaved (A B A B …); the first one that loads is the baseline,
    and each artifact's latency ratio to it is taken round by round (median [p10–p90] shown). Peak RSS
    comes from a fresh process per artifact. Exit code: 0 ok, 1 when any artifact failed (its row says
    why, the others still run) or on bad input, 130 when interrupted (the results gathered so far are
    still written).

    \b
    edgeformer-bench exports/mobilevit_s_256.onnx exports/edgeformer_s_256.onnx --threads 4 --json rk3588.json
    edgeformer-bench report rk3588.json rk3288.json --out report/
    edgeformer-bench compare --format onnx --imgsz 256
    """
    sub = ctx.meta.pop(_SUBCOMMAND, None)
    if sub is not None:
        name, rest = sub[0], sub[1:]
        command = ctx.command.get_command(ctx, name)
        ctx.meta[_DISPATCHING] = True
        with command.make_context(name, rest, parent=ctx) as sub_ctx:
            return command.invoke(sub_ctx)
    if not artifacts:
        click.echo(ctx.get_help())
        ctx.exit(0)
    check_profile(profile, emulate)
    sys.exit(benchmark_command(artifacts, warmup=warmup, runs=runs, threads=threads, cpus=cpus,
                               json_out=json_out, backend=backend, npu_cores=npu_cores,
                               measure_rss=not no_rss, label=label, emulate=emulate, profile=profile))


def benchmark_command(artifacts: Sequence, *, warmup: int, runs: int, threads: Optional[int], cpus: Optional[str],
                      json_out: Optional[str], backend: str = "auto", npu_cores: str = "auto",
                      measure_rss: bool = True, label: Optional[str] = None, extra: Optional[dict] = None,
                      emulate: Optional[str] = None, profile: bool = False) -> int:
    """Run, write the JSON, show the table and the failures; returns the exit code.
    ``emulate``: run on that emulated ARM board and count instructions (``emulate.py``), with ``profile``
    attributed to kernels (``profile.py``)."""
    from .display import RichProgress
    from .runner import run_benchmark

    created = check_json_target(json_out, artifacts)
    try:
        if emulate:
            from .emulate import emulation_note, run_emulated_command

            document = run_emulated_command(list(artifacts), emulate, warmup=warmup, runs=runs, threads=threads,
                                            cpus=cpus, backend=backend, label=label, profile=profile)
        else:
            with RichProgress() as progress:
                document = run_benchmark(list(artifacts), warmup, runs, threads, cpus, backend=backend,
                                         npu_cores=npu_cores, measure_rss=measure_rss, label=label,
                                         progress=progress)
    except BaseException:
        if created:
            _drop_if_empty(json_out)
        raise
    if extra:
        document.update(extra)
    code = emit(document, json_out)
    if emulate:
        click.echo(emulation_note(document), err=json_out == "-")
    return code


def check_profile(profile: bool, emulate: Optional[str]) -> None:
    if profile and not emulate:
        _fail("--profile attributes emulated instructions to kernels: it needs --emulate armv7|aarch64")
        sys.exit(EXIT_FAILED)


def check_json_target(json_out: Optional[str], artifacts: Sequence = (), create: bool = True) -> bool:
    """Refuse a --json destination before measuring anything, not after: only a regular file (or a new
    one, created here for real unless ``create`` is false), never a device, FIFO or folder, never an
    artifact or a manifest. Returns whether it created the file."""
    from ..runtime.artifact import SUFFIX_FORMATS, find_manifest, read_json_object
    from .runner import BenchError

    if not json_out or json_out == "-":
        return False
    target = Path(json_out)
    folder = target.parent
    if target.is_dir():
        raise BenchError(f"--json {json_out} is a folder; give a file name")
    if target.exists() and not target.is_file():
        raise BenchError(f"--json {json_out} is not a regular file (a device, pipe or socket); give a file name")
    protected = {Path(a).resolve() for a in artifacts}
    protected |= {m.resolve() for m in (find_manifest(Path(a)) for a in artifacts) if m is not None}
    is_manifest = "manifest_version" in (read_json_object(target) or {})
    if target.suffix.lower() in SUFFIX_FORMATS or target.resolve() in protected or is_manifest:
        raise BenchError(f"--json {json_out} is a model artifact or its manifest; give another file name")
    if not folder.is_dir():
        raise BenchError(f"--json {json_out}: folder {folder} does not exist")
    if not create:
        return False
    existed = target.exists()
    try:
        with open(target, "a"):  # created (or touched) for real: a read-only or full place fails now
            pass
    except OSError as exc:
        raise BenchError(f"--json {json_out}: cannot write it ({exc.strerror or exc})") from None
    return not existed


def _drop_if_empty(json_out: str) -> None:
    """Remove the empty file :func:`check_json_target` created when no document ever reached it."""
    try:
        if Path(json_out).stat().st_size == 0:
            Path(json_out).unlink()
    except OSError:
        pass


def emit(document: dict, json_out: Optional[str]) -> int:
    """Write the document (``-``: stdout), print the table and one error line per failed artifact."""
    from .display import print_result
    from .runner import exit_code
    from .schema import dumps, write_result

    table_stream = sys.stdout
    if json_out == "-":
        sys.stdout.write(dumps(document))
        sys.stdout.flush()
        table_stream = sys.stderr
    print_result(document, table_stream)  # on screen before the file: a failed write loses no numbers
    if json_out and json_out != "-":
        write_result(document, json_out)
    for artifact in document["artifacts"]:
        if artifact.get("status") != "ok":
            path, error = str(artifact.get("path")), str(artifact.get("error"))
            _fail(error if error.startswith(path) else f"{path}: {error}")
    if document.get("interrupted"):
        where = f"; partial results written to {json_out}" if json_out and json_out != "-" else ""
        click.echo(f"interrupted after {document.get('rounds_completed', 0)} complete rounds{where}", err=True)
    elif json_out and json_out != "-":
        click.echo(f"wrote {json_out}", err=True)
    return exit_code(document)


@main.command("report")
@click.argument("results", nargs=-1, required=True, metavar="RESULT.json...")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("bench-report"), show_default=True,
              help="Folder for report.md and report.png.")
def report_command(results, out_dir: Path) -> None:
    """Merge results of several boards/runs into a Markdown table and a PNG plot (needs matplotlib).

    Refuses (exit 1) results written with a newer schema than this edgeformer-bench reads.
    """
    try:
        from .report import write_report
    except ImportError as exc:
        _fail(f"report needs {getattr(exc, 'name', None) or 'matplotlib'} — pip install 'edgeformer-deploy[report]'")
        sys.exit(EXIT_FAILED)
    markdown, png = write_report([Path(r) for r in results], out_dir)
    click.echo(markdown.read_text(encoding="utf-8"))
    click.echo(f"wrote {markdown} and {png}", err=True)


@main.command("compare")
@click.option("--format", "fmt", default="onnx", show_default=True,
              help="Export format: onnx, tflite or rknn (any format edgeformer-export knows).")
@click.option("--task", default="classification", show_default=True,
              type=click.Choice(["classification", "detection", "segmentation"]),
              help="classification: MobileViT-S vs EdgeFormer-S; detection: the SSDs; segmentation: the DeepLabv3s.")
@click.option("--imgsz", default=None, type=int,
              help="Square input size, a multiple of 32 (default: the task's official size, 256 / 320 / 512).")
@click.option("--int8", is_flag=True, help="Full-integer int8 artifacts (tflite/rknn).")
@click.option("--half", is_flag=True, help="fp16 weights (tflite).")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Calibration images for --int8 (default: the shipped sample photos).")
@click.option("--target", default=None, help="Target platform for formats that take one (rknn: e.g. rk3588; tflite: "
              "armv7 | aarch64 | x86_64; default: the emulated one with --emulate, else this host's).")
@click.option("--weights-edgeformer", type=click.Path(path_type=Path), default=None,
              help="Official EdgeFormer-S checkpoint of the task (without it: random weights).")
@click.option("--weights-mobilevit", type=click.Path(path_type=Path), default=None,
              help="Official MobileViT-S checkpoint of the task (without it: random weights).")
@click.option("--output", type=click.Path(path_type=Path), default=Path("exports/compare"), show_default=True,
              help="Export folder; artifacts already there with a matching manifest are reused.")
@click.option("--reexport", is_flag=True, help="Export again even when matching artifacts exist.")
@click.option("--export-only", is_flag=True, help="Export (or reuse) and stop: e.g. .rknn for a board.")
@run_options
def compare_command(fmt, task, imgsz, int8, half, data, target, weights_edgeformer, weights_mobilevit, output, reexport,
                    export_only, warmup, runs, threads, cpus, json_out, backend, npu_cores, no_rss, label,
                    emulate, profile) -> None:
    """The main job: export (or reuse) MobileViT-S and EdgeFormer-S, then benchmark them interleaved.

    MobileViT-S is the baseline, so the ratio reads EdgeFormer-S / MobileViT-S (below 1: EdgeFormer is
    faster). Needs the export extra (torch); the .onnx default needs no converter environment.
    """
    try:
        from .compare import prepare_artifacts
    except ImportError as exc:
        _fail(f"compare needs the export toolchain (missing {getattr(exc, 'name', None) or exc}) — "
              "pip install torch==2.13.0 'edgeformer-deploy[export]'")
        sys.exit(EXIT_FAILED)
    check_json_target(json_out, create=False)  # before exporting; benchmark_command creates it before measuring
    check_profile(profile, emulate)
    if emulate:
        from .emulate import check_format

        check_format(emulate, fmt)  # before exporting anything
    if fmt.startswith("tflite") and target is None and (emulate or not export_only):
        # export for the CPU that runs the measurement: the emulated board's class, or this host's own
        target = emulate or HOST_TFLITE_TARGETS.get(platform.machine().lower())
        if target and not emulate:
            click.echo(f"exporting TFLite for this host's CPU class (--target {target}; give --target to choose)",
                       err=True)
    artifacts, info = prepare_artifacts(fmt=fmt, imgsz=imgsz, int8=int8, half=half, data=data, target=target,
                                        weights={"edgeformer": weights_edgeformer,
                                                 "mobilevit": weights_mobilevit},
                                        output=output, reexport=reexport, export_only=export_only,
                                        log=lambda m: click.echo(m, err=True), task=task)
    if export_only:
        return
    sys.exit(benchmark_command(artifacts, warmup=warmup, runs=runs, threads=threads, cpus=cpus, json_out=json_out,
                               backend=backend, npu_cores=npu_cores, measure_rss=not no_rss, label=label,
                               extra={"compare": info}, emulate=emulate, profile=profile))


if __name__ == "__main__":
    main(prog_name="edgeformer-bench")
