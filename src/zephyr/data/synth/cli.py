"""`zephyr data synth`: write the synthetic STEM kinds as JSONL plus a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def synth(
    out: Annotated[Path, typer.Option(help="Output folder for <kind>.jsonl and manifest.json")],
    n_per_family: Annotated[int, typer.Option(help="Rows per family and kind")] = 200,
    seed: Annotated[int, typer.Option(help="Seed: same seed, same rows")] = 0,
    families: Annotated[
        str | None, typer.Option(help="Comma-separated families (default: all)")
    ] = None,
    kinds: Annotated[str, typer.Option(help="Comma-separated kinds")] = "sft,pref,mcqa,test",
) -> None:
    """Generate seeded synthetic STEM data (worked solutions, preference pairs, MCQA, test set)."""
    from zephyr.data.synth.write import write_synth

    manifest = write_synth(out, n_per_family, seed, _split(families), _split(kinds) or [])
    for kind, counts in manifest["counts"].items():
        typer.echo(f"{kind:5s} {sum(counts.values()):6d} rows -> {out / f'{kind}.jsonl'}")


def register_synth(data_app: typer.Typer) -> None:
    """Add `synth` to the `zephyr data` command group."""
    data_app.command("synth")(synth)
