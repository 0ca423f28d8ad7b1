"""`zephyr study RECIPE`: several variants of one recipe, run one after another into one run
directory, ending in one report.

A study recipe is a recipe plus `variants:`, each a `name` and overrides of recipe keys by dotted
path (`model`, `data.sft`, `sft.schedule`, `dpo.from`, `stages`, ...). Every variant's stages go to
`out/<name>/<stage>-<key>`, so variants whose stage keys are equal share that directory: the data
of one mixture is built once, an SFT model that two variants start from is trained once. The eval
stages share (model, task) results through the run directory's eval cache (zephyr.eval.cache), so
each base model's M0 is scored once. A rerun skips what is finished and resumes what is not.
"""

from __future__ import annotations

import copy
import inspect
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from zephyr.config import load_yaml, parse_sets, set_dotted
from zephyr.errors import ZephyrError
from zephyr.io import read_json, write_json
from zephyr.pipeline import PlannedStage, Recipe, build_recipe, plan, run_recipe, run_root
from zephyr.rundir import lock

REPORT_DIR = "study"  # out/<name>/study/: report.md, report.html, study.json


@dataclass
class Variant:
    name: str
    recipe: Recipe
    overrides: dict[str, Any]


def load_study(path: str | Path, sets: list[str] | None = None) -> tuple[Recipe, list[Variant]]:
    """The base recipe and each variant's full recipe, every one type-checked now. `--set` pairs
    apply to the file, and again after each variant's overrides: the command line wins."""
    where = str(path)
    pairs = parse_sets(sets)
    raw = load_yaml(path)
    for key, value in pairs:
        set_dotted(raw, key, value, f"{where} --set")
    variants = raw.pop("variants", None)
    if not isinstance(variants, list) or not variants:
        raise ZephyrError(
            f"{where} has no `variants:` list; a study needs one (or run it with `zephyr pipeline`)"
        )
    base = build_recipe(copy.deepcopy(raw), where)
    out, names = [], set()
    for i, v in enumerate(variants):
        if not isinstance(v, dict) or not isinstance(v.get("name"), str) or not v["name"]:
            raise ZephyrError(
                f"{where}: variants[{i}] needs a `name:` (and overrides of recipe keys)"
            )
        name, vwhere = v["name"], f"{where} variant '{v['name']}'"
        if name in names:
            raise ZephyrError(
                f"{where}: two variants are named '{name}'; names label the report rows"
            )
        names.add(name)
        overrides = {k: x for k, x in v.items() if k != "name"}
        if "out" in overrides:
            raise ZephyrError(
                f"{vwhere}: a variant cannot change `out`; all share one run directory"
            )
        vraw = copy.deepcopy(raw)
        for key, value in overrides.items():
            set_dotted(vraw, key, value, vwhere)
        for key, value in pairs:
            if key.split(".")[0] != "variants":
                set_dotted(vraw, key, value, f"{where} --set")
        recipe = build_recipe(vraw, vwhere)
        recipe.stages = [s for s in recipe.stages if s != "report"]  # one report, for the study
        out.append(Variant(name, recipe, overrides))
    return base, out


def print_pipeline_plan(
    path: str | Path,
    overrides: dict[str, Any],
    sets: list[str] | None,
    console: Console | None = None,
) -> None:
    """`zephyr pipeline --dry-run`: the plan of a plain recipe, as a study of one variant."""
    from zephyr import estimate
    from zephyr.pipeline import load_recipe

    console = console or Console()
    recipe = load_recipe(path, overrides, sets)
    stages = plan(recipe, Path(path).resolve().parent, console)
    estimate.print_plan(recipe, [Variant(recipe.name, recipe, {})], {recipe.name: stages}, console)


def plan_study(
    variants: list[Variant], recipe_dir: Path, console: Console
) -> dict[str, list[PlannedStage]]:
    return {v.name: plan(v.recipe, recipe_dir, console) for v in variants}


def run_study(
    path: str | Path,
    sets: list[str] | None = None,
    force: bool = False,
    dry_run: bool = False,
    console: Console | None = None,
    tokens_per_s: float | None = None,
) -> Path | None:
    """Run every variant (or print the plan); return the study directory with the report."""
    from zephyr import estimate

    console = console or Console()
    path = Path(path)
    base, variants = load_study(path, sets)
    recipe_dir = path.resolve().parent
    plans = plan_study(variants, recipe_dir, console)
    if dry_run:
        estimate.print_plan(base, variants, plans, console, tokens_per_s)
        return None
    root = run_root(base)
    forced: set[Path] = set()
    timing: dict[str, float] = {}
    with lock(root):
        for i, v in enumerate(variants, 1):
            console.rule(f"[bold]variant {i}/{len(variants)}: {v.name}")
            t0 = time.time()
            run_recipe(v.recipe, recipe_dir, force=force, console=console, forced=forced)
            timing[v.name] = round(time.time() - t0, 1)
        return finish(base, variants, plans, timing, console)


def stage_seconds(st: PlannedStage) -> float | None:
    marker = st.out_dir / "stage.json"
    return read_json(marker).get("seconds") if marker.exists() else None


def finish(
    base: Recipe,
    variants: list[Variant],
    plans: dict[str, list[PlannedStage]],
    timing: dict[str, float],
    console: Console,
) -> Path:
    """study.json (each variant's stage dirs and seconds) and the one report over all variants."""
    out = run_root(base) / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    record = {"name": base.name, "variants": []}
    for v in variants:
        stages = {
            st.name: {"dir": str(st.out_dir), "seconds": stage_seconds(st)} for st in plans[v.name]
        }
        record["variants"].append(
            {
                "name": v.name,
                "overrides": v.overrides,
                "stages": stages,
                "wall_s": timing.get(v.name),
            }
        )
    write_json(out / "study.json", record)
    for v in record["variants"]:  # seconds per stage: of the sitting that finished it
        parts = [f"{k} {x['seconds']:.0f}s" for k, x in v["stages"].items() if x["seconds"]]
        console.print(f"{v['name']}: {', '.join(parts)}", soft_wrap=True)
    evals = [(v.name, st.out_dir) for v in variants for st in plans[v.name] if st.name == "eval"]
    if evals:
        write_study_report(base, evals, out)
        console.print(f"study report: {out / 'report.html'}")
    return out


def write_study_report(base: Recipe, evals: list[tuple[str, Path]], out: Path) -> None:
    from zephyr.eval.report import write_report
    from zephyr.pipeline import check_section

    sec = check_section("report", base.report, "report")
    kwargs: dict[str, Any] = {
        "title": sec.title or f"Zephyr study: {base.name}",
        "plots": sec.plots,
    }
    kwargs["hide"] = sec.hide
    if "run_names" in inspect.signature(write_report).parameters:  # one label per variant
        kwargs["run_names"] = [name for name, _ in evals]
    write_report([d for _, d in evals], out, **kwargs)
