"""What the log-likelihood multiple-choice tasks share: items, seeded sampling, acc / acc_norm, logs.

Scoring follows lm-eval's `multiple_choice` output type (`lm_eval/api/task.py`): one request
`(context, " " + choice)` per choice; `acc` takes the argmax of the summed log-likelihoods,
`acc_norm` the argmax of log-likelihood divided by the character length of the choice (without
the leading space); ties go to the first choice (numpy argmax).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zephyr.errors import ZephyrError
from zephyr.eval.task import EvalConfig, TaskResult
from zephyr.io import write_jsonl


@dataclass
class MCItem:
    id: str
    context: str
    choices: list[str]
    gold: int
    meta: dict[str, Any] = field(default_factory=dict)


def data_file(cfg: EvalConfig, *parts: str) -> Path:
    """A file under the data dir, or a ZephyrError that says which and how to fix it."""
    path = Path(cfg.data_dir).joinpath(*parts)
    if not path.exists():
        raise ZephyrError(
            f"{cfg.task or 'eval'} needs {path}, which does not exist; pass --data-dir pointing at a "
            "folder laid out like ../shared/data"
        )
    return path


def sample(items: list, limit: int | None, seed: int) -> list:
    """`limit` items drawn with a seeded shuffle (kept in file order); all items when no limit."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit <= 0:
        raise ZephyrError(f"--limit must be a positive number of items, got {limit}")
    picked = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in picked]


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # first max, like numpy


def score(scorer: Any, items: list[MCItem], delimiter: str = " ") -> list[list[float]]:
    """Log-likelihood of every choice of every item, in one batched engine call."""
    requests = [(it.context, f"{delimiter}{c}") for it in items for c in it.choices]
    flat = scorer.loglikelihood(requests)
    out, k = [], 0
    for it in items:
        out.append([ll for ll, _ in flat[k : k + len(it.choices)]])
        k += len(it.choices)
    return out


def result(
    task: str,
    items: list[MCItem],
    lls: list[list[float]],
    protocol: str,
    cfg: EvalConfig,
    norm: bool = True,
) -> TaskResult:
    """acc (and acc_norm) per item and overall; per-item JSONL log when cfg.log_dir is set."""
    per_item: dict[str, list[float]] = {"acc": []}
    if norm:
        per_item["acc_norm"] = []
    logs = []
    for it, ll in zip(items, lls, strict=True):
        pred = argmax(ll)
        per_item["acc"].append(float(pred == it.gold))
        row = {
            "id": it.id,
            "prompt": it.context,
            "choices": it.choices,
            "loglikelihoods": ll,
            "prediction": pred,
            "gold": it.gold,
            "acc": float(pred == it.gold),
            **it.meta,
        }
        if norm:
            pred_norm = argmax([v / len(c) for v, c in zip(ll, it.choices, strict=True)])
            per_item["acc_norm"].append(float(pred_norm == it.gold))
            row.update(prediction_norm=pred_norm, acc_norm=float(pred_norm == it.gold))
        logs.append(row)
    if cfg.log_dir is not None:
        write_jsonl(Path(cfg.log_dir) / f"{task}.jsonl", logs)
    n = len(items)
    metrics = {k: (sum(v) / n if n else float("nan")) for k, v in per_item.items()}
    return TaskResult(task=task, metrics=metrics, protocol=protocol, n=n, per_item=per_item)
