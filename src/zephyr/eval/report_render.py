"""report.md and the self-contained report.html (inline CSS, PNGs as base64) of a built Table."""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path

from zephyr.eval import bootstrap
from zephyr.eval.report_collect import BASE, Collected
from zephyr.eval.report_table import (
    PERCENT,
    Cell,
    Table,
    cohort_rows,
    direction,
    fmt,
    head_cols,
    quant_rows,
    row_head,
    size_cols,
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


COHORT_NOTE = (
    "Accuracy in percent (items in brackets) per cohort: MMLU subject, ARC Challenge vs Easy "
    "split, synthetic problem family, MCQA subject; from the eval's per-item logs "
    "(logs/<model>/<task>.jsonl). Cohorts of a few items are noise: read the counts."
)


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
        cols, rows = quant_rows(report)
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
        out.append(_html_table(*quant_rows(report)))
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
