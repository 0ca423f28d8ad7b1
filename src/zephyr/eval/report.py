"""The comparison report: eval results of one or more runs -> report.md + report.html (+ plots/).

Inputs are eval results (`results.json` of the eval stage, or of `zephyr eval --json`) and the
training logs (`metrics.jsonl` of the sft/dpo/kto stages). The report has:
- Table 1: one row per model (M0 base, M1 SFT, M2 DPO, M2-kto, quantized variants), one column
  per (task, metric) with its protocol as a numbered note, plus parameters, size on disk and
  greedy generation speed; every value with its 95% bootstrap interval (seeded, 1000 resamples
  of the per-item scores) and its delta against M0, coloured in the HTML; a delta is starred
  when the paired bootstrap interval of the per-item differences excludes 0;
- Table 2, when the run has a quantize stage: its compare.json (each artifact against fp32 and
  bf16: size, peak RSS, tokens/s, WikiText-2 perplexity, accuracy with intervals);
- the eval metrics as bar charts with the intervals, and the training curves per stage;
- report.html is self-contained: inline CSS, PNGs embedded as base64, no external requests.
"""

from __future__ import annotations

import base64
import fnmatch
import html
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zephyr.errors import ZephyrError
from zephyr.eval import bootstrap, report_plots
from zephyr.io import atomic_write, read_json, read_jsonl
from zephyr.quantize.compare import table_rows

BASE = "M0"
ROLES = {
    "M0": "base",
    "M1": "SFT",
    "M0 + DPO": "DPO from the base",
    "M2": "DPO",
    "M0 + KTO": "KTO from the base",
    "M2-kto": "KTO",
}
STAGE_LABELS = {"sft": "M1", "dpo": "M2", "kto": "M2-kto"}  # the eval stage's row per stage model
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
    "precision",
    "recall",
    "f1",
    "win_vs_chosen",
}
LOWER_IS_BETTER = ("perplexity", "bits_per_byte", "bpb", "loss")
NEUTRAL = {"ties"}  # reported for reading the others, neither good nor bad
TRAIN_STAGES = ("sft", "dpo", "kto")


@dataclass
class Row:
    """One Table 1 row: a model of one run (or, for a base model's M0, of several runs)."""

    label: str  # M0, M1, M2, "M0 + DPO", M2-kto, M2-int8, ... (shown in the table)
    runs: list[str]  # the runs (study variants) this row belongs to; several for a shared M0
    base: str  # the base model spec the row's model was trained from (its M0's spec)
    logs: Path | None = None  # per-item logs of the eval stage (logs/<label>/<task>.jsonl)
    ref: str | None = None  # key of the row's own base model's M0 row (None: the row is an M0)


@dataclass
class Curve:
    """One training stage's metrics.jsonl, as drawn in the overlaid training figures."""

    stage: str  # sft, dpo, kto
    label: str  # M1, M2, M0 + DPO, ...
    runs: list[str]  # the variants that share this stage's output
    rows: list[dict]
    file: str

    @property
    def name(self) -> str:
        """Legend entry: "<variants>: <label>" (the label alone for a single unnamed run)."""
        runs = ", ".join(r for r in self.runs if r)
        return f"{runs}: {self.label}" if runs else self.label


@dataclass
class Collected:
    """Everything the report shows, gathered from the runs."""

    models: dict[str, dict] = field(default_factory=dict)  # row key -> results.json model entry
    rows: dict[str, Row] = field(default_factory=dict)  # row key -> who it is
    curves: list[Curve] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    settings: list[dict] = field(default_factory=list)  # each run's eval settings, if recorded
    quant: list[tuple[dict, str]] = field(default_factory=list)  # (compare.json, its path)
    multi: bool = False  # several runs or named runs: Table 1 shows base model and variant

    @property
    def training(self) -> dict[str, tuple[list[dict], str]]:
        """stage -> (rows, file) of the first curve of each stage (single-run view)."""
        out: dict[str, tuple[list[dict], str]] = {}
        for c in self.curves:
            out.setdefault(c.stage, (c.rows, c.file))
        return out


# ---------------------------------------------------------------------------- gathering
def _latest(paths: list[Path]) -> Path | None:
    done = [p for p in paths if (p.parent / "stage.json").exists()] or paths
    return max(done, key=lambda p: p.stat().st_mtime) if done else None


