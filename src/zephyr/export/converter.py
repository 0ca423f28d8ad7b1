"""Where llama.cpp's `convert_hf_to_gguf.py` comes from: the sdist of the installed llama-cpp-python.

The wheel of llama-cpp-python holds the compiled library and its bindings, not llama.cpp's Python
converter; its source distribution vendors the whole llama.cpp tree, converter included. `make
setup` runs `python -m zephyr.export.converter`, which downloads that sdist with pip (the same
version as the installed bindings, so converter and quantizer agree on the GGUF format) and keeps
`convert_hf_to_gguf.py`, `conversion/` and `gguf-py/` under `<venv>/share/zephyr/`.

    python -m zephyr.export.converter     # prints the directory, fetching it when missing
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

from zephyr.errors import ZephyrError
from zephyr.io import atomic_dir

PACKAGE = "llama-cpp-python"
SCRIPT = "convert_hf_to_gguf.py"
# what the converter imports, relative to the vendored llama.cpp tree
MEMBERS = (SCRIPT, "conversion/", "gguf-py/", "LICENSE")
ENV = "ZEPHYR_LLAMACPP_CONVERTER"  # a llama.cpp checkout to use instead


def llamacpp_version() -> str:
    """The installed llama-cpp-python version; a clear error when it is missing."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        raise ZephyrError(
            "llama-cpp-python is not installed; run `make setup` or "
            "`pip install 'zephyr-tutor[llamacpp]'` (it compiles llama.cpp: 6-15 minutes on 2 cores)"
        ) from None


def _candidates(version: str) -> list[Path]:
    from zephyr.models import zephyr_home

    name = f"llama.cpp-{version}"
    return [Path(sys.prefix) / "share" / "zephyr" / name, zephyr_home() / name]


def converter_dir(fetch: bool = True) -> Path:
    """A directory holding `convert_hf_to_gguf.py` for the installed llama-cpp-python.

    Looked up in $ZEPHYR_LLAMACPP_CONVERTER, then `<venv>/share/zephyr/`, then $ZEPHYR_HOME;
    fetched (pip download of the sdist) when absent and `fetch` is set.
    """
    if os.environ.get(ENV):
        path = Path(os.environ[ENV]).expanduser()
        if not (path / SCRIPT).is_file():
            raise ZephyrError(f"${ENV}={path} has no {SCRIPT}; point it at a llama.cpp checkout")
        return path
    version = llamacpp_version()
    for path in _candidates(version):
        if (path / SCRIPT).is_file():
            return path
    if not fetch:
        raise ZephyrError(
            f"llama.cpp's {SCRIPT} is not set up; run `python -m zephyr.export.converter`"
        )
    return fetch_converter(version)


def _writable(path: Path) -> bool:
    probe = path
    while not probe.exists():
        probe = probe.parent
    return os.access(probe, os.W_OK)


def fetch_converter(version: str) -> Path:
    """Download llama-cpp-python's sdist with pip and keep the converter's files (atomic)."""
    dest = next((p for p in _candidates(version) if _writable(p.parent)), None)
    if dest is None:
        raise ZephyrError(f"no writable place for llama.cpp's converter ({_candidates(version)})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="zephyr-sdist-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        cmd += ["-q", "-d", tmp, f"{PACKAGE}=={version}"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        sdists = list(Path(tmp).glob("*.tar.gz"))
        if not sdists:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise ZephyrError(
                f"could not download the {PACKAGE}=={version} sdist for llama.cpp's converter "
                f"({' '.join(tail)[:300]}); run `make setup` with network access, or set ${ENV}"
            )
        with atomic_dir(dest) as staging:  # a half-extracted converter never replaces a good one
            _extract(sdists[0], staging)
    return dest


def _extract(sdist: Path, out: Path) -> None:
    """Copy the converter's files out of `<pkg>/vendor/llama.cpp/` in the sdist."""
    with tarfile.open(sdist) as tar:
        found = False
        for member in tar.getmembers():
            parts = member.name.split("/", 1)
            if len(parts) < 2 or not parts[1].startswith("vendor/llama.cpp/"):
                continue
            rel = parts[1][len("vendor/llama.cpp/") :]
            if not member.isfile() or not any(
                rel == m or (m.endswith("/") and rel.startswith(m)) for m in MEMBERS
            ):
                continue
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as dst:  # type: ignore[union-attr]
                shutil.copyfileobj(src, dst)
            found = found or rel == SCRIPT
    if not found:
        raise ZephyrError(f"{sdist.name} has no vendor/llama.cpp/{SCRIPT}")


if __name__ == "__main__":
    from zephyr.errors import exit_on_error

    with exit_on_error():
        print(converter_dir())
