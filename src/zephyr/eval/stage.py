"""The `eval` stage of `zephyr pipeline` (the `report` stage is zephyr.eval.report_stage).

eval: every model the run produced -- M0 (recipe.model), M1 (sft), M2 (dpo), M2-kto (kto) and
each quantized artifact (`<source label>-<method>`) -- on the same tasks, items and seed; adds
model size and greedy generation speed; writes results.json (+ logs/<label>/<task>.jsonl).
Finished models are kept in results.partial.json, so a re-entered stage does not redo them.

Run: `zephyr pipeline RECIPE --stages eval   (one model: zephyr eval MODEL --tasks ...)`.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zephyr.chat_template import recipe_template
from zephyr.config import from_dict
from zephyr.errors import ZephyrError
from zephyr.eval.cache import evaluate_cached
from zephyr.eval.measure import gen_speed, model_size
from zephyr.eval.report_collect import STAGE_LABELS, split_label
from zephyr.io import read_json, sha256_json, write_json
from zephyr.rundir import LOCK_NAME


@dataclass
class EvalSection:
    tasks: list[str] = field(
        default_factory=lambda: ["hellaswag", "arc_challenge", "gsm8k", "synthetic"]
    )
    limit: int | None = 50  # items per task (seeded sample); None: the full sets
    limits: dict = field(default_factory=dict)  # per-task limit, e.g. {gsm8k: 10}
    batch_size: int = 8
    dtype: str = (
        "float32"  # or `auto`: bfloat16 where the hardware is fast at it (device.eval_dtype)
    )
    num_fewshot: int | None = None  # None: each task's lm-eval default
    options: dict = field(
        default_factory=dict
    )  # per-task options, e.g. {gsm8k: {max_new_tokens: 128}}
    models: list[str] = field(default_factory=list)  # labels to evaluate (empty: every model found)
    speed_tokens: int = 32  # greedy tokens timed at batch 1 for the speed column (0: skip)
    data_dir: str | None = None  # laid out like ../shared/data (default: the recipe's data_root)


def parse_section(section: dict, where: str = "eval") -> EvalSection:
    """The eval section typed, its task names and per-task keys checked (the pipeline calls this
    when a recipe loads, so a misspelt task fails before any training)."""
    from zephyr.eval.run import parse_tasks

    sec = from_dict(EvalSection, section, where)
    parse_tasks(sec.tasks)
    for what, mapping in (("limits", sec.limits), ("options", sec.options)):
        stray = [t for t in mapping if t not in sec.tasks]
        if stray:
            raise ZephyrError(
                f"eval.{what} names task '{stray[0]}', which is not in eval.tasks; add it there or drop it"
            )
    return sec


# ---------------------------------------------------------------------------- models
def find_models(ctx: Any) -> dict[str, str]:
    """label -> model spec, in report order: M0, M1, M2, M2-kto, then quantized artifacts."""
    from zephyr.models import resolve

    models = {"M0": str(ctx.recipe.model)}
    for stage, label in STAGE_LABELS.items():
        d = ctx.inputs.get(stage)
        if d is not None and (Path(d) / "model" / "config.json").is_file():
            models[label] = str(Path(d) / "model")
    qdir = ctx.inputs.get("quantize")
    if qdir is not None:
        by_path = {}
        for label, spec in models.items():
            try:
                by_path[Path(resolve(spec)).resolve()] = label
            except ZephyrError:
                continue
        fallback = [lbl for lbl in ("M2", "M2-kto", "M1", "M0") if lbl in models][0]
        for q in sorted(Path(qdir).glob("*/quantization.json")):
            meta = read_json(q)
            src = (meta.get("source") or {}).get("path")
            base = by_path.get(Path(src).resolve(), fallback) if src else fallback
            models[f"{base}-{q.parent.name}"] = str(q.parent)
    return models


def reference_of(ctx: Any, models: dict[str, str]) -> str:
    """The DPO reference: the model DPO started from (M1 unless the dpo section says `from: base`)."""
    start = (ctx.recipe.dpo or {}).get("from", "auto")
    return models["M1"] if "M1" in models and start != "base" else models["M0"]


def tasks_for(label: str, tasks: list[str]) -> list[str]:
    """The tasks of one model. reward_accuracy scores a preference-trained model (M2, M2-kto and
    their quantized copies) against the model its stage started from; M0 and M1 have no such
    reference (scored against themselves every pair ties), so their cell stays blank."""
    if split_label(label)[0] in ("M2", "M2-kto"):
        return list(tasks)
    return [t for t in tasks if t != "reward_accuracy"]


# ---------------------------------------------------------------------------- eval stage
def task_options(ctx: Any, sec: EvalSection, models: dict[str, str]) -> dict[str, dict]:
    """Per-task options: the recipe's, plus the data stage's files and the DPO reference."""
    opts = {t: dict(sec.options.get(t) or {}) for t in sec.tasks}
    data = ctx.inputs.get("data")
    files = {  # the first file the data stage wrote, in this order
        "synthetic": ("synth_test.jsonl",),
        "bertscore": ("synth_test.jsonl",),
        "reward_accuracy": ("pref_heldout.jsonl", "pref_val.jsonl"),
        "mcqa_letter": ("mcqa_val.jsonl",),
        "dialogrpt": ("pref_val.jsonl",),
    }
    for task, names in files.items():
        found = [Path(data) / n for n in names if (Path(data) / n).is_file()] if data else []
        # an explicit `source` (mcqa_letter: arc_challenge test) wins over the data stage's file
        if task in opts and found and "source" not in opts[task]:
            opts[task].setdefault("file", str(found[0]))
    if "reward_accuracy" in opts:
        dpo = ctx.recipe.dpo or {}
        o = opts["reward_accuracy"]
        o.setdefault("reference", reference_of(ctx, models))
        o.setdefault("beta", float(dpo.get("beta", 0.1)))
        o.setdefault("max_prompt_len", int(dpo.get("max_prompt_len", 256)))
        o.setdefault("max_len", int(dpo.get("max_seq_len", 512)))
        o.setdefault("reference_dtype", sec.dtype)  # policy and reference in one precision
    return opts


@dataclass
class EvalRun:
    """What every model of one eval stage is scored with: the same options, items and seed."""

    opts: dict  # per-task options (task_options)
    data_dir: Path
    seed: int
    log_dir: Path  # per-item logs: log_dir/<label>/<task>.jsonl
    console: Any
    cache: Path | None = None  # the run directory's (model, task) results; None: score all
    device: str = "auto"  # where each model runs (the recipe's device)
    key_context: dict = field(default_factory=dict)  # joins the cache key (the chat template)


def evaluate_shared(label: str, spec: str, sec: EvalSection, shared: EvalRun) -> dict:
    """evaluate_model, through the run directory's cache of (model, task) results when it has one."""
    if shared.cache is None:
        shared.console.print(f"[bold]{label}[/] ← {spec}")
        return evaluate_model(label, spec, sec, shared)
    return evaluate_cached(label, spec, sec, shared, evaluate_model)