def find_results(path: Path) -> Path:
    """A results.json: the file itself, inside an eval dir, or the newest eval-* of a pipeline run."""
    path = Path(path)
    if path.is_file():
        return path
    if (path / "results.json").is_file():
        return path / "results.json"
    found = _latest(sorted(path.glob("eval-*/results.json")))
    if found is None:
        raise ZephyrError(
            f"no eval results in {path}: pass a results.json, an eval stage directory, or a pipeline "
            "run directory (runs/<name>) whose eval stage has finished"
        )
    return found


def find_training(results: Path, recorded: dict[str, str]) -> dict[str, Path]:
    """metrics.jsonl of each training stage: as results.json records them, else the run's newest."""
    out: dict[str, Path] = {}
    run_dir = results.parent.parent
    for stage in TRAIN_STAGES:
        d = recorded.get(stage)
        if d and (Path(d) / "metrics.jsonl").is_file():
            out[stage] = Path(d) / "metrics.jsonl"
            continue
        if recorded:  # the eval stage says which stages fed it: a sibling dir is another run's
            continue
        found = _latest(sorted(run_dir.glob(f"{stage}-*/metrics.jsonl")))
        if found is not None:
            out[stage] = found
    return out


def find_compare(results: Path, recorded: dict[str, str]) -> Path | None:
    """The quantize stage's compare.json: as results.json records the stage, else the run's newest."""
    d = recorded.get("quantize")
    if d and (Path(d) / "compare.json").is_file():
        return Path(d) / "compare.json"
    return _latest(sorted(results.parent.parent.glob("quantize-*/compare.json")))


def _json(path: Path) -> dict:
    try:
        data = read_json(path) if Path(path).is_file() else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def base_of(spec: str) -> str:
    """The base model a model was trained from: follows quantization.json's source and the
    training stage's train.json `base` (a DPO model -> its SFT model -> the base spec)."""
    p = str(spec)
    for _ in range(8):  # sft -> dpo -> quantize is 3 links; more means a loop
        quant = _json(Path(p) / "quantization.json")
        src = (quant.get("source") or {}).get("path")
        if src:
            p = str(src)
            continue
        start = (
            _json(Path(p).parent / "train.json").get("base") if Path(p).name == "model" else None
        )
        if not start:
            return p
        p = str(start)
    return p


def pref_from_base(stage_dir: str | Path | None, recipe: dict, stage: str) -> bool:
    """Did this run's dpo / kto stage start from the base model (the seeds' "M0 + DPO")?
    The stage's train.json names its start model; else the recipe's `from` decides."""
    start = _json(Path(stage_dir) / "train.json").get("base") if stage_dir else None
    if start:
        return Path(str(start)).parent.name.split("-")[0] != "sft"
    section = recipe.get(stage) or {}
    how = section.get("from", "auto") if isinstance(section, dict) else "auto"
    if how == "base":
        return True
    return how == "auto" and bool(recipe.get("stages")) and "sft" not in recipe["stages"]


def relabel(label: str, from_base: dict[str, bool]) -> str:
    """M2 -> "M0 + DPO" (and M2-kto -> "M0 + KTO", their quantized variants alike) when the
    preference stage started from the base model rather than from M1."""
    source, variant = split_label(label)
    new = {"M2": "M0 + DPO", "M2-kto": "M0 + KTO"}.get(source)
    stage = "dpo" if source == "M2" else "kto"
    if new is None or not from_base.get(stage):
        return label
    return f"{new}-{variant}" if variant else new


def _same_items(a: dict, b: dict) -> bool:
    """Two M0 entries that scored the same items alike (every task they share)."""
    ta, tb = a.get("tasks") or {}, b.get("tasks") or {}
    if not ta and not tb:  # neither was scored on anything (e.g. only reward_accuracy asked)
        return True
    common = set(ta) & set(tb)
    keys = ("n", "metrics", "per_item")
    return bool(common) and all(all(ta[t].get(k) == tb[t].get(k) for k in keys) for t in common)


