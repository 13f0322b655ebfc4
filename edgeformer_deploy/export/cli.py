"""``edgeformer-export``: export a model to a deployable format; ``edgeformer-export models`` lists them."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import EdgeformerError


class _Group(click.Group):
    """Turns user-facing errors into one line on stderr and exit code 1 — never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgeformerError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except ModuleNotFoundError as exc:
            click.echo(f"error: missing dependency '{exc.name}' — install the export extra: "
                       f"pip install torch==2.13.0 'edgeformer-deploy[export]'", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted — nothing written", err=True)
            sys.exit(130)


def _log(message: str) -> None:
    click.echo(message, err=True)


@click.group(cls=_Group, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "model_name", default="edgeformer_s", show_default=True,
              help="Registered model (see `edgeformer-export models`).")
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="Checkpoint (.pt/.pth state dict or .safetensors). Without it the weights are random.")
@click.option("--format", "fmt", default="onnx", show_default=True, help="Export format: onnx.")
@click.option("--imgsz", default=256, show_default=True, type=int, help="Square input size, a multiple of 32.")
@click.option("--output", type=click.Path(path_type=Path), default=Path("exports"), show_default=True,
              help="Output folder; the artifact is <model>_<imgsz>.<ext> with a .json manifest beside it.")
@click.option("--batch", default=1, show_default=True, type=int, help="Static batch size.")
@click.option("--dynamic-batch", is_flag=True, help="Symbolic batch dimension instead of --batch.")
@click.option("--opset", default=17, show_default=True, type=click.IntRange(14, 20),
              help="ONNX opset (RKNN accepts at most 19).")
@click.option("--exporter", type=click.Choice(["legacy", "dynamo"]), default="legacy", show_default=True,
              help="torch.onnx exporter; legacy gives the cleanest graph once kernels are static.")
@click.option("--gcc", type=click.Choice(["conv", "matmul"]), default=None,
              help="GCC formulation: static-padded depthwise conv or circulant MatMul (default: per format).")
@click.option("--no-verify", is_flag=True, help="Skip the parity gate against the PyTorch model.")
@click.pass_context
def main(ctx: click.Context, model_name, weights, fmt, imgsz, output, batch, dynamic_batch, opset, exporter,
         gcc, no_verify) -> None:
    """Export EdgeFormer / MobileViT to a deployable format, verified against PyTorch.

    \b
    edgeformer-export --model edgeformer_s --weights ckpt.pt --format onnx --imgsz 256 --output exports
    edgeformer-export models --imgsz 256
    """
    if ctx.invoked_subcommand is not None:
        return
    from .pipeline import ExportJob, run_export

    if weights is None:
        _log("warning: no --weights given — exporting RANDOM weights (fine for testing the toolchain, "
             "useless for predictions)")
    job = ExportJob(model=model_name, weights=weights, fmt=fmt, imgsz=imgsz, output=output, batch=batch,
                    dynamic_batch=dynamic_batch, opset=opset, exporter=exporter, gcc=gcc,
                    verify=not no_verify)
    artifact = run_export(job, log=_log)
    import json

    manifest = json.loads(artifact.with_suffix(".json").read_text())
    parity = manifest.get("parity")
    summary = (f"max-abs {parity['max_abs']:.2e}, cosine {parity['cosine']:.7f}, "
               f"top-1 agreement {parity['top1_agreement']:.0%}" if parity else "not verified")
    _log(f"wrote {artifact} ({manifest['size_bytes'] / 1e6:.1f} MB) in {manifest['export_seconds']:.1f} s; "
         f"parity: {summary}")


@main.command("models")
@click.option("--imgsz", default=256, show_default=True, type=click.IntRange(min=32),
              help="Square input size at which MACs are counted.")
def models_command(imgsz: int) -> None:
    """List the registered models with parameters and MACs."""
    from rich.console import Console
    from rich.table import Table

    from ..models import count_macs, count_params, create_model, list_models

    table = Table(title=f"models (MACs at {imgsz}x{imgsz})")
    for column in ("model", "params", "MACs"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in list_models():
        model = create_model(name)
        table.add_row(name, f"{count_params(model) / 1e6:.3f} M", f"{count_macs(model, imgsz) / 1e9:.3f} G")
    Console().print(table)