def evaluate_model(label: str, spec: str, sec: EvalSection, shared: EvalRun) -> dict:
    """One model on `sec.tasks` (each task seeded alike), then its size and generation speed."""
    import torch

    from zephyr.device import place
    from zephyr.eval.engine import Scorer
    from zephyr.eval.run import run_task
    from zephyr.eval.task import EvalConfig
    from zephyr.models import load_model
    from zephyr.tutor.calculator import trained_with

    t0 = time.perf_counter()
    model, tok = load_model(spec, dtype=sec.dtype)
    scorer = Scorer(place(model, shared.device), tok, batch_size=sec.batch_size)
    scorer.calculator = trained_with(spec)  # generation tasks: the model's own convention
    tasks = {}
    for task in sec.tasks:
        torch.manual_seed(shared.seed)
        cfg = EvalConfig(
            task=task,
            data_dir=shared.data_dir,
            limit=sec.limits.get(task, sec.limit),
            seed=shared.seed,
            num_fewshot=sec.num_fewshot,
            batch_size=sec.batch_size,
            log_dir=shared.log_dir / label,
            options=dict(shared.opts.get(task, {})),
        )
        t1 = time.perf_counter()
        res = run_task(scorer, task, cfg)
        res.extra.setdefault("seconds", round(time.perf_counter() - t1, 2))
        tasks[task] = res.to_dict()
        shown = "  ".join(f"{k}={v:.4g}" for k, v in list(res.metrics.items())[:4])
        shared.console.print(f"  {label} {task} (n={res.n}, {res.extra['seconds']:.1f}s): {shown}")
    entry = {"path": spec, "tasks": tasks, "size": model_size(model, spec)}
    if sec.speed_tokens > 0:
        entry["speed"] = gen_speed(model, tok, sec.speed_tokens)
    entry["seconds"] = round(time.perf_counter() - t0, 2)
    del scorer, model
    gc.collect()
    return entry


