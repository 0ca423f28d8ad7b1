"""The `zephyr` command: a thin layer over the stage packages.

Each stage package has a `cli.py` with `register(app)`, which adds its commands; heavy imports
(torch, transformers) happen inside the commands so `zephyr --help` answers at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from zephyr.errors import exit_on_error
from zephyr.heap import limit_heap_growth
from zephyr.recipe import DEFAULT_DATA_ROOT

app = typer.Typer(
    name="zephyr",
    help="Turn a small language model into a STEM tutor, and prove with numbers what each step did.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Turn a small language model into a STEM tutor, and prove with numbers what each step did."""


@app.command()
def pipeline(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML, e.g. recipes/demo.yaml")],
    stages: Annotated[
        str | None, typer.Option(help="Comma-separated stages to run (default: all in the recipe)")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Run every stage afresh in an emptied directory (no resume)")
    ] = False,
    data_root: Annotated[
        str | None, typer.Option(help=f"Folder laid out like {DEFAULT_DATA_ROOT}")
    ] = None,
    out: Annotated[
        str | None, typer.Option(help="Output root (default: the recipe's `out`)")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Base model spec (default: the recipe's `model`)")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override any recipe key: dotted.key=YAML value, repeatable"),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Print the stages (runs / done) and a time estimate; run nothing")
    ] = False,
) -> None:
    """Run the stages a recipe names; finished stages are skipped on a rerun."""
    from zephyr.pipeline import run_pipeline

    only = [s.strip() for s in stages.split(",")] if stages else None
    if data_root:  # a command-line path is relative to the current directory, not the recipe
        data_root = str(Path(data_root).expanduser().resolve())
    if dry_run:
        from zephyr.study import print_pipeline_plan

        print_pipeline_plan(recipe, {"data_root": data_root, "out": out, "model": model}, set_)
        return
    dirs = run_pipeline(
        recipe,
        only=only,
        force=force,
        overrides={"data_root": data_root, "out": out, "model": model},
        sets=set_,
    )
    for name, d in dirs.items():
        Console().print(f"{name:10s} {d}")


@app.command()
def study(
    recipe: Annotated[Path, typer.Argument(help="Study recipe YAML, e.g. recipes/study.yaml")],
    dry_run: Annotated[
        bool,
        typer.Option(help="Print the variants, their stages, what is shared, and a time estimate"),
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override any recipe key: dotted.key=YAML value, repeatable"),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Run every stage afresh in an emptied directory (once per study)")
    ] = False,
    tokens_per_s: Annotated[
        float | None, typer.Option(help="--dry-run: SFT training tokens/s to assume (default 125)")
    ] = None,
) -> None:
    """Run a recipe's variants one after another (shared stages once), then one report."""
    from zephyr.study import run_study

    out = run_study(recipe, sets=set_, force=force, dry_run=dry_run, tokens_per_s=tokens_per_s)
    if out is not None:
        Console().print(f"study: {out}")


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
    """Entry point: user errors print one sentence and exit 2 (Ctrl-C: 130), never a traceback."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    limit_heap_growth()  # long studies and servers: freed tensors go back to the system
    with exit_on_error():
        app()


if __name__ == "__main__":
    main()
