"""The `zephyr` command: a thin layer over the stage packages.

Each stage package has a `cli.py` with `register(app)`, which adds its commands; heavy imports
(torch, transformers) happen inside the commands so `zephyr --help` answers at once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from zephyr.errors import ZephyrError

app = typer.Typer(
    name="zephyr",
    help="Turn a small language model into a STEM tutor, and prove with numbers what each step did.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Turn a small language model into a STEM tutor, and prove with numbers what each step did."""


@app.command()
def pipeline(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML, e.g. recipes/demo.yaml")],
    stages: Annotated[
        str | None, typer.Option(help="Comma-separated stages to run (default: all in the recipe)")
    ] = None,
    force: Annotated[bool, typer.Option(help="Rerun stages even when finished")] = False,
    data_root: Annotated[
        str | None, typer.Option(help="Folder laid out like ../shared/data")
    ] = None,
    out: Annotated[
        str | None, typer.Option(help="Output root (default: the recipe's `out`)")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Base model spec (default: the recipe's `model`)")
    ] = None,
) -> None:
    """Run the stages a recipe names; finished stages are skipped on a rerun."""
    from zephyr.pipeline import run_pipeline

    only = [s.strip() for s in stages.split(",")] if stages else None
    if data_root:  # a command-line path is relative to the current directory, not the recipe
        data_root = str(Path(data_root).expanduser().resolve())
    dirs = run_pipeline(
        recipe,
        only=only,
        force=force,
        overrides={"data_root": data_root, "out": out, "model": model},
    )
    for name, d in dirs.items():
        Console().print(f"{name:10s} {d}")


def _register_stages() -> None:
    from zephyr.data import cli as data_cli
    from zephyr.eval import cli as eval_cli
    from zephyr.export import cli as export_cli
    from zephyr.quantize import cli as quantize_cli
    from zephyr.train import cli as train_cli
    from zephyr.tutor import cli as tutor_cli

    for module in (data_cli, train_cli, eval_cli, quantize_cli, export_cli, tutor_cli):
        module.register(app)


_register_stages()


def main() -> None:
    """Entry point: user errors print one sentence and exit 2, never a traceback."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except ZephyrError as e:
        console.print(f"[bold red]error:[/] {e}")
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