@recipe_template
def run(ctx: Any) -> None:
    """The eval stage: all models, same tasks and items -> results.json."""
    from zephyr import provenance
    from zephyr.device import eval_dtype

    sec = parse_section(ctx.section)
    # `auto` is resolved here, so the stage key and the cache say which dtype really ran
    sec = dataclasses.replace(
        sec, dtype=eval_dtype(sec.dtype, getattr(ctx.recipe, "device", "auto"))
    )
    data_dir = ctx.path(sec.data_dir) if sec.data_dir else ctx.data_root
    seed = ctx.recipe.seed
    models = find_models(ctx)
    if sec.models:
        unknown = [m for m in sec.models if m not in models]
        if unknown:
            raise ZephyrError(
                f"eval.models names '{unknown[0]}', which this run has not produced; found: {', '.join(models)}"
            )
        models = {k: v for k, v in models.items() if k in sec.models}
    opts = task_options(ctx, sec, models)
    config = {
        "section": dataclasses.asdict(sec),
        "models": models,
        "options": opts,
        "seed": seed,
        "data_dir": str(data_dir),
    }
    key = sha256_json(config)
    partial_path = ctx.out_dir / "results.partial.json"
    partial = read_json(partial_path) if partial_path.exists() else {}
    done = partial.get("models", {}) if partial.get("key") == key else {}
    results: dict[str, Any] = {"models": {}}
    t0 = time.perf_counter()
    # inside a pipeline's run directory (it holds the lock), (model, task) results are shared
    # across the run's eval stages: each base model's M0 is scored once per study
    cache = ctx.out_dir.parent / "eval-cache"
    if not (ctx.out_dir.parent / LOCK_NAME).exists():
        cache = None
    shared = EvalRun(
        opts,
        data_dir,
        seed,
        ctx.out_dir / "logs",
        ctx.console,
        cache=cache,
        device=getattr(ctx.recipe, "device", None) or "auto",
        key_context={"chat_template": getattr(ctx.recipe, "chat_template", None)},
    )
    for label, spec in models.items():
        if label in done:
            ctx.console.print(f"[green]✓[/] {label}: evaluated earlier, kept")
            results["models"][label] = done[label]
            continue
        own = dataclasses.replace(sec, tasks=tasks_for(label, sec.tasks))
        results["models"][label] = evaluate_shared(label, spec, own, shared)
        write_json(partial_path, {"key": key, "models": results["models"]})
    results["settings"] = {
        "limit": sec.limit,
        "limits": sec.limits,
        "seed": seed,
        "tasks": sec.tasks,
        "batch_size": sec.batch_size,
        "dtype": sec.dtype,
        "data_dir": str(data_dir),
    }
    results["stages"] = {s: str(d) for s, d in ctx.inputs.items()}
    inputs = [o["file"] for o in opts.values() if o.get("file")]
    results["provenance"] = provenance.record(
        config, inputs=inputs, seconds=round(time.perf_counter() - t0, 2)
    )
    write_json(ctx.out_dir / "results.json", results)
    partial_path.unlink(missing_ok=True)
    ctx.console.print(
        f"eval: {len(models)} models x {len(sec.tasks)} tasks in {time.perf_counter() - t0:.0f}s"
    )
