"""Pick the generation engine for `zephyr chat`, `zephyr serve` and `zephyr eval --engine`.

- `llamacpp`: the model's GGUF (exported once, cached) in `LlamaCppEngine`; concurrent requests
  share its batches;
- `hf`: the transformers model (`zephyr.models.load_model`), one request at a time;
- `auto` (the default): llama.cpp when `llama_cpp` imports and the model converts, else hf with
  a one-line note saying why.

Either way the caller gets `(model, tokenizer, engine name)`, and passes `model` wherever an HF
model goes (`tutor.generate.generate`, `tutor.mcqa.answer_mcq`): they hand over to the engine.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any

from zephyr.errors import ZephyrError

ENGINES = ("auto", "llamacpp", "hf")
log = logging.getLogger("zephyr.tutor")


@dataclass
class EngineOptions:
    """`--engine`, and the llama.cpp settings (`--quant`, `--parallel`, `--ctx`, `--threads`)."""

    engine: str = "auto"
    quant: str = "f16"
    parallel: int = 8
    ctx: int = 2048
    threads: int | None = None


def llamacpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def tokenizer_for(spec: str) -> Any:
    """The HF tokenizer (chat template, ids) without loading weights; a bare .gguf has its own."""
    from pathlib import Path

    from zephyr.models import fix_pad_token, load_tokenizer

    p = Path(spec).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        from transformers import AutoTokenizer

        return fix_pad_token(AutoTokenizer.from_pretrained(p.parent, gguf_file=p.name))
    return load_tokenizer(spec)


def load_llamacpp(spec: str, opts: EngineOptions) -> tuple[Any, Any]:
    from zephyr.export.gguf import gguf_for
    from zephyr.tutor.engine_llamacpp import LlamaCppEngine

    if not llamacpp_available():
        raise ZephyrError(
            "--engine llamacpp needs llama-cpp-python; run `make setup` or "
            "`pip install 'zephyr-tutor[llamacpp]'`, or pass --engine hf"
        )
    if opts.parallel < 1 or opts.ctx < 16:
        raise ZephyrError(
            f"--parallel must be >= 1 and --ctx >= 16, got {opts.parallel}, {opts.ctx}"
        )
    tok = tokenizer_for(spec)
    engine = LlamaCppEngine(
        gguf_for(spec, opts.quant), parallel=opts.parallel, ctx=opts.ctx, threads=opts.threads
    )
    return engine, tok


def load_engine(spec: str, opts: EngineOptions, dtype: str = "float32") -> tuple[Any, Any, str]:
    """(model or engine, tokenizer, "llamacpp" | "hf") for `spec`."""
    from zephyr.models import load_model

    if opts.engine not in ENGINES:
        raise ZephyrError(f"unknown --engine '{opts.engine}'; choose one of {', '.join(ENGINES)}")
    if opts.engine == "llamacpp" or (opts.engine == "auto" and llamacpp_available()):
        try:
            model, tok = load_llamacpp(spec, opts)
            return model, tok, "llamacpp"
        except ZephyrError as e:
            if opts.engine == "llamacpp":
                raise
            log.warning("llama.cpp engine unavailable for %s (%s); using transformers", spec, e)
    model, tok = load_model(spec, dtype=dtype)
    return model, tok, "hf"
