"""``edgeformer-export``: export a model to a deployable format; ``edgeformer-export models`` lists them."""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import click

from ..errors import EdgeformerError
from .formats import CALIBRATIONS, FORMATS, GCC_FORMS


class Terminated(BaseException):
    """SIGTERM (docker stop, systemd, a CI timeout): unwinds like Ctrl-C, so staging folders and converter
    workers are cleaned up on the way out."""


def _terminate(signum, frame) -> None:
    raise Terminated()


class _Group(click.Group):
    """Turns user-facing errors into one line on stderr and exit code 1 — never a traceback."""

    def invoke(self, ctx):
        previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            return super().invoke(ctx)
        except EdgeformerError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except ModuleNotFoundError as exc:
            click.echo(f"error: missing dependency '{exc.name}' — install the export extra: "
                       f"pip install torch==2.13.0 'edgeformer-deploy[export]'", err=True)
            sys.exit(1)
        except OSError as exc:  # anything the pipeline did not name itself: still one line with the path
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {where}{exc.strerror or exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted — nothing written", err=True)
            sys.exit(130)
        except Terminated:
            click.echo("terminated — nothing written", err=True)
            sys.exit(143)
        finally:
            signal.signal(signal.SIGTERM, previous)


def _log(message: str) -> None:
    click.echo(message, err=True)


@click.group(cls=_Group, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "model_name", default="edgeformer_s", show_default=True,
              help="Registered model (see `edgeformer-export models`).")
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="Checkpoint (.pt/.pth state dict or .safetensors). Without it the weights are random.")
@click.option("--format", "fmt", default="onnx", show_default=True,
              help="Export format: " + "; ".join(f"{f.name}: {f.description}" for f in FORMATS.values()) + ".")
@click.option("--imgsz", default=None, type=int,
              help="Square input size, a multiple of 32 (default: the model's official size — 256 for "
              "classifiers, 320 for the SSD detectors).")
@click.option("--output", type=click.Path(path_type=Path), default=Path("exports"), show_default=True,
              help="Output folder; the artifact is <model>_<imgsz>.<ext> with a .json manifest beside it.")
@click.option("--batch", default=1, show_default=True, type=int, help="Static batch size.")
@click.option("--dynamic-batch", is_flag=True, help="Symbolic batch dimension instead of --batch.")
@click.option("--opset", default=17, show_default=True, type=click.IntRange(14, 20),
              help="ONNX opset (RKNN accepts at most 19).")
@click.option("--exporter", type=click.Choice(["legacy", "dynamo"]), default="legacy", show_default=True,
              help="torch.onnx exporter; legacy gives the cleanest graph once kernels are static.")
@click.option("--gcc", type=click.Choice(GCC_FORMS), default=None,
              help="GCC formulation: static-padded depthwise conv, circulant MatMul, or the circulant products "
                   "as grouped 1x1 convs (gemm) (default: per format and --target).")
@click.option("--gcc-taps", type=int, default=None,
              help="Cut depthwise GCC kernels into chunks of at most N taps (0: no split; default: per format).")
@click.option("--half", is_flag=True, help="TFLite: fp16 weights (<model>_<imgsz>_fp16.tflite); RKNN is fp16 anyway.")
@click.option("--int8", is_flag=True, help="Full-integer int8 (<model>_<imgsz>[_<target>]_int8.<ext>), "
              "calibrated on --data.")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Folder of JPEG/PNG calibration images for --int8 (default: the few shipped sample photos).")
@click.option("--calibration", type=click.Choice(CALIBRATIONS), default="minmax", show_default=True,
              help="int8 activation ranges: minmax (each tensor's full range on --data, the converters' "
              "default) or mse (per tensor the range with the least int8 rounding + clipping error; RKNN: the "
              "toolkit's mmse; slower to build, not always more accurate: BENCHMARKS.md).")
@click.option("--min-cosine", type=float, default=None,
              help="Override the cosine gate (defaults: onnx/fp32 0.99999, fp16 0.9999, int8 0.99).")
@click.option("--target", default=None,
              help="RKNN: Rockchip NPU chip, one of rk3588 (default), rk3576, rk3566, rk3568, rk3562. TFLite: "
                   "the CPU class the GCC formulation and op forms are chosen for: armv7 (RK3288), aarch64 "
                   "(a chip name works too) or x86_64; without it, a portable artifact.")
@click.option("--analyze", is_flag=True,
              help="RKNN: run the toolkit's per-layer accuracy_analysis; report saved beside the artifact.")