def _add(
    got: Collected,
    run: str,
    label: str,
    entry: dict,
    base: str,
    logs: Path | None,
    json_file: bool = False,
) -> None:
    """A row, or merged into an equal one: the same model with identical scores from another run
    (a base model's M0, an M1 that two variants share), or another `zephyr eval --json` file
    of the same model in the same run."""
    for key, row in got.rows.items():
        old = got.models[key]
        shared = (  # an M0, or a stage output two variants share: same model, same scores
            label == row.label
            and row.base == base
            and str(old.get("path")) == str(entry.get("path"))
            and _same_items(old, entry)
        )
        same_model = (
            json_file
            and row.label == label
            and run in row.runs
            and old.get("path") == entry.get("path")
        )
        if shared or same_model:
            for task, res in (entry.get("tasks") or {}).items():
                old.setdefault("tasks", {}).setdefault(task, res)
            if run not in row.runs:
                row.runs.append(run)
            return
    name = (base if label == BASE else run) if got.multi else ""
    key = f"{label}@{name}" if name else label
    alt, k = f"{label}@{run or 'run'}", 1  # same label and name: the run tells them apart
    while key in got.models:
        k += 1
        key = alt if key != alt and k == 2 else f"{alt}#{k}"
    got.models[key] = entry
    got.rows[key] = Row(label, [run], base, logs)


def _run_json(got: Collected, run: str, res_path: Path, data: dict) -> None:
    """A `zephyr eval --json` file: one model, labelled from its spec."""
    spec = str(data.get("model", res_path.stem))
    label = _label_for(spec)
    p = Path(spec)
    if p.name == "model" and p.parent.name.split("-")[0] in ("dpo", "kto"):
        label = relabel(label, {p.parent.name.split("-")[0]: pref_from_base(p.parent, {}, "")})
    _add(
        got,
        run,
        label,
        {"path": data.get("model"), "tasks": dict(data["tasks"])},
        base_of(spec),
        None,
        json_file=True,
    )


def _run_pipeline(got: Collected, run: str, res_path: Path, data: dict, training) -> None:
    """An eval stage's results.json: every model of the run, the quantize table, the curves."""
    recipe = (_json(res_path.parent / "stage.json").get("config") or {}).get("recipe") or {}
    stages = data.get("stages") or {}
    m0 = (data["models"].get(BASE) or {}).get("path")
    base = str(recipe.get("model") or m0 or "")
    if not base and data["models"]:
        base = base_of(str(next(iter(data["models"].values())).get("path", "")))
    from_base = {s: pref_from_base(stages.get(s), recipe, s) for s in ("dpo", "kto")}
    if data.get("settings"):
        got.settings.append(data["settings"])
    for label, entry in data["models"].items():
        logs = res_path.parent / "logs" / label
        _add(got, run, relabel(label, from_base), entry, base, logs if logs.is_dir() else None)
    compare = find_compare(res_path, stages)
    if compare is not None and str(compare) not in {q[1] for q in got.quant}:
        got.quant.append((read_json(compare), str(compare)))
    logs = training if training is not None else find_training(res_path, stages)
    for stage, f in logs.items():
        if not Path(f).is_file():
            continue
        label = relabel(STAGE_LABELS[stage], from_base)
        same = [c for c in got.curves if c.file == str(f)]
        if same:  # one stage shared by several variants: one curve, every variant named
            same[0].runs.append(run)
            continue
        runs = [run] if got.multi else []
        got.curves.append(Curve(stage, label, runs, read_jsonl(f), str(f)))


def _assign_refs(got: Collected) -> None:
    """Each row's own base model's M0: same base spec, the row's own run's M0 first."""
    m0s = [k for k, r in got.rows.items() if r.label == BASE]
    for row in got.rows.values():
        if row.label == BASE:
            continue
        same = [k for k in m0s if got.rows[k].base == row.base] or (
            [k for k in m0s if set(got.rows[k].runs) & set(row.runs)] if not row.base else []
        )
        own = [k for k in same if set(got.rows[k].runs) & set(row.runs)]
        row.ref = (own or same or [None])[0]


def _is_eval_json(data: Any) -> bool:
    """A `zephyr eval --json` file (one model) rather than an eval stage's results.json."""
    return isinstance(data, dict) and isinstance(data.get("tasks"), dict) and "models" not in data


