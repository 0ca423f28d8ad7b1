"""A cheap identity of a local model (file or directory) for stage keys and the eval cache: small
files (configs, tokenizer) by content, large ones (weights) by size and modification time, so a
retrained or replaced model changes the key without hashing gigabytes on every run."""

from __future__ import annotations

from pathlib import Path

from zephyr.io import sha256_file, sha256_json
from zephyr.models import EMBEDDED

SMALL = 1 << 20  # files up to 1 MiB are hashed by content
SKIP_DIRS = {"checkpoints", ".git"}  # a run's resumable state is not part of the model


def path_fingerprint(path: str | Path) -> str:
    """Identity of a file or a directory tree ('' when the path does not exist)."""
    p = Path(path).expanduser()
    if not p.exists():
        return ""
    if p.is_file():
        files = {p.name: p}
    else:
        files = {
            str(f.relative_to(p)): f
            for f in sorted(p.rglob("*"))
            if f.is_file() and not SKIP_DIRS & set(f.relative_to(p).parts[:-1])
        }
    entries = {}
    for rel, f in files.items():
        st = f.stat()
        entries[rel] = sha256_file(f) if st.st_size <= SMALL else [st.st_size, st.st_mtime_ns]
    return sha256_json(entries)[:16]


def model_fingerprint(spec: str) -> str:
    """A local model spec's fingerprint; '' for a known name or a hub id (nothing local to hash)."""
    if spec in EMBEDDED:
        return ""
    return path_fingerprint(spec)
