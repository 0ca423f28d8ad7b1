"""Table 1 (values, bootstrap intervals, deltas against each row's own M0), the error-analysis
cohorts and the text cells of Table 2 (a quantize stage's compare.json), from `Collected`."""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zephyr.eval import bootstrap
from zephyr.eval.report_collect import BASE, ROLES, Collected, split_label
from zephyr.io import read_jsonl

# fractions shown as percentages; everything else in the task's own unit (BLEU/ROUGE are 0-100)
PERCENT = {
    "acc",
    "acc_norm",
    "em_strict",
    "em_flexible",
    "exact_match",
    "accuracy",
    "ties",
    "answer_rate",
    "p_gold",
    "acc_cyclic",  # mcqa_letter's debiased scores (tutor/debias.py)
    "p_gold_cyclic",
    "acc_pride",
    "precision",
    "recall",
    "f1",
    "win_vs_chosen",
}
LOWER_IS_BETTER = ("perplexity", "bits_per_byte", "bpb", "loss")
NEUTRAL = {"ties"}  # reported for reading the others, neither good nor bad


def order(labels: list[str]) -> list[str]:
    """M0, M1, M2, M2-kto, then the quantized variants (by source, then name), then the rest."""
    rank = {k: i for i, k in enumerate(ROLES)}

    def key(label: str) -> tuple:
        base, variant = split_label(label)
        if base in rank:
            return (1 if variant else 0, rank[base], label)
        return (2, 0, label)

    return sorted(labels, key=key)


# ---------------------------------------------------------------------------- numbers
def scale(metric: str) -> float:
    return 100.0 if metric in PERCENT else 1.0


def direction(metric: str) -> int:
    """+1 higher is better, -1 lower is better, 0 neutral."""
    if metric in NEUTRAL:
        return 0
    return -1 if any(k in metric for k in LOWER_IS_BETTER) else 1


