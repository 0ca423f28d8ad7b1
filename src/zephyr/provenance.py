"""What every stage records next to its outputs: config, package versions, input hashes."""

from __future__ import annotations

import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from zephyr.io import sha256_file

PACKAGES = (
    "zephyr-tutor",
    "torch",
    "transformers",
    "peft",
    "trl",
    "datasets",
    "accelerate",
    "torchao",
)


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def file_hashes(paths: list[str | Path]) -> dict[str, str]:
    return {str(p): sha256_file(p) for p in paths if Path(p).is_file()}


def record(config: Any, inputs: list[str | Path] | None = None, **extra: Any) -> dict:
    """A provenance block: config, versions, input hashes and a timestamp."""
    return {
        "config": config,
        "versions": versions(),
        "inputs": file_hashes(inputs or []),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
