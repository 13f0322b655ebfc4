"""``edgeformer-export``: export a model to a deployable format; ``edgeformer-export models`` lists them."""
from __future__ import annotations

import sys

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


@click.group(cls=_Group, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """Export EdgeFormer / MobileViT to deployable formats."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


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
