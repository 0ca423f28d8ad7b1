"""Small file helpers: atomic writes (temp name + rename) of files and directories, JSON/JSONL,
hashing."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from zephyr.errors import ZephyrError


@contextlib.contextmanager
def atomic_write(
    path: str | Path, mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[Any]:
    """Write to a temporary file beside `path`, then rename: an interrupted write leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
        f.write("\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise ZephyrError(f"file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ZephyrError(f"{path} is not valid JSON (line {e.lineno}: {e.msg})") from None


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_write(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise ZephyrError(f"file not found: {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ZephyrError(f"{path}:{i} is not valid JSON ({e.msg})") from None
    return rows


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """A stable hash of a JSON-able object (keys sorted), for cache keys."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one line and flush: metrics logs survive a kill mid-run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        f.flush()


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries (the names of files renamed into it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _siblings(path: Path, tag: str) -> list[Path]:
    return [p for p in path.parent.glob(f".{glob.escape(path.name)}.{tag}-*") if p.is_dir()]


def recover_dir(path: str | Path) -> None:
    """Repair what a kill inside `swap_dir` left: when `path` is missing but the old copy was moved
    aside, put it back; then delete every leftover `.NAME.old-*` and `.NAME.tmp-*` sibling."""
    path = Path(path)
    olds = sorted(_siblings(path, "old"), key=lambda p: p.stat().st_mtime)
    if olds and not path.exists():
        os.replace(olds.pop(), path)
    for p in olds + _siblings(path, "tmp"):
        shutil.rmtree(p, ignore_errors=True)


def swap_dir(new: str | Path, path: str | Path) -> None:
    """Put the finished directory `new` in place of `path` (which may exist): two renames, so a
    reader sees the old tree or the new one; a kill between them is repaired by `recover_dir`."""
    new, path = Path(new), Path(path)
    fsync_dir(new)
    old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
    if path.exists():
        os.replace(path, old)
    os.replace(new, path)
    fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory in a fresh temporary sibling, then swap it in for `path`: nothing of an
    earlier `path` survives, and an interrupted build leaves the earlier one untouched.

        with atomic_dir(out) as tmp:
            write_jsonl(tmp / "rows.jsonl", rows)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        swap_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