def collect(
    paths: list[Path],
    training: dict[str, Path] | None = None,
    run_names: list[str] | None = None,
) -> Collected:
    """Gather models and training logs from runs; `run_names` labels each run (a study variant)."""
    if not paths:
        raise ZephyrError("no run given; pass at least one run directory or results.json")
    if run_names is not None and len(run_names) != len(paths):
        raise ZephyrError(
            f"{len(run_names)} run names for {len(paths)} runs; pass one name per run"
        )
    found = []
    for p in paths:
        if not Path(p).exists():
            raise ZephyrError(f"run {p} does not exist; pass a run directory or a results.json")
        res_path = find_results(Path(p))
        found.append((res_path, read_json(res_path)))
    pipelines = [d for _, d in found if not _is_eval_json(d)]
    got = Collected(multi=run_names is not None or len(pipelines) > 1)
    for i, (res_path, data) in enumerate(found):
        got.sources.append(str(res_path))
        if _is_eval_json(data):
            _run_json(got, run_names[i] if run_names else "", res_path, data)
            continue
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise ZephyrError(f"{res_path} has no 'models' mapping; is it an eval results.json?")
        run = run_names[i] if run_names else res_path.parent.parent.name
        _run_pipeline(got, run, res_path, data, training)
    _assign_refs(got)
    return got


def _label_for(spec: str) -> str:
    """A `zephyr eval --json` file's row label: M0 for the embedded base model, M1 / M2 / M2-kto
    for a pipeline stage's `<stage>-<hash>/model`, else the spec itself."""
    if spec == "smollm2-135m":
        return "M0"
    p = Path(spec)
    stage = p.parent.name.split("-")[0]
    return STAGE_LABELS[stage] if p.name == "model" and stage in STAGE_LABELS else spec


def split_label(label: str) -> tuple[str, str]:
    """'M2-kto-int4' -> ('M2-kto', 'int4'): the source model's label and the quantization method."""
    for known in sorted(ROLES, key=len, reverse=True):
        if label == known:
            return known, ""
        if label.startswith(known + "-"):
            return known, label[len(known) + 1 :]
    return label, ""


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
    """Paired bootstrap interval of mean(a - b) when both results scored the same items."""
    xa, xb = (a.get("per_item") or {}).get(metric), (b.get("per_item") or {}).get(metric)
    if not xa or not xb or len(xa) != len(xb) or a.get("n") != b.get("n"):
        return None
    diffs = [p - q for p, q in zip(xa, xb, strict=True)]
    return bootstrap.ci(diffs, resamples=resamples, seed=seed)


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


# ---------------------------------------------------------------------------- markdown
def _quant_notes(report: dict, path: str) -> list[str]:
    c = report.get("config", {})
    notes = [
        f"From `{path}`. Each model measured in its own process: peak RSS is its own; tok/s is "
        f"greedy decoding of {c.get('gen_tokens', '?')} tokens at batch 1 (median of "
        f"{c.get('gen_runs', '?')}); WikiText-2 test token perplexity over the first "
        f"{c.get('ppl_tokens', '?')} tokens (window {c.get('window', '?')}, stride "
        f"{c.get('stride', '?')}); x fp32 = ratio to the fp32 row of the same run; weight err = "
        "relative squared error of the quantized linears; accuracy [95% bootstrap interval] on "
        "the same items for every model.",
        f"bf16 disk size: {report.get('bf16_disk_mb_is', 'measured')}.",
    ]
    return notes + ([f"Note: {report['note']}"] if report.get("note") else [])


def _delta_text(cell: Cell, metric: str) -> str:
    if cell.delta is None:
        return ""
    return f" ({'+' if cell.delta >= 0 else '−'}{fmt(abs(cell.delta), metric)}{'*' if cell.significant else ''})"


