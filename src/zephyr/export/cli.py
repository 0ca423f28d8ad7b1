"""CLI of the export stage: `zephyr export MODEL --format gguf --quant f16|q8_0|q4_0|q4_k_m`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zephyr.errors import ZephyrError, exit_on_error


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the top-level app."""

    @app.command()
    def export(
        model: Annotated[
            str,
            typer.Argument(help="Model spec: smollm2-135m, a run's model/ dir, an adapter dir"),
        ],
        format: Annotated[str, typer.Option("--format", help="Output format: gguf")] = "gguf",
        quant: Annotated[str, typer.Option(help="f16 | q8_0 | q4_0 | q4_k_m")] = "q8_0",
        out: Annotated[
            Path | None,
            typer.Option(
                help="GGUF file to write (default: gguf/<name>-<quant>.gguf by the model)"
            ),
        ] = None,
        system: Annotated[
            str | None, typer.Option(help="System prompt for the Modelfile (default: the tutor's)")
        ] = None,
    ) -> None:
        """Export a model to GGUF (llama.cpp's converter and quantizer) with an Ollama Modelfile."""
        from rich.console import Console

        from zephyr.export.gguf import FORMATS, export_gguf

        with exit_on_error():
            if format not in FORMATS:
                raise ZephyrError(
                    f"unknown --format '{format}'; choose one of {', '.join(FORMATS)}"
                )
            done = export_gguf(model, quant=quant, out=out, system=system)
        console = Console()
        console.print(f"wrote {done.gguf} ({done.bytes / 2**20:.1f} MiB, {done.quant})")
        console.print(f"wrote {done.modelfile}  (ollama create <name> -f {done.modelfile})")
