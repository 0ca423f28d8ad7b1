"""`zephyr export MODEL --format gguf --quant Q`: llama.cpp's converter, then its quantizer.

Any model Zephyr produced becomes one GGUF file plus an Ollama Modelfile beside it:
- a merged model dir (`runs/<run>/dpo/model`), the base (`smollm2-135m`), a local HF dir or a
  `.gguf`: converted as they are; an adapter dir: merged into its base first (in fp32);
- `convert_hf_to_gguf.py` (llama.cpp's own, see zephyr.export.converter) writes f16, or f32 as
  the input of `llama_model_quantize` for q8_0 / q4_0 / q4_k_m, so the quantizer starts from the
  exact weights;
- every output is written to a temporary name in the output folder, then renamed.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from zephyr.errors import ZephyrError
from zephyr.io import atomic_write

# quant -> llama_ftype (llama.h); f16 comes straight from the converter
QUANTS: dict[str, int | None] = {"f16": None, "q8_0": 7, "q4_0": 2, "q4_k_m": 15}
FORMATS = ("gguf",)
CACHE_MOST = 8  # GGUFs kept under $ZEPHYR_HOME/gguf for the llama.cpp engine


@dataclass
class Exported:
    gguf: Path
    modelfile: Path
    quant: str
    bytes: int


def check_quant(quant: str) -> str:
    q = quant.lower()
    if q not in QUANTS:
        raise ZephyrError(f"unknown --quant '{quant}'; choose one of {', '.join(QUANTS)}")
    return q


def model_label(spec: str) -> str:
    """A short name for file names: `runs/demo/dpo/model` -> `dpo`, `x.gguf` -> `x`."""
    p = Path(spec)
    if p.name == "model" and p.parent.name:
        return p.parent.name
    return p.stem if p.suffix == ".gguf" else (p.name or str(spec))


def default_out(spec: str, quant: str) -> Path:
    """`<model dir>/../gguf/<label>-<quant>.gguf` for a local model, `./gguf/...` otherwise."""
    p = Path(spec).expanduser()
    base = p.parent if p.exists() else Path.cwd()
    return base / "gguf" / f"{model_label(spec)}-{quant}.gguf"


def hf_source(spec: str, work: Path) -> Path:
    """A directory the converter can read: the resolved model dir, or an adapter merged into `work`."""
    from zephyr.models import load_model, resolve

    path = Path(resolve(spec))
    if not path.is_dir():
        raise ZephyrError(f"'{spec}' is a hub id; download it to a local directory first")
    if (path / "quantization.json").exists():
        raise ZephyrError(
            f"{path} is a Zephyr quantized artifact (torch-only weights); export the model/ dir "
            "it was quantized from and pick a GGUF --quant instead"
        )
    if not (path / "adapter_config.json").exists():
        return path
    model, tok = load_model(str(path), dtype="float32")
    model.save_pretrained(work, safe_serialization=True)
    tok.save_pretrained(work)
    return work


def convert(src: Path, out: Path, outtype: str) -> None:
    """Run llama.cpp's convert_hf_to_gguf.py (its own gguf-py first on the path)."""
    from zephyr.export.converter import SCRIPT, converter_dir

    tools = converter_dir()
    cmd = [sys.executable, str(tools / SCRIPT), str(src), "--outfile", str(out)]
    cmd += ["--outtype", outtype]
    # the script puts its own gguf-py first (newer than the PyPI one) unless this is set
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tools)
    if done.returncode != 0 or not out.is_file():
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-4:])
        raise ZephyrError(
            f"llama.cpp's converter could not convert {src} (exit {done.returncode}): {tail}; "
            "llama.cpp supports the architectures listed by `convert_hf_to_gguf.py --print-supported-models`"
        )


def quantize(src: Path, out: Path, quant: str, threads: int | None = None) -> None:
    """llama.cpp's quantizer (`llama_model_quantize`, what `llama-quantize` runs)."""
    import llama_cpp
    from llama_cpp import _logger

    _logger.set_verbose(False)  # the quantizer's per-tensor log goes nowhere; errors still print
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTS[quant]
    params.nthread = threads or 0  # 0: the number of hardware threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), ctypes.byref(params))
    if rc != 0 or not out.is_file():
        raise ZephyrError(f"llama.cpp could not quantize {src} to {quant} (code {rc})")


def export_gguf(
    spec: str,
    quant: str = "f16",
    out: str | Path | None = None,
    system: str | None = None,
    threads: int | None = None,
) -> Exported:
    """Write `<out>.gguf` and `<out stem>.Modelfile` for `spec`; both appear only when complete."""
    from zephyr.export.modelfile import modelfile_text

    quant = check_quant(quant)
    target = Path(out).expanduser() if out else default_out(spec, quant)
    if target.suffix != ".gguf":
        raise ZephyrError(f"--out {target} must end in .gguf")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.stem}.", dir=target.parent))
    try:
        src = hf_source(spec, work / "merged")
        staged = work / target.name
        if QUANTS[quant] is None:
            convert(src, staged, quant)
        else:
            convert(src, work / "f32.gguf", "f32")
            quantize(work / "f32.gguf", staged, quant, threads)
        template = read_chat_template(staged)
        os.replace(staged, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    modelfile = target.with_suffix(".Modelfile")
    with atomic_write(modelfile) as f:
        f.write(modelfile_text(target.name, template, system))
    return Exported(target, modelfile, quant, target.stat().st_size)


def read_chat_template(gguf: Path) -> str | None:
    """The `tokenizer.chat_template` a GGUF carries (None when it has none)."""
    from gguf import GGUFReader

    field = GGUFReader(str(gguf)).fields.get("tokenizer.chat_template")
    return None if field is None else str(field.contents())


def _fingerprint(path: Path) -> str:
    """Names, sizes and modification times of a model dir's files (cheap; changes on rewrite)."""
    import hashlib

    h = hashlib.sha256(str(path.resolve()).encode())
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(path)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def gguf_for(spec: str, quant: str = "f16") -> Path:
    """A GGUF of `spec` for the llama.cpp engine: the file itself, or an export cached once.

    Cached under $ZEPHYR_HOME/gguf/, keyed by the model dir's files, so a retrained model is
    exported again and an unchanged one is not.
    """
    from zephyr.models import resolve, zephyr_home

    quant = check_quant(quant)
    p = Path(spec).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return p
    src = Path(resolve(spec))
    if not src.is_dir():
        raise ZephyrError(f"'{spec}' is not a local model; download it first")
    cached = zephyr_home() / "gguf" / f"{model_label(spec)}-{_fingerprint(src)}-{quant}.gguf"
    if not cached.is_file():
        export_gguf(spec, quant=quant, out=cached)
        _prune(cached.parent, keep=cached)
    return cached


def _prune(folder: Path, keep: Path, most: int = CACHE_MOST) -> None:
    """Keep the `most` newest cached GGUFs (retrained and test models leave old ones behind)."""
    old = sorted(folder.glob("*.gguf"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in [p for p in old if p != keep][most - 1 :]:
        path.unlink(missing_ok=True)
        path.with_suffix(".Modelfile").unlink(missing_ok=True)
