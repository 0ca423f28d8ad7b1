"""Evaluate one model on a list of tasks -> a results dict (used by `zephyr eval` and the eval stage).

from zephyr.eval.run import evaluate
res = evaluate("smollm2-135m", ["hellaswag", "mmlu"], data_dir="../shared/data", limit=200)
res["tasks"]["mmlu"]["metrics"]["acc"]
"""

from __future__ import annotations

import importlib
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from zephyr.errors import ZephyrError
from zephyr.eval.task import TASKS, EvalConfig, TaskResult
from zephyr.recipe import DEFAULT_DATA_ROOT


def parse_tasks(tasks: str | list[str]) -> list[str]:
    """Comma-separated or list -> known task names (unknown ones raise, naming the valid ones)."""
    names = [
        t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t.strip()
    ]
    if not names:
        raise ZephyrError(f"no task given; pass --tasks with some of: {', '.join(TASKS)}")
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise ZephyrError(f"unknown task '{unknown[0]}'; choose from {', '.join(TASKS)}")
    return names


def task_module(name: str) -> Any:
    try:
        return importlib.import_module(f"zephyr.eval.tasks.{TASKS[name]}")
    except ModuleNotFoundError as e:
        if e.name == f"zephyr.eval.tasks.{TASKS[name]}":
            raise ZephyrError(
                f"task '{name}' is registered but its module is not installed"
            ) from None
        raise


def run_task(scorer: Any, name: str, cfg: EvalConfig) -> TaskResult:
    """Run one task with `cfg` (its `task` field set to `name`)."""
    cfg = replace(
        cfg,
        task=name,
        data_dir=Path(cfg.data_dir),
        log_dir=Path(cfg.log_dir) if cfg.log_dir else None,
    )
    return task_module(name).run(scorer, cfg)


def make_scorer(
    model: Any,
    dtype: str = "float32",
    batch_size: int = 8,
    device: str = "auto",
    engine: str = "hf",
) -> Any:
    """A Scorer from a model spec (see zephyr.models.load_model) or a (model, tokenizer) pair.

    engine "llamacpp": generation tasks run on the spec's GGUF (zephyr.eval.llamacpp).
    """
    from zephyr.device import place
    from zephyr.eval.engine import Scorer
    from zephyr.models import load_model

    if engine not in ("hf", "llamacpp"):
        raise ZephyrError(f"unknown --engine '{engine}'; choose hf or llamacpp")
    if engine == "llamacpp":
        from zephyr.eval.llamacpp import make_llamacpp_scorer

        if not isinstance(model, (str, Path)):
            raise ZephyrError("--engine llamacpp needs a model spec (a path or name), not a model")
        return make_llamacpp_scorer(str(model), batch_size=batch_size)
    if isinstance(model, tuple):
        m, tok = model
    else:
        m, tok = load_model(model, dtype=dtype)
    return Scorer(place(m, device), tok, batch_size=batch_size)


def evaluate(
    model: Any,
    tasks: str | list[str],
    data_dir: str | Path = DEFAULT_DATA_ROOT,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 8,
    num_fewshot: int | None = None,
    log_dir: str | Path | None = None,
    dtype: str = "float32",
    device: str = "auto",
    options: dict[str, dict] | None = None,
    scorer: Any = None,
    engine: str = "hf",
) -> dict:
    """Run `tasks` on `model` -> {"model", "tasks": {name: TaskResult.to_dict()}, "provenance"}.

    options: per-task options, e.g. {"wikitext": {"window": 512, "stride": 256}}.
    scorer: reuse an already built Scorer (then `model`, `dtype`, `device` are only labels).
    """
    import torch

    from zephyr.device import eval_dtype
    from zephyr.provenance import record
    from zephyr.tutor.calculator import trained_with

    names = parse_tasks(tasks)
    if not Path(data_dir).is_dir():
        raise ZephyrError(
            f"data dir {data_dir} does not exist; pass --data-dir laid out like ../shared/data"
        )
    torch.manual_seed(seed)
    dtype = eval_dtype(dtype, device)
    scorer = scorer or make_scorer(
        model, dtype=dtype, batch_size=batch_size, device=device, engine=engine
    )
    if not hasattr(scorer, "calculator"):  # generation tasks: on where the model trained with it
        scorer.calculator = isinstance(model, (str, Path)) and trained_with(model)
    out: dict[str, Any] = {}
    timings: dict[str, float] = {}
    for name in names:
        cfg = EvalConfig(
            task=name,
            data_dir=Path(data_dir),
            limit=limit,
            seed=seed,
            num_fewshot=num_fewshot,
            batch_size=batch_size,
            log_dir=Path(log_dir) if log_dir else None,
            options=dict((options or {}).get(name, {})),
        )
        t0 = time.perf_counter()
        res = run_task(scorer, name, cfg)
        timings[name] = time.perf_counter() - t0
        res.extra.setdefault("seconds", round(timings[name], 2))
        out[name] = res.to_dict()
    label = (
        model if isinstance(model, (str, Path)) else type(getattr(scorer, "model", model)).__name__
    )
    config = {
        "model": str(label),
        "tasks": names,
        "data_dir": str(data_dir),
        "limit": limit,
        "seed": seed,
        "batch_size": batch_size,
        "num_fewshot": num_fewshot,
        "dtype": dtype,
        "engine": engine,
        "options": options or {},
    }
    return {"model": str(label), "tasks": out, "provenance": record(config, seconds=timings)}
