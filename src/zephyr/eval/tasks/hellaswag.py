"""HellaSwag (validation), lm-eval's `hellaswag` task: acc and acc_norm, 0-shot by default.

Data: `hellaswag/hellaswag_val_full.txt.bz2`, 6 lines per item (`label: ctx`, gold, 4 endings),
cleaned by its converter much like lm-eval's `preprocess`. We apply lm-eval's `preprocess` again
(strip, ` [title]` -> `. `, drop `[...]`, collapse double spaces) and redo the one step the file
cannot carry: lm-eval builds the query as `ctx_a + " " + ctx_b.capitalize()`, and the file has
`ctx_a ctx_b` joined, so we capitalize the last sentence of the context when it starts lowercase
(ActivityNet items: `... on a roof. he` -> `... on a roof. He`).
"""

from __future__ import annotations

import bz2
import random
import re

from zephyr.errors import ZephyrError
from zephyr.eval import multiple_choice as mc
from zephyr.eval.task import EvalConfig, TaskResult

FILE = ("hellaswag", "hellaswag_val_full.txt.bz2")


def preprocess(text: str) -> str:
    """lm-eval `tasks/hellaswag/utils.py:preprocess`, verbatim."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def capitalize_last_sentence(ctx: str) -> str:
    """Redo lm-eval's `ctx_b.capitalize()`: ctx_b is the lowercase start of the last sentence."""
    head, sep, last = ctx.rpartition(". ")
    if not sep:  # no sentence break after the "label: " prefix: ctx_b starts after ": "
        head, sep, last = ctx.partition(": ")
    if last[:1].islower():
        return head + sep + last.capitalize()
    return ctx


def load(cfg: EvalConfig) -> list[mc.MCItem]:
    path = mc.data_file(cfg, *FILE)
    lines = bz2.open(path, "rt", encoding="utf-8").read().split("\n")
    items = []
    for k in range(0, len(lines) - 5, 6):
        ctx, label, *endings = lines[k : k + 6]
        if label.strip() not in {"0", "1", "2", "3"}:
            raise ZephyrError(
                f"{path}: item {k // 6} has label {label!r}; expected 0-3 (6 lines per item)"
            )
        items.append(
            mc.MCItem(
                id=f"hellaswag-{k // 6}",
                context=preprocess(capitalize_last_sentence(ctx)),
                choices=[preprocess(e) for e in endings],
                gold=int(label),
            )
        )
    return items


def fewshot_prefix(pool: list[mc.MCItem], item: mc.MCItem, k: int, rng: random.Random) -> str:
    """lm-eval rendering: `query + " " + gold ending + "\\n\\n"` per shot (shots drawn per item)."""
    shots = [pool[i] for i in rng.sample(range(len(pool)), k + 1) if pool[i].id != item.id][:k]
    return "".join(f"{s.context} {s.choices[s.gold]}\n\n" for s in shots)


def run(scorer, cfg: EvalConfig) -> TaskResult:
    pool = load(cfg)
    items = mc.sample(pool, cfg.limit, cfg.seed)
    k = cfg.num_fewshot or 0
    if k:
        # no train split here: shots come from other validation items, seeded (lm-eval uses train)
        rng = random.Random(1234 + cfg.seed)
        items = [
            mc.MCItem(it.id, fewshot_prefix(pool, it, k, rng) + it.context, it.choices, it.gold)
            for it in items
        ]
    lls = mc.score(scorer, items)
    shots = f"{k}-shot (shots: other val items)" if k else "0-shot"
    protocol = (
        f"{shots}, lm-eval hellaswag: `label: ctx` + ` ending`, val split; "
        "acc = argmax loglik, acc_norm = argmax loglik/len(ending chars)"
    )
    return mc.result("hellaswag", items, lls, protocol, cfg)
