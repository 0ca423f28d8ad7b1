"""Run directories: one writer at a time (a lock naming its holder), and `--force` as a fresh
directory (the old one moved aside atomically, then removed)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from zephyr.errors import ZephyrError

LOCK_NAME = ".zephyr.lock"
_HELD: dict[Path, int] = {}  # lock path -> depth: a study holds the lock its pipelines take again


def _holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        return json.loads(os.read(fd, 65536).decode() or "{}")
    except (ValueError, UnicodeDecodeError):
        return {}


@contextlib.contextmanager
def lock(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir/.zephyr.lock` (flock: the kernel releases it when the holder dies, so a stale
    file of a dead process is simply taken over); a second holder gets a message naming the first."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = (run_dir / LOCK_NAME).resolve()
    if path in _HELD:
        _HELD[path] += 1
        try:
            yield
        finally:
            _HELD[path] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        h = _holder(fd)
        os.close(fd)
        raise ZephyrError(
            f"{run_dir} is in use by another zephyr run (pid {h.get('pid', '?')} on "
            f"{h.get('host', '?')}, started {h.get('started', '?')}: {h.get('command', '?')}); "
            "wait for it to finish, or give this run another `name` or `out`"
        ) from None
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(sys.argv),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    _HELD[path] = 1
    try:
        yield
    finally:
        del _HELD[path]
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def fresh_dir(path: Path) -> None:
    """Empty `path` for a fresh run: rename it aside (atomic, so no reader ever sees old files
    beside new ones), then delete the aside copy; leftovers of an interrupted delete go too."""
    for old in path.parent.glob(f".{path.name}.old-*"):
        shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        aside = path.with_name(f".{path.name}.old-{time.time_ns()}")
        os.replace(path, aside)
        shutil.rmtree(aside, ignore_errors=True)
    path.mkdir(parents=True)
