"""What every evaluation task shares: its config, its result, and the registry of task names.

A task is a module in `zephyr/eval/tasks/` with a function
    run(scorer: Scorer, cfg: EvalConfig) -> TaskResult
where `Scorer` (zephyr/eval/engine.py) wraps the model and tokenizer and does batched
log-likelihood scoring and generation. Tasks print their protocol next to their numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zephyr.recipe import DEFAULT_DATA_ROOT

# task name -> module under zephyr.eval.tasks (imported lazily)
TASKS: dict[str, str] = {
    "hellaswag": "hellaswag",
    "arc_challenge": "arc",
    "arc_easy": "arc",
    "mmlu": "mmlu",
    "gsm8k": "gsm8k",
    "wikitext": "wikitext",
    "reward_accuracy": "reward_accuracy",
    "bertscore": "bertscore",
    "synthetic": "synthetic",
    "mcqa_letter": "mcqa_letter",
    "dialogrpt": "dialogrpt",
}


@dataclass
class EvalConfig:
    task: str = ""
    data_dir: Path = Path(DEFAULT_DATA_ROOT)  # laid out like ../shared/data (same file names)
    limit: int | None = None  # first N items after a seeded shuffle (None: all)
    seed: int = 0
    num_fewshot: int | None = None  # None: the task's lm-eval default
    batch_size: int = 8
    log_dir: Path | None = None  # per-item JSONL logs go here when set
    options: dict[str, Any] = field(
        default_factory=dict
    )  # task-specific (e.g. reference model, pairs file)


@dataclass
class TaskResult:
    task: str
    metrics: dict[str, float]  # e.g. {"acc": 0.41, "acc_norm": 0.43}
    protocol: str  # e.g. "0-shot, lm-eval hellaswag template, acc_norm = loglik / len(chars)"
    n: int
    # per-item 0/1 (or float) scores for each metric, for bootstrap confidence intervals
    per_item: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "metrics": self.metrics,
            "protocol": self.protocol,
            "n": self.n,
            "per_item": self.per_item,
            "extra": self.extra,
        }
