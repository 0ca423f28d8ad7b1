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
ROLES = {"M0": "base", "M1": "SFT", "M2": "DPO", "M2-kto": "KTO"}
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
}
LOWER_IS_BETTER = ("perplexity", "bits_per_byte", "bpb", "loss")
NEUTRAL = {"ties"}  # reported for reading the others, neither good nor bad
TRAIN_STAGES = ("sft", "dpo", "kto")


@dataclass
class Collected:
    """Everything the report shows, gathered from the runs."""

    models: dict[str, dict] = field(default_factory=dict)  # label -> results.json model entry
    training: dict[str, tuple[list[dict], str]] = field(
        default_factory=dict
    )  # stage -> (rows, file)
    sources: list[str] = field(default_factory=list)
    settings: list[dict] = field(default_factory=list)  # each run's eval settings, if recorded
    quant: list[tuple[dict, str]] = field(default_factory=list)  # (compare.json, its path)


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


def collect(paths: list[Path], training: dict[str, Path] | None = None) -> Collected:
    """Gather models and training logs from runs; a label seen twice gets its run's name added."""
    if not paths:
        raise ZephyrError("no run given; pass at least one run directory or results.json")
    got = Collected()
    for p in paths:
        if not Path(p).exists():
            raise ZephyrError(f"run {p} does not exist; pass a run directory or a results.json")
        res_path = find_results(Path(p))
        data = read_json(res_path)
        if isinstance(data, dict) and isinstance(data.get("tasks"), dict) and "models" not in data:
            # `zephyr eval --json`: one model; several such files of one model merge into one row
            label = _label_for(str(data.get("model", res_path.stem)))
            entry = got.models.setdefault(label, {"path": data.get("model"), "tasks": {}})
            entry["tasks"].update(data["tasks"])
            got.sources.append(str(res_path))
            continue
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise ZephyrError(f"{res_path} has no 'models' mapping; is it an eval results.json?")
        got.sources.append(str(res_path))
        if data.get("settings"):
            got.settings.append(data["settings"])
        for label, entry in data["models"].items():
            name = label if label not in got.models else f"{label}@{res_path.parent.parent.name}"
            got.models[name] = entry
        compare = find_compare(res_path, data.get("stages", {}))
        if compare is not None and str(compare) not in {q[1] for q in got.quant}:
            got.quant.append((read_json(compare), str(compare)))
        logs = training if training is not None else find_training(res_path, data.get("stages", {}))
        for stage, f in logs.items():
            if stage not in got.training and Path(f).is_file():
                got.training[stage] = (read_jsonl(f), str(f))
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


def build_table(
    got: Collected,
    resamples: int = bootstrap.RESAMPLES,
    seed: int = bootstrap.SEED,
    hide: tuple[str, ...] | list[str] = HIDE,
) -> Table:
    models = order(list(got.models))
    columns: list[tuple[str, str]] = []
    protocols: dict[str, tuple[str, int]] = {}
    for m in models:
        for task, res in (got.models[m].get("tasks") or {}).items():
            protocols.setdefault(task, (res.get("protocol", ""), int(res.get("n", 0))))
            for metric, value in (res.get("metrics") or {}).items():
                if _shown(task, metric, value, hide) and (task, metric) not in columns:
                    columns.append((task, metric))
    cells: dict[tuple[str, str, str], Cell] = {}
    base_tasks = (got.models.get(BASE) or {}).get("tasks") or {}
    for m in models:
        tasks = got.models[m].get("tasks") or {}
        for task, res in tasks.items():
            cis = bootstrap.task_cis(res, resamples, seed)
            for metric, value in (res.get("metrics") or {}).items():
                if not _shown(task, metric, value, hide):
                    continue
                s = scale(metric)
                ci = cis.get(metric)
                cell = Cell(value * s, (ci[0] * s, ci[1] * s) if ci else None)
                base = base_tasks.get(task)
                if (
                    m != BASE
                    and base
                    and isinstance((base.get("metrics") or {}).get(metric), int | float)
                ):
                    cell.delta = (value - base["metrics"][metric]) * s
                    dci = paired_delta(res, base, metric, resamples, seed)
                    cell.delta_ci = (dci[0] * s, dci[1] * s) if dci else None
                cells[(m, task, metric)] = cell
    return Table(models, columns, protocols, cells)


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
        f"(±d) = difference against {BASE}, the base model; * = the paired bootstrap interval "
        "of the per-item differences excludes 0 (same items scored for both models).",
    ]
    for s in got.settings:
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


def render_md(got: Collected, t: Table, plots: dict[str, Path], title: str) -> str:
    notes = {task: i + 1 for i, task in enumerate(t.protocols)}
    head = ["model", "params", "disk MB", "gen tok/s"] + [
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
        row = [f"**{m}** {role(m)}".rstrip(), *size_cols(got.models[m])]
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
            lines += [
                f"![{stage}]({p.parent.name}/{p.name})",
                f"source: `{got.training[stage[6:]][1]}`",
                "",
            ]
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
        '<th class="model">model</th><th>params</th><th>disk MB</th><th>gen tok/s</th>',
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
        out.append(
            f'<tr class="{"base" if m == BASE else ""}"><td class="model">{e(m)} <span class="role">{e(role(m))}</span></td>'
        )
        out += [f"<td>{e(v)}</td>" for v in size_cols(got.models[m])]
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
    for report, path in got.quant:
        cols, rows = table_rows(report)
        out += [
            f"<h2>Table 2: quantization of <code>{e(str(report['source']))}</code></h2>",
            '<div class="wrap"><table><thead><tr>',
            "".join(f"<th>{e(c)}</th>" for c in cols),
            "</tr></thead><tbody>",
        ]
        out += ["<tr>" + "".join(f"<td>{e(v)}</td>" for v in r) + "</tr>" for r in rows]
        out.append("</tbody></table></div>")
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
            out += [
                _img(p, stage),
                f'<div class="meta">source: <code>{e(got.training[stage[6:]][1])}</code></div>',
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
) -> dict[str, Path]:
    """Gather `runs`, write report.md, report.html and plots/ into `out_dir`; return the paths."""
    got = collect([Path(r) for r in runs], training)
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
            if stage in got.training:
                p = report_plots.plot_training(stage, got.training[stage][0], pdir)
                if p:
                    figs[f"train_{stage}"] = p
    md, page = out_dir / "report.md", out_dir / "report.html"
    with atomic_write(md) as f:
        f.write(render_md(got, table, figs, title))
    with atomic_write(page) as f:
        f.write(render_html(got, table, figs, title))
    return {"md": md, "html": page, **figs}
