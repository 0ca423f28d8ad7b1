"""The chat template a tokenizer renders conversations with, and the recipe's `chat_template:` key.

A model whose tokenizer has no template (Gemma 3 270M base: its GGUF ships none) gets ChatML,
each turn closed by the tokenizer's own EOS so the trained model stops where generation stops
(for SmolLM2, EOS is `<|im_end|>`: exactly ChatML). The recipe key (or `--chat-template`)
replaces any template: `chatml`, a path to a Jinja file, or the Jinja text itself. Training saves
the tokenizer with its template, so every later stage (eval, quantize, chat, serve) renders alike.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from zephyr.errors import ZephyrError

NAMES = ("chatml",)
_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# set while a pipeline stage runs (the recipe's chat_template), read by zephyr.models.load_tokenizer;
# an environment variable so that the subprocesses a stage starts (quantize's compare) see it too
ENV = "ZEPHYR_CHAT_TEMPLATE"


def _adds_bos(tok: Any) -> bool:
    bos = getattr(tok, "bos_token_id", None)
    if bos is None:
        return False
    ids = tok("a")["input_ids"]
    return bool(ids) and ids[0] == bos


def chatml(tok: Any) -> str:
    """ChatML; led by BOS when the tokenizer adds one by default (Gemma needs it, as its own
    template writes it), since rendered text is tokenized without special tokens."""
    return ("{{ bos_token }}" if _adds_bos(tok) else "") + _CHATML


def resolve(value: str, tok: Any) -> str:
    """`chatml`, a path to a Jinja file, or Jinja text -> the template text."""
    if value in NAMES:
        return chatml(tok)
    if "{{" in value or "{%" in value:
        return value
    path = Path(value).expanduser()
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise ZephyrError(
        f"chat_template '{value}' is not a known name ({', '.join(NAMES)}), not Jinja text, "
        "and not an existing file; pass chatml, a .jinja file, or the template itself"
    )


def apply(tok: Any, override: str | None = None) -> Any:
    """Give `tok` its template: the override (argument, else the running stage's), else its own,
    else ChatML."""
    override = override or os.environ.get(ENV)
    if override:
        tok.chat_template = resolve(override, tok)
    elif not getattr(tok, "chat_template", None):
        tok.chat_template = chatml(tok)
    return tok


@contextlib.contextmanager
def overriding(value: str | None) -> Iterator[None]:
    """Every tokenizer loaded inside gets template `value` (nothing changes when it is None)."""
    if value is None:
        yield
        return
    before = os.environ.get(ENV)
    os.environ[ENV] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = before


def recipe_template(stage: Callable[[Any], None]) -> Callable[[Any], None]:
    """Decorate a pipeline stage `run(ctx)`: it loads tokenizers with the recipe's chat_template."""

    @functools.wraps(stage)
    def run(ctx: Any) -> None:
        value = getattr(ctx.recipe, "chat_template", None)
        if value and value not in NAMES and "{" not in value and ctx.path(value).is_file():
            value = str(ctx.path(value))  # a template file named relative to the recipe
        with overriding(value):
            stage(ctx)

    return run