def fmt(v: float | None, metric: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if metric in PERCENT or metric.startswith(("bleu", "rouge")):
        return f"{v:.1f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


HIDE = ("mmlu/acc_*",)  # MMLU's per-category accuracies stay in results.json, out of Table 1


def _shown(task: str, metric: str, value: Any, hide: tuple[str, ...] | list[str] = HIDE) -> bool:
    if not isinstance(value, int | float) or "/" in metric or metric.startswith("_"):
        return False
    return not any(fnmatch.fnmatchcase(f"{task}/{metric}", pat) for pat in hide)


@dataclass
class Cell:
    value: float
    ci: tuple[float, float] | None = None
    delta: float | None = None
    delta_ci: tuple[float, float] | None = None

    @property
    def significant(self) -> bool:
        return self.delta_ci is not None and (self.delta_ci[0] > 0 or self.delta_ci[1] < 0)


def paired_delta(
    a: dict, b: dict, metric: str, resamples: int, seed: int
) -> tuple[float, float] | None:
    """Paired bootstrap interval of mean(a - b) when both results scored the same items; for
    corpus BLEU, of BLEU(a) - BLEU(b) over jointly resampled sentence statistics."""
    if metric == "bleu4":
        return paired_bleu_delta(a, b, resamples, seed)
    xa, xb = (a.get("per_item") or {}).get(metric), (b.get("per_item") or {}).get(metric)
    if not xa or not xb or len(xa) != len(xb) or a.get("n") != b.get("n"):
        return None
    diffs = [p - q for p, q in zip(xa, xb, strict=True)]
    return bootstrap.ci(diffs, resamples=resamples, seed=seed)


def paired_bleu_delta(a: dict, b: dict, resamples: int, seed: int) -> tuple[float, float] | None:
    sa, sb = ((r.get("extra") or {}).get("bleu_stats") for r in (a, b))
    if not sa or not sb or len(sa) != len(sb) or a.get("n") != b.get("n"):
        return None
    width = len(sa[0])  # one row per item: a's statistics, then b's

    def diff(rows: np.ndarray) -> float:
        return bootstrap.bleu_stat(rows[:, :width]) - bootstrap.bleu_stat(rows[:, width:])

    joined = [list(x) + list(y) for x, y in zip(sa, sb, strict=True)]
    return bootstrap.ci(joined, stat=diff, resamples=resamples, seed=seed)


@dataclass
class Table:
    models: list[str]
    columns: list[tuple[str, str]]  # (task, metric)
    protocols: dict[str, tuple[str, int]]  # task -> (protocol, n)
    cells: dict[tuple[str, str, str], Cell]
    cohorts: dict[tuple[str, str], dict[str, tuple[float, int]]] = field(default_factory=dict)


def order_rows(got: Collected) -> list[str]:
    """Row keys grouped by base model (first seen first); in each group M0, M1, M0 + DPO, M2,
    M2-kto, then the quantized variants; rows of one stage in run order."""
    if not got.rows:
        return order(list(got.models))
    bases = list(dict.fromkeys(r.base for r in got.rows.values()))
    runs = list(dict.fromkeys(run for r in got.rows.values() for run in r.runs))
    rank = {k: i for i, k in enumerate(ROLES)}

    def key(k: str) -> tuple:
        row = got.rows[k]
        source, variant = split_label(row.label)
        first_run = runs.index(row.runs[0]) if row.runs else 0
        return (
            bases.index(row.base),
            1 if variant else 0,
            rank.get(source, len(rank)),
            first_run,
            k,
        )

    return sorted(got.models, key=key)


# the seeds' Table 1 column order; other tasks follow in the order they were found
TASK_ORDER = (
    "hellaswag",
    "gsm8k",
    "reward_accuracy",
    "arc_challenge",
    "arc_easy",
    "mmlu",
    "mcqa_letter",
)
METRIC_FIRST = {"hellaswag": ("acc_norm",), "gsm8k": ("bleu4", "rouge1", "rouge2", "rougeL")}


def _column_key(col: tuple[str, str], found: list[tuple[str, str]]) -> tuple:
    task, metric = col
    tasks = list(dict.fromkeys(t for t, _ in found))
    t = TASK_ORDER.index(task) if task in TASK_ORDER else len(TASK_ORDER) + tasks.index(task)
    first = METRIC_FIRST.get(task, ())
    return (t, first.index(metric) if metric in first else len(first), found.index(col))


def _ref_of(got: Collected, m: str) -> str | None:
    """The M0 row a row's deltas are taken against."""
    if m in got.rows:
        return got.rows[m].ref
    return BASE if m != BASE and BASE in got.models else None


def build_table(
    got: Collected,
    resamples: int = bootstrap.RESAMPLES,
    seed: int = bootstrap.SEED,
    hide: tuple[str, ...] | list[str] = HIDE,
) -> Table:
    models = order_rows(got)
    columns: list[tuple[str, str]] = []
    protocols: dict[str, tuple[str, int]] = {}
    for m in models:
        for task, res in (got.models[m].get("tasks") or {}).items():
            protocols.setdefault(task, (res.get("protocol", ""), int(res.get("n", 0))))
            for metric, value in (res.get("metrics") or {}).items():
                if _shown(task, metric, value, hide) and (task, metric) not in columns:
                    columns.append((task, metric))
    columns = sorted(columns, key=lambda c, found=list(columns): _column_key(c, found))
    protocols = {t: protocols[t] for t in dict.fromkeys([c[0] for c in columns] + list(protocols))}
    cells: dict[tuple[str, str, str], Cell] = {}
    for m in models:
        ref = _ref_of(got, m)
        base_tasks = (got.models.get(ref) or {}).get("tasks") or {} if ref else {}
        for task, res in (got.models[m].get("tasks") or {}).items():
            cis = bootstrap.task_cis(res, resamples, seed)
            for metric, value in (res.get("metrics") or {}).items():
                if not _shown(task, metric, value, hide):
                    continue
                s = scale(metric)
                ci = cis.get(metric)
                cell = Cell(value * s, (ci[0] * s, ci[1] * s) if ci else None)
                base = base_tasks.get(task)
                if base and isinstance((base.get("metrics") or {}).get(metric), int | float):
                    cell.delta = (value - base["metrics"][metric]) * s
                    dci = paired_delta(res, base, metric, resamples, seed)
                    cell.delta_ci = (dci[0] * s, dci[1] * s) if dci else None
                cells[(m, task, metric)] = cell
    return Table(models, columns, protocols, cells, cohorts(got, models))


# ---------------------------------------------------------------------------- error analysis
# task -> (log field naming the cohort, per-item score): from logs/<label>/<task>.jsonl
COHORT_FIELDS = {
    "mmlu": ("subject", "acc"),
    "synthetic": ("family", "exact_match"),
    "mcqa_letter": ("subject", "acc"),
}
WHOLE_TASKS = {"arc_challenge": ("arc", "Challenge"), "arc_easy": ("arc", "Easy")}


def _log_groups(logs: Path | None, task: str, key: str, metric: str) -> dict[str, list[float]]:
    path = logs / f"{task}.jsonl" if logs else None
    groups: dict[str, list[float]] = {}
    if path is None or not path.is_file():
        return groups
    for r in read_jsonl(path):
        if r.get(key) is not None and isinstance(r.get(metric), int | float):
            groups.setdefault(str(r[key]), []).append(float(r[metric]))
    return groups


def cohorts(
    got: Collected, models: list[str]
) -> dict[tuple[str, str], dict[str, tuple[float, int]]]:
    """(task, cohort) -> row key -> (accuracy, items): MMLU subjects, ARC Challenge vs Easy,
    synthetic families, from the eval's per-item logs (MMLU falls back on its per-subject extra)."""
    out: dict[tuple[str, str], dict[str, tuple[float, int]]] = {}
    for m in models:
        tasks = got.models[m].get("tasks") or {}
        logs = got.rows[m].logs if m in got.rows else None
        for task, (key, metric) in COHORT_FIELDS.items():
            if task not in tasks:
                continue
            groups = {
                g: (sum(v) / len(v), len(v))
                for g, v in _log_groups(logs, task, key, metric).items()
            }
            if not groups and task == "mmlu":
                subjects = (tasks[task].get("extra") or {}).get("subjects") or {}
                groups = {g: (float(v["acc"]), int(v["n"])) for g, v in subjects.items()}
            for g, value in groups.items():
                out.setdefault((task, g), {})[m] = value
        for task, cohort in WHOLE_TASKS.items():
            acc = ((tasks.get(task) or {}).get("metrics") or {}).get("acc")
            if isinstance(acc, int | float):
                out.setdefault(cohort, {})[m] = (float(acc), int(tasks[task].get("n", 0)))
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------------- row heads
def role(label: str) -> str:
    base, variant = split_label(label)
    if base not in ROLES:
        return ""
    return f"{ROLES[base]}, {variant}" if variant else ROLES[base]


def size_cols(entry: dict) -> tuple[str, str, str]:
    size, speed = entry.get("size") or {}, entry.get("speed") or {}
    params = size.get("params")
    return (
        f"{params / 1e6:.1f}M" if isinstance(params, int | float) else "–",
        f"{size['disk_mb']:.0f}" if isinstance(size.get("disk_mb"), int | float) else "–",
        f"{speed['tokens_per_s']:.1f}"
        if isinstance(speed.get("tokens_per_s"), int | float)
        else "–",
    )


def row_head(got: Collected, m: str) -> tuple[str, str, list[str]]:
    """(label, role, [base model, variants]): the last two only when several runs are compared."""
    row = got.rows.get(m)
    if not got.multi or row is None:
        return m, role(m), []
    return row.label, role(row.label), [row.base, ", ".join(r for r in row.runs if r) or "–"]


def head_cols(got: Collected) -> list[str]:
    return ["model", "base model", "variant"] if got.multi else ["model"]


def cohort_rows(t: Table) -> tuple[list[str], list[list[str]]]:
    """The error-analysis table: one row per cohort, accuracy % (items) per model."""
    models = [m for m in t.models if any(m in v for v in t.cohorts.values())]
    rows = [
        [task, cohort] + [f"{100 * v[m][0]:.1f} ({v[m][1]})" if m in v else "–" for m in models]
        for (task, cohort), v in t.cohorts.items()
    ]
    return ["task", "cohort", *models], rows


# ---------------------------------------------------------------------------- Table 2
def _acc_cell(r: dict, task: str) -> str:
    a = (r.get("tasks") or {}).get(task)
    if not isinstance(a, dict) or "value" not in a:
        return ""
    lo, hi = a["ci95"] or (float("nan"), float("nan"))
    return f"{a['value']:.3f} [{lo:.2f},{hi:.2f}]"


def quant_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """compare.json as text cells, one row per model: size, RSS, speed, perplexity (each with its
    ratio to fp32), the quantization's weight error and seconds, and accuracy [95% CI] when
    eval_limit was set. The report's Table 2 and `zephyr quantize --compare`'s table print these."""
    rows = report["models"]
    # accuracy columns in the order compare.json holds the tasks (compare.TASKS)
    found = dict.fromkeys(t for r in rows.values() for t in (r.get("tasks") or {}))
    tasks = [t for t in found if any(_acc_cell(r, t) for r in rows.values())]
    n = {t: next(r["tasks"][t]["n"] for r in rows.values() if _acc_cell(r, t)) for t in tasks}
    cols = ["model", "disk MB", "x fp32", "peak RSS MB", "tok/s", "x fp32", "wikitext ppl"]
    cols += ["x fp32", "weight err", "quant s"] + [f"{k} (n={n[k]})" for k in tasks]
    out = []
    for label, r in rows.items():
        err, secs = r.get("weight_rel_error"), r.get("quantize_s")
        out.append(
            [
                label,
                f"{r['disk_mb']:.1f}",
                f"{r['size_x_fp32']:.3f}",
                f"{r['peak_rss_mb']:.0f}",
                f"{r['tokens_per_s']:.1f}",
                f"{r['speed_x_fp32']:.2f}",
                f"{r['wikitext_ppl']:.3f}",
                f"{r['ppl_x_fp32']:.4f}",
                "" if err is None else f"{err:.2e}",
                "" if secs is None else f"{secs:.0f}",
                *[_acc_cell(r, k) for k in tasks],
            ]
        )
    return cols, out
