"""Helpers shared by the generation tasks (gsm8k, synthetic, bertscore, mcqa_letter, reward_accuracy).

- `subset`: a seeded sample of `limit` items, each keeping its original index;
- `chat_prompt`: a chat-template prompt ending with the assistant header, as training renders it;
- `generate`: greedy completions through the scorer, cut at the stop strings, memoised per model so
  that `bertscore` on the synthetic set reuses the generations `synthetic` already made;
- `write_log`: per-item JSONL logs when `cfg.log_dir` is set.
"""

from __future__ import annotations

import random
import weakref
from pathlib import Path
from typing import Any

from zephyr.errors import ZephyrError
from zephyr.io import read_jsonl, write_jsonl

# model object -> {(prompt, max_new_tokens, stop): completion}; weak keys: freed with the model
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def subset(items: list, limit: int | None, seed: int) -> list[tuple[int, Any]]:
    """(original index, item) of `limit` items drawn with a seeded sample, kept in file order.

    The same draw as the log-likelihood tasks (zephyr.eval.multiple_choice.sample)."""
    if limit is None or limit >= len(items):
        return list(enumerate(items))
    if limit <= 0:
        raise ZephyrError(f"--limit must be a positive number of items, got {limit}")
    picked = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [(i, items[i]) for i in picked]


def read_rows(path: Path, what: str) -> list[dict]:
    if not Path(path).is_file():
        raise ZephyrError(f"{what} not found at {path}; pass --data-dir or the task's file option")
    rows = read_jsonl(path)
    if not rows:
        raise ZephyrError(f"{path} is empty; {what} needs at least one row")
    return rows


def chat_prompt(tokenizer: Any, messages: list[dict]) -> str:
    """The prompt as training renders it: chat template with the assistant header appended."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def cut(text: str, stop: list[str]) -> str:
    """Text up to the first stop string (lm-eval's `generate_until` post-processing)."""
    for s in stop:
        if s:
            text = text.split(s)[0]
    return text


def use_calculator(scorer: Any, cfg: Any) -> bool:
    """Task option `calculator` (true/false); unset: whether the model was trained with it."""
    opt = cfg.options.get("calculator")
    return bool(getattr(scorer, "calculator", False)) if opt is None else bool(opt)


def generate(
    scorer: Any, prompts: list[str], max_new_tokens: int, stop: list[str], calculator: bool = False
) -> list[str]:
    """Greedy completions, cut at `stop`; prompts already generated for this model are reused.

    `calculator`: `<<expr=` is completed by zephyr.tutor.calculator (the text keeps the
    annotations; scoring reads the `Answer:` line)."""
    model = getattr(scorer, "memo_key", None) or getattr(scorer, "model", scorer)
    try:
        cache = _CACHE.setdefault(model, {})
    except TypeError:  # not weak-referenceable: no memo
        cache = {}
    key = (max_new_tokens, tuple(stop), calculator)
    todo = [p for p in dict.fromkeys(prompts) if (p, key) not in cache]
    if todo:
        extra = {"calculator": True} if calculator else {}
        outs = scorer.generate(todo, max_new_tokens=max_new_tokens, stop=list(stop), **extra)
        for p, o in zip(todo, outs, strict=True):
            cache[(p, key)] = cut(o, stop)
    return [cache[(p, key)] for p in prompts]


def write_log(cfg: Any, task: str, rows: list[dict]) -> None:
    if cfg.log_dir is not None:
        write_jsonl(Path(cfg.log_dir) / f"{task}.jsonl", rows)


def mean(xs: list[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")
