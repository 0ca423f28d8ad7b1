"""`zephyr report RUN... --out DIR`: the comparison report of one or more runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zephyr.errors import exit_on_error


def register(app: typer.Typer) -> None:
    """Add `zephyr report` to the top-level app."""

    @app.command("report")
    def report_cmd(
        runs: Annotated[
            list[Path],
            typer.Argument(
                help="Pipeline run dirs (runs/<name>), eval stage dirs, or results.json files"
            ),
        ],
        out: Annotated[
            Path, typer.Option("--out", help="Folder for report.md, report.html, plots/")
        ] = Path("report"),
        title: Annotated[str, typer.Option(help="Report title")] = "Zephyr report",
        plots: Annotated[bool, typer.Option(help="Draw the eval and training plots")] = True,
        hide: Annotated[
            list[str] | None, typer.Option(help="task/metric glob kept out of Table 1 (repeatable)")
        ] = None,
        name: Annotated[
            list[str] | None,
            typer.Option(
                "--name",
                help="A label per run, in the runs' order (repeatable), e.g. smollm2/D_S/cosine",
            ),
        ] = None,
    ) -> None:
        """Turn eval results (+ training logs) into report.md and a self-contained report.html."""
        from rich.console import Console

        from zephyr.eval.report import HIDE, write_report

        with exit_on_error():
            paths = write_report(
                runs,
                out,
                title=title,
                plots=plots,
                hide=hide if hide else HIDE,
                run_names=name or None,
            )
        Console().print(f"wrote {paths['md']} and {paths['html']}")