@click.option("--channel-order", default=None, metavar="rgb|bgr",
              help="Channel order the checkpoint was trained on (default: the model's — BGR for the official "
              "ParC-Net / ml-cvnets checkpoints; rgb for e.g. a fine-tune fed PIL images). Artifacts always "
              "take RGB: a BGR swap is folded into the stem convolution.")
@click.option("--no-verify", is_flag=True, help="Skip the parity gate against the PyTorch model.")
@click.option("--verbose", is_flag=True, help="Keep the converter logs beside the output.")
@click.pass_context
def main(ctx: click.Context, model_name, weights, fmt, imgsz, output, batch, dynamic_batch, opset, exporter,
         gcc, gcc_taps, half, int8, data, calibration, min_cosine, target, analyze, channel_order, no_verify,
         verbose) -> None:
    """Export EdgeFormer / MobileViT to a deployable format, verified against PyTorch.

    \b
    edgeformer-export --model edgeformer_s --weights ckpt.pt --format onnx --imgsz 256 --output exports
    edgeformer-export --model edgeformer_s --weights ckpt.pt --format rknn --target rk3588
    edgeformer-export models --imgsz 256
    """
    if ctx.invoked_subcommand is not None:
        return
    from .pipeline import ExportJob, run_export

    if weights is None:
        _log("warning: no --weights given — exporting RANDOM weights (fine for testing the toolchain, "
             "useless for predictions)")
    job = ExportJob(model=model_name, weights=weights, fmt=fmt, imgsz=imgsz, output=output, batch=batch,
                    dynamic_batch=dynamic_batch, opset=opset, exporter=exporter, gcc=gcc, gcc_taps=gcc_taps,
                    verify=not no_verify, half=half, int8=int8, data=data, calibration=calibration,
                    min_cosine=min_cosine, verbose=verbose, target=target, analyze=analyze,
                    channel_order=channel_order)
    artifact = run_export(job, log=_log)
    import json

    from ..runtime.artifact import manifest_path

    manifest = json.loads(manifest_path(artifact).read_text())
    parity = manifest.get("parity")
    summary = "not verified"
    if parity:
        summary = f"max-abs {parity['max_abs']:.2e} vs PyTorch, cosine {parity['cosine']:.7f}"
        if "top1_agreement" in parity:
            summary += f", top-1 agreement {parity['top1_agreement']:.0%}"
        if "detections" in parity:
            summary += f", detections agree {parity['detections']['agreement']:.2%}"
    _log(f"wrote {artifact} ({manifest['size_bytes'] / 1e6:.1f} MB) in {manifest['export_seconds']:.1f} s; "
         f"parity: {summary}")


@main.group("env")
def env_group() -> None:
    """Managed converter environments (onnx2tf/TensorFlow, tflite-runtime, …)."""


@env_group.command("list")
def env_list() -> None:
    """Show the converter environments, their state and location ($EDGEFORMER_ENVS)."""
    from rich.console import Console
    from rich.table import Table

    from .converter_env import describe_envs

    table = Table(title="converter environments")
    for column in ("name", "state", "path", "purpose"):
        table.add_column(column)
    for row in describe_envs():
        table.add_row(*row)
    Console().print(table)


@env_group.command("create")
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Re-create even if it is ready.")
def env_create(names, force) -> None:
    """Create environments ahead of time (all when no NAME is given)."""
    from .converter_env import ENVS, create_env

    for name in names or tuple(ENVS):
        env = create_env(name, _log, force=force)
        _log(f"{name}: ready in {env.path}")


@env_group.command("remove")
@click.argument("names", nargs=-1, required=True)
def env_remove(names) -> None:
    """Delete environments."""
    from .converter_env import remove_env

    for name in names:
        _log(f"{name}: {'removed' if remove_env(name) else 'was not there'}")


@main.command("models")
@click.option("--imgsz", default=None, type=click.IntRange(min=32),
              help="Square input size at which MACs are counted (default: each model's official size).")
def models_command(imgsz: int | None) -> None:
    """List the registered models with task, parameters and MACs."""
    from rich.console import Console
    from rich.table import Table

    from ..models import count_macs, count_params, create_model, list_models, model_spec

    table = Table(title="models" + (f" (MACs at {imgsz}x{imgsz})" if imgsz else ""))
    for column in ("model", "task", "imgsz", "params", "MACs"):
        table.add_column(column, justify="left" if column in ("model", "task") else "right")
    for name in list_models():
        model, size = create_model(name), imgsz or model_spec(name).imgsz
        table.add_row(name, model_spec(name).task, str(size), f"{count_params(model) / 1e6:.3f} M",
                      f"{count_macs(model, size) / 1e9:.3f} G")
    Console().print(table)