def _notes(got: Collected) -> list[str]:
    notes = [
        "Values: mean over the scored items (percent for accuracies, BLEU/ROUGE on 0-100, "
        "perplexity and bits per byte raw); [lo, hi] = 95% percentile bootstrap interval "
        f"({bootstrap.RESAMPLES} resamples of the per-item scores, seed {bootstrap.SEED}; corpus "
        "BLEU resamples sentence n-gram statistics).",
        f"(±d) = difference against {BASE} of the row's own base model (matched by the base "
        "model spec each run records, not by position); * = the paired bootstrap interval of the "
        "per-item differences excludes 0 (same items scored for both models).",
        "Reward accuracy: share of held-out preference pairs whose DPO implicit reward "
        "beta * (log pi - log pi_ref) ranks chosen over rejected (ties 0.5), for a preference-"
        "trained model against the model its stage started from (M1 for M2, M0 for M0 + DPO); "
        "blank for M0 and M1, which have no such reference.",
    ]
    if got.multi:
        notes.append(
            "One row per (base model, stage, variant); a model that several runs evaluated "
            "identically (same model, same items, same scores: a base model's M0, an M1 two "
            "variants share) is shown once, with every run it belongs to. M0 + DPO = DPO "
            "started from the base model instead of M1."
        )
    for s in {json.dumps(s, sort_keys=True): s for s in got.settings}.values():
        if s.get("limit") is not None:
            notes.append(
                f"Budget: each task scored on a seeded random sample (seed {s.get('seed', 0)}) of "
                f"at most {s['limit']} items, the same items for every model (per-task limits: "
                f"{s.get('limits') or 'none'}), not the full test sets: intervals are wide."
            )
    n_new = sorted({(m.get("speed") or {}).get("new_tokens") for m in got.models.values()} - {None})
    notes.append(
        "Speed: greedy decoding tokens/s at batch 1 (a fixed chat prompt, exactly "
        f"{'/'.join(map(str, n_new)) or '?'} new tokens after a warm-up), measured on the machine "
        "that ran the eval, alongside other work: compare models within one report only."
    )
    return notes


def row_head(got: Collected, m: str) -> tuple[str, str, list[str]]:
    """(label, role, [base model, variants]): the last two only when several runs are compared."""
    row = got.rows.get(m)
    if not got.multi or row is None:
        return m, role(m), []
    return row.label, role(row.label), [row.base, ", ".join(r for r in row.runs if r) or "–"]


def head_cols(got: Collected) -> list[str]:
    return ["model", "base model", "variant"] if got.multi else ["model"]


COHORT_NOTE = (
    "Accuracy in percent (items in brackets) per cohort: MMLU subject, ARC Challenge vs Easy "
    "split, synthetic problem family, MCQA subject; from the eval's per-item logs "
    "(logs/<model>/<task>.jsonl). Cohorts of a few items are noise: read the counts."
)


def cohort_rows(t: Table) -> tuple[list[str], list[list[str]]]:
    """The error-analysis table: one row per cohort, accuracy % (items) per model."""
    models = [m for m in t.models if any(m in v for v in t.cohorts.values())]
    rows = [
        [task, cohort] + [f"{100 * v[m][0]:.1f} ({v[m][1]})" if m in v else "–" for m in models]
        for (task, cohort), v in t.cohorts.items()
    ]
    return ["task", "cohort", *models], rows


