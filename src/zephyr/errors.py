"""The one exception type the CLI turns into a single clear sentence (no traceback)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class ZephyrError(Exception):
    """A user-facing error: the message names the bad input and what to do about it."""


@contextmanager
def exit_on_error() -> Iterator[None]:
    """Inside a command: a ZephyrError prints one red line and exits 2.

    `zephyr.cli.main` does the same around the whole app; commands that tests drive through
    typer's CliRunner (which bypasses `main`) wrap their body in this too.
    """
    try:
        yield
    except ZephyrError as e:
        import typer
        from rich.console import Console

        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2) from None
