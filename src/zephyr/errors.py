"""The one exception type the CLI turns into a single clear sentence (no traceback), and the one
place that turns it (and Ctrl-C) into an exit code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class ZephyrError(Exception):
    """A user-facing error: the message names the bad input and what to do about it."""


@contextmanager
def exit_on_error() -> Iterator[None]:
    """A ZephyrError prints one red line and exits 2; Ctrl-C prints `interrupted` and exits 130.

    `zephyr.cli.main` wraps the whole app in it; commands that tests drive through typer's
    CliRunner (which bypasses `main`) wrap their body in it too. SystemExit, not typer.Exit: it
    works both inside a command and around the app.
    """
    from rich.console import Console

    try:
        yield
    except ZephyrError as e:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {e}")
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        Console(stderr=True, soft_wrap=True).print("[yellow]interrupted[/]")
        raise SystemExit(130) from None
