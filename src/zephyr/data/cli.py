"""CLI commands of the data stage: `zephyr data build`, `zephyr data inspect` (+ `zephyr data synth`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zephyr.recipe import DEFAULT_DATA_ROOT

data_app = typer.Typer(
    help="Build and inspect the training data (SFT, preference, MCQA).", no_args_is_help=True
)


@data_app.command()
def build(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML with a `data:` section")],
    out: Annotated[
        Path,
        typer.Option(
            help="Output folder for the JSONL files and manifest.json (built in a temporary "
            "folder, then swapped in whole: nothing of an earlier build survives)"
        ),
    ],
    data_root: Annotated[
        Path | None, typer.Option(help=f"Folder laid out like {DEFAULT_DATA_ROOT}")
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="Fail on the first malformed row (file:line)")
    ] = False,
) -> None:
    """Build the data a recipe describes into OUT (no pipeline cache)."""
    from rich.console import Console

    from zephyr.data import manifest
    from zephyr.data.build import build as run_build
    from zephyr.data.build import parse_config
    from zephyr.pipeline import load_recipe
    from zephyr.recipe import StageContext

    overrides = {"data_root": str(data_root.resolve())} if data_root else None
    rec = load_recipe(recipe, overrides)
    cfg = parse_config(rec.data, f"{recipe}: data")
    cfg.strict = cfg.strict or strict
    ctx = StageContext("data", rec, rec.data, out, {}, recipe.resolve().parent)
    seed = rec.seed if cfg.seed is None else cfg.seed
    console = Console()
    result = run_build(cfg, ctx.data_root, out, seed, console)
    manifest.show(result, console)
    console.print(f"[green]✓[/] data written to {out} in {result['seconds']}s")


@data_app.command()
def inspect(
    out: Annotated[Path, typer.Argument(help="A data output folder (holds manifest.json)")],
) -> None:
    """Show a data build's manifest: rows per source, drops by reason, decontamination, outputs."""
    from zephyr.data import manifest

    manifest.show(manifest.load(out))


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the top-level app."""
    try:
        from zephyr.data.synth.cli import register_synth
    except ModuleNotFoundError as e:  # the generator's CLI lands separately; other errors surface
        if e.name not in ("zephyr.data.synth", "zephyr.data.synth.cli"):
            raise
        register_synth = None
    if register_synth is not None:
        register_synth(data_app)
    app.add_typer(data_app, name="data")