def render_md(got: Collected, t: Table, plots: dict[str, Path], title: str) -> str:
    notes = {task: i + 1 for i, task in enumerate(t.protocols)}
    head = [*head_cols(got), "params", "disk MB", "gen tok/s"] + [
        f"{task} {metric}{' (%)' if metric in PERCENT else ''} [{notes[task]}]"
        for task, metric in t.columns
    ]
    lines = [
        f"# {title}",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M %Z')} from "
        + ", ".join(f"`{s}`" for s in got.sources),
        "",
    ]
    lines += ["## Table 1: models compared", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in t.models:
        label, what, extra = row_head(got, m)
        row = [f"**{label}** {what}".rstrip(), *[f"`{x}`" for x in extra[:1]], *extra[1:]]
        row += size_cols(got.models[m])
        for task, metric in t.columns:
            c = t.cells.get((m, task, metric))
            if c is None:
                row.append("–")
                continue
            ci = f" [{fmt(c.ci[0], metric)}, {fmt(c.ci[1], metric)}]" if c.ci else ""
            row.append(f"{fmt(c.value, metric)}{ci}{_delta_text(c, metric)}")
        lines.append("| " + " | ".join(row) + " |")
    lines += [""] + [f"- {n}" for n in _notes(got)] + ["", "### Protocols", ""]
    for task, (protocol, n) in t.protocols.items():
        lines.append(f"{notes[task]}. **{task}** (n = {n}): {protocol}")
    lines += ["", "### Models", ""]
    for m in t.models:
        lines.append(f"- **{m}**: `{got.models[m].get('path', '?')}`")
    if t.cohorts:
        cols, rows = cohort_rows(t)
        lines += ["", "## Error analysis: accuracy per cohort", ""]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines += ["", f"- {COHORT_NOTE}"]
    for report, path in got.quant:
        cols, rows = table_rows(report)
        lines += ["", f"## Table 2: quantization of `{report['source']}`", ""]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines += [""] + [f"- {n}" for n in _quant_notes(report, path)]
    if plots.get("eval"):
        lines += [
            "",
            "## Eval metrics",
            "",
            f"![eval metrics]({plots['eval'].parent.name}/{plots['eval'].name})",
        ]
    train = [(s, p) for s, p in plots.items() if s.startswith("train_")]
    if train:
        lines += ["", "## Training curves", ""]
        for stage, p in train:
            lines += [f"![{stage}]({p.parent.name}/{p.name})", ""]
            lines += [f"- {c.name}: `{c.file}`" for c in got.curves if c.stage == stage[6:]]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------- html
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1400px;color:#1d2330;padding:0 16px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #e3e6ee;padding-bottom:4px}
.meta{color:#5b6475;font-size:12px} .wrap{overflow-x:auto;border:1px solid #e3e6ee;border-radius:6px}
table{border-collapse:collapse;font-size:13px;white-space:nowrap} th,td{padding:6px 10px;border-bottom:1px solid #eef0f5;text-align:right;vertical-align:top}
th{background:#f6f7fb;font-weight:600;position:sticky;top:0} th.task{font-size:11px;color:#5b6475;font-weight:500}
td.model,th.model{text-align:left;position:sticky;left:0;background:#fff;font-weight:600;border-right:1px solid #e3e6ee}
tr.base td{background:#fafbff} .ci{display:block;color:#8a93a6;font-size:11px}
.up{color:#137333;font-weight:600} .down{color:#c5221f;font-weight:600} .flat{color:#5b6475}
.role{color:#8a93a6;font-weight:400;font-size:11px} .sig{font-size:10px;vertical-align:super} ol.prot li{margin-bottom:4px} code{font-size:12px;background:#f3f4f8;padding:1px 4px;border-radius:3px}
img{max-width:100%;border:1px solid #eef0f5;border-radius:4px;margin:8px 0} ul.notes li{margin-bottom:3px;color:#3a4252}
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _delta_html(c: Cell, metric: str) -> str:
    if c.delta is None:
        return ""
    sign = direction(metric)
    better = c.delta * sign
    cls = "flat" if sign == 0 or abs(c.delta) < 1e-12 else ("up" if better > 0 else "down")
    star = '<span class="sig">*</span>' if c.significant else ""
    txt = f"{'+' if c.delta >= 0 else '−'}{fmt(abs(c.delta), metric)}"
    tip = (
        f"paired 95% CI [{fmt(c.delta_ci[0], metric)}, {fmt(c.delta_ci[1], metric)}]"
        if c.delta_ci
        else "no paired interval"
    )
    return f' <span class="{cls}" title="{tip}">{txt}{star}</span>'


def _html_table(cols: list[str], rows: list[list[str]]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{e(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f'<div class="wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def render_html(got: Collected, t: Table, plots: dict[str, Path], title: str) -> str:
    e = html.escape
    notes = {task: i + 1 for i, task in enumerate(t.protocols)}
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<div class="meta">Generated {e(time.strftime("%Y-%m-%d %H:%M %Z"))} from '
        + ", ".join(f"<code>{e(s)}</code>" for s in got.sources)
        + "</div>",
        "<h2>Table 1: models compared</h2>",
        '<div class="wrap"><table>',
        "<thead><tr>",
        '<th class="model">model</th>'
        + "".join(f"<th>{c}</th>" for c in head_cols(got)[1:])
        + "<th>params</th><th>disk MB</th><th>gen tok/s</th>",
    ]
    for task, metric in t.columns:
        arrow = {1: "↑", -1: "↓", 0: ""}[direction(metric)]
        unit = " (%)" if metric in PERCENT else ""
        out.append(
            f'<th title="{e(t.protocols[task][0])}"><span class="task">{e(task)} '
            f"<sup>{notes[task]}</sup></span><br>{e(metric)}{unit} {arrow}</th>"
        )
    out.append("</tr></thead><tbody>")
    for m in t.models:
        label, what, extra = row_head(got, m)
        out.append(
            f'<tr class="{"base" if label == BASE else ""}"><td class="model">{e(label)} '
            f'<span class="role">{e(what)}</span></td>'
        )
        out += [f"<td>{e(v)}</td>" for v in [*extra, *size_cols(got.models[m])]]
        for task, metric in t.columns:
            c = t.cells.get((m, task, metric))
            if c is None:
                out.append("<td>–</td>")
                continue
            ci = (
                f'<span class="ci">[{fmt(c.ci[0], metric)}, {fmt(c.ci[1], metric)}]</span>'
                if c.ci
                else ""
            )
            out.append(f"<td>{fmt(c.value, metric)}{_delta_html(c, metric)}{ci}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    out.append('<ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in _notes(got)) + "</ul>")
    out.append("<h2>Protocols</h2><ol class='prot'>")
    for task, (protocol, n) in t.protocols.items():
        out.append(f"<li><b>{e(task)}</b> (n = {n}): {e(protocol)}</li>")
    out.append("</ol><h2>Models</h2><ul>")
    for m in t.models:
        out.append(f"<li><b>{e(m)}</b>: <code>{e(str(got.models[m].get('path', '?')))}</code></li>")
    out.append("</ul>")
    if t.cohorts:
        out += ["<h2>Error analysis: accuracy per cohort</h2>", _html_table(*cohort_rows(t))]
        out.append(f'<ul class="notes"><li>{e(COHORT_NOTE)}</li></ul>')
    for report, path in got.quant:
        out.append(f"<h2>Table 2: quantization of <code>{e(str(report['source']))}</code></h2>")
        out.append(_html_table(*table_rows(report)))
        out.append(
            '<ul class="notes">'
            + "".join(f"<li>{e(n)}</li>" for n in _quant_notes(report, path))
            + "</ul>"
        )
    if plots.get("eval"):
        out += ["<h2>Eval metrics</h2>", _img(plots["eval"], "eval metrics per model")]
    train = [(s, p) for s, p in plots.items() if s.startswith("train_")]
    if train:
        out.append("<h2>Training curves</h2>")
        for stage, p in train:
            out.append(_img(p, stage))
            out += [
                f'<div class="meta">{e(c.name)}: <code>{e(c.file)}</code></div>'
                for c in got.curves
                if c.stage == stage[6:]
            ]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------- entry point
def write_report(
    runs: list[Path],
    out_dir: Path,
    title: str = "Zephyr report",
    training: dict[str, Path] | None = None,
    plots: bool = True,
    hide: tuple[str, ...] | list[str] = HIDE,
    run_names: list[str] | None = None,
) -> dict[str, Path]:
    """Gather `runs`, write report.md, report.html and plots/ into `out_dir`; return the paths.

    run_names: one label per run (a study variant such as `smollm2/D_S/cosine`), shown in Table 1
    and the training-curve legends; deltas are always against the row's own base model's M0."""
    got = collect([Path(r) for r in runs], training, run_names)
    if not got.models:
        raise ZephyrError(
            "the runs hold no evaluated model; run the eval stage (or `zephyr eval`) first"
        )
    table = build_table(got, hide=hide)
    out_dir = Path(out_dir)
    figs: dict[str, Path] = {}
    if plots:
        pdir = out_dir / "plots"
        labels = {
            (task, metric): f"{task} {metric}" + (" (%)" if metric in PERCENT else "")
            for task, metric in table.columns
        }
        cells = {k: (c.value, c.ci) for k, c in table.cells.items()}
        cols = [(task, metric, labels[(task, metric)]) for task, metric in table.columns]
        p = report_plots.plot_eval(cols, table.models, cells, pdir)
        if p:
            figs["eval"] = p
        for stage in TRAIN_STAGES:
            curves = [(c.name, c.rows) for c in got.curves if c.stage == stage]
            if len(curves) == 1:
                p = report_plots.plot_training(stage, curves[0][1], pdir)
            else:
                p = report_plots.plot_overlay(stage, curves, pdir) if curves else None
            if p:
                figs[f"train_{stage}"] = p
    md, page = out_dir / "report.md", out_dir / "report.html"
    with atomic_write(md) as f:
        f.write(render_md(got, table, figs, title))
    with atomic_write(page) as f:
        f.write(render_html(got, table, figs, title))
    return {"md": md, "html": page, **figs}
