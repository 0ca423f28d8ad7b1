"""Eval results shared between runs of one run directory: each (model, task) result is stored under
a key of everything it depends on, so a study evaluates each base model's M0 (and each shared M1)
once, and a re-entered eval stage or a recipe with one more task scores only what is new.

The key: the model (name, or path plus a fingerprint of its files), the task and its settings
(limit, seed, few-shot, batch size, dtype, options with files and models by fingerprint), the data
root, and a hash of the eval code itself (a fixed bug invalidates what it touched).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zephyr.fingerprint import model_fingerprint, path_fingerprint
from zephyr.io import read_json, sha256_file, sha256_json, write_json

if TYPE_CHECKING:  # the stage imports this module: its EvalRun is a type here only
    from zephyr.eval.stage import EvalRun

CODE = Path(__file__).resolve().parent  # zephyr/eval: tasks, engine, scoring
NOT_SCORING = ("report", "cli")  # report*.py, cli.py: presentation, not scores


def code_hash() -> str:
    files = [p for p in sorted(CODE.rglob("*.py")) if not p.name.startswith(NOT_SCORING)]
    return sha256_json({str(p.relative_to(CODE)): sha256_file(p) for p in files})


def _identity(value: Any) -> Any:
    """A model spec or option value, with local paths replaced by a fingerprint of their contents."""
    if isinstance(value, dict):
        return {k: _identity(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_identity(v) for v in value]
    if isinstance(value, str) and ("/" in value or "\\" in value) and Path(value).exists():
        return {"local": path_fingerprint(value)}
    return value


def task_key(
    spec: str, task: str, sec: Any, opts: dict, seed: int, data_dir: Path, code: str
) -> str:
    return sha256_json(
        {
            "model": [spec if not Path(spec).exists() else "", model_fingerprint(spec)],
            "task": task,
            "limit": sec.limits.get(task, sec.limit),
            "num_fewshot": sec.num_fewshot,
            "batch_size": sec.batch_size,
            "dtype": sec.dtype,
            "options": _identity(opts.get(task, {})),
            "seed": seed,
            "data_dir": str(data_dir),
            "code": code,
        }
    )[:16]


def evaluate_cached(
    label: str, spec: str, sec: Any, shared: EvalRun, evaluate: Callable[..., dict]
) -> dict:
    """The eval stage's entry for one model: cached task results reused, the rest scored by
    `evaluate(label, spec, sec, shared)` (the stage's evaluate_model); `shared.key_context`
    (e.g. the recipe's chat template) joins the key."""
    cache_dir, log_dir, console = shared.cache, shared.log_dir, shared.console
    opts, seed, data_dir = shared.opts, shared.seed, shared.data_dir
    code = sha256_json([code_hash(), shared.key_context or {}])
    keys = {t: task_key(spec, t, sec, opts, seed, data_dir, code) for t in sec.tasks}
    meta_key = sha256_json(
        [
            model_fingerprint(spec),
            spec if not Path(spec).exists() else "",
            sec.dtype,
            sec.speed_tokens,
            code,
        ]
    )[:16]
    files = {t: cache_dir / f"task-{k}.json" for t, k in keys.items()}
    meta_file = cache_dir / f"model-{meta_key}.json"
    cached = {t: read_json(f) for t, f in files.items() if f.is_file()}
    missing = [t for t in sec.tasks if t not in cached]
    entry: dict = {"path": spec}
    if missing or not meta_file.is_file():
        reused = f" ({len(cached)} of {len(sec.tasks)} tasks shared)" if cached else ""
        console.print(f"[bold]{label}[/] ← {spec}{reused}")
        entry = evaluate(label, spec, dataclasses.replace(sec, tasks=missing), shared)
        for t in missing:
            write_json(files[t], {"result": entry["tasks"][t], "logs": str(log_dir / label)})
        write_json(meta_file, {k: entry[k] for k in ("size", "speed") if k in entry})
    else:
        console.print(
            f"[green]✓[/] {label}: every task evaluated earlier in this run directory, shared"
        )
        entry.update(read_json(meta_file))
    entry["tasks"] = {
        t: cached[t]["result"] if t in cached else entry["tasks"][t] for t in sec.tasks
    }
    if cached:
        entry["shared"] = {t: c["logs"] for t, c in cached.items()}  # where their item logs are
    return entry
