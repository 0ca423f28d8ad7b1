"""The `report` stage of `zephyr pipeline`: report.md + report.html (+ plots/) from the eval
stage's results and the training stages' logs (zephyr.eval.report does the writing).

Run: `zephyr pipeline RECIPE --stages report   (any runs: zephyr report RUN...)`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zephyr.config import from_dict
from zephyr.errors import ZephyrError
from zephyr.io import write_json


@dataclass
class ReportSection:
    title: str = ""  # default: "Zephyr report: <recipe name>"
    hide: list[str] = field(
        default_factory=lambda: ["mmlu/acc_*"]
    )  # task/metric globs kept out of Table 1
    plots: bool = True


def run_report(ctx: Any) -> None:
    """The report stage: report.md, report.html and plots/ from the eval results."""
    from zephyr import provenance
    from zephyr.eval.report import write_report

    sec = from_dict(ReportSection, ctx.section, "report")
    if "eval" not in ctx.inputs:
        raise ZephyrError(
            "the report stage needs the eval stage; add `eval` before `report` in the recipe's stages"
        )
    results = Path(ctx.inputs["eval"]) / "results.json"
    training = {
        s: Path(ctx.inputs[s]) / "metrics.jsonl"
        for s in ("sft", "dpo", "kto")
        if s in ctx.inputs and (Path(ctx.inputs[s]) / "metrics.jsonl").is_file()
    }
    paths = write_report(
        [results],
        ctx.out_dir,
        title=sec.title or f"Zephyr report: {ctx.recipe.name}",
        training=training,
        plots=sec.plots,
        hide=sec.hide,
    )
    write_json(
        ctx.out_dir / "report.json",
        provenance.record(
            {"section": dataclasses.asdict(sec)},
            inputs=[results, *training.values()],
            outputs={k: str(v) for k, v in paths.items()},
        ),
    )
    ctx.console.print(f"report: {paths['html']}")
