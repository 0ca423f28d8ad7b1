"""ARC-Challenge / ARC-Easy (test split), lm-eval's `arc_challenge` / `arc_easy`: acc and acc_norm.

Prompt `Question: {stem}\\nAnswer:`, continuations ` {choice text}`, gold = index of `answerKey`
among the choice labels (labels may be A-E or 1-5). 0-shot by default; n-shot renders lm-eval's
`question + " " + answer + "\\n\\n"` per shot, shots drawn (seeded) from the train split.
"""

from __future__ import annotations

import json
import random

from zephyr.errors import ZephyrError
from zephyr.eval import multiple_choice as mc
from zephyr.eval.task import EvalConfig, TaskResult

FOLDERS = {"arc_challenge": "ARC-Challenge", "arc_easy": "ARC-Easy"}


def load(cfg: EvalConfig, task: str, split: str = "Test") -> list[mc.MCItem]:
    folder = FOLDERS[task]
    path = mc.data_file(cfg, "arc", folder, f"{folder}-{split}.jsonl")
    items = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        labels = [c["label"] for c in row["question"]["choices"]]
        if row["answerKey"] not in labels:
            raise ZephyrError(f"{path}:{i}: answerKey {row['answerKey']!r} is not one of {labels}")
        items.append(
            mc.MCItem(
                id=row["id"],
                context=f"Question: {row['question']['stem']}\nAnswer:",
                choices=[c["text"] for c in row["question"]["choices"]],
                gold=labels.index(row["answerKey"]),
            )
        )
    return items


def run(scorer, cfg: EvalConfig) -> TaskResult:
    task = cfg.task if cfg.task in FOLDERS else "arc_challenge"
    items = mc.sample(load(cfg, task), cfg.limit, cfg.seed)
    k = cfg.num_fewshot or 0
    if k:
        train = load(cfg, task, "Train")
        rng = random.Random(1234 + cfg.seed)
        items = [
            mc.MCItem(
                it.id,
                "".join(f"{s.context} {s.choices[s.gold]}\n\n" for s in rng.sample(train, k))
                + it.context,
                it.choices,
                it.gold,
            )
            for it in items
        ]
    lls = mc.score(scorer, items)
    protocol = (
        f"{k}-shot, lm-eval {task}: `Question: q\\nAnswer:` + ` choice`, test split; "
        "acc = argmax loglik, acc_norm = argmax loglik/len(choice chars)"
    )
    return mc.result(task, items, lls, protocol, cfg)
