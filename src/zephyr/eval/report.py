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

Modules: report_collect (runs -> Collected), report_table (Table 1, cohorts, Table 2 cells),
report_render (md, html), report_plots (figures); this one writes them (`write_report`).
"""

from __future__ import annotations

from pathlib import Path

from zephyr.errors import ZephyrError
from zephyr.eval import report_plots
from zephyr.eval.report_collect import (  # noqa: F401  (re-exported: tests, report_cli, study)
    BASE,
    ROLES,
    STAGE_LABELS,
    TRAIN_STAGES,
    Collected,
    Curve,
    Row,
    collect,
    split_label,
)
from zephyr.eval.report_render import _delta_html, render_html, render_md  # noqa: F401
from zephyr.eval.report_table import (  # noqa: F401
    HIDE,
    PERCENT,
    Cell,
    Table,
    build_table,
    direction,
    fmt,
)
from zephyr.io import atomic_write


def draw_plots(got: Collected, table: Table, pdir: Path) -> dict[str, Path]:
    """The eval metrics (Table 1's cells with their intervals) and each stage's training curves."""
    figs: dict[str, Path] = {}
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
    return figs


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
    figs = draw_plots(got, table, out_dir / "plots") if plots else {}
    md, page = out_dir / "report.md", out_dir / "report.html"
    with atomic_write(md) as f:
        f.write(render_md(got, table, figs, title))
    with atomic_write(page) as f:
        f.write(render_html(got, table, figs, title))
    return {"md": md, "html": page, **figs}
