"""`zephyr pipeline RECIPE`: run the stages a recipe names, each into a directory keyed by a hash
of its config and inputs, so a rerun skips what is already finished.

A stage is a function `run(ctx: StageContext) -> None` that writes into `ctx.out_dir`. When it
returns, the pipeline writes `stage.json` (config, key, versions, seconds) there: that file is the
"finished" marker. A stage interrupted half-way leaves its directory without `stage.json`, and the
next run calls it again in the same directory, so stages that checkpoint (training) can resume.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from zephyr import provenance
from zephyr.config import from_dict, load_yaml, parse_sets, set_dotted
from zephyr.errors import ZephyrError
from zephyr.fingerprint import model_fingerprint
from zephyr.io import read_json, sha256_json, write_json
from zephyr.recipe import DEFAULT_DATA_ROOT, Recipe, StageContext  # noqa: F401 (re-exported)
from zephyr.rundir import fresh_dir, lock

# stage name -> "module:function"; imported lazily so `zephyr --help` stays fast.
STAGES: dict[str, str] = {
    "data": "zephyr.data.stage:run",
    "sft": "zephyr.train.stage:run_sft",
    "dpo": "zephyr.train.stage:run_dpo",
    "kto": "zephyr.train.stage:run_kto",
    "quantize": "zephyr.quantize.stage:run",
    "eval": "zephyr.eval.stage:run",
    "report": "zephyr.eval.report_stage:run_report",
}

# stages whose output also depends on files outside the recipe (hashed into the stage key)
FINGERPRINTS: dict[str, str] = {
    "data": "zephyr.data.stage:fingerprint",
}

# which earlier stages each stage reads (only those present in the recipe count)
DEPENDS: dict[str, tuple[str, ...]] = {
    "data": (),
    "sft": ("data",),
    "dpo": ("data", "sft"),
    "kto": ("data", "sft"),
    "quantize": ("sft", "dpo", "kto"),
    "eval": ("data", "sft", "dpo", "kto", "quantize"),
    "report": ("data", "sft", "dpo", "kto", "quantize", "eval"),
}


# stage name -> the type of its recipe section, "module:Name" imported lazily when a recipe is
# loaded (every module named here imports no torch): a dataclass (typed with from_dict) or a
# function(section, where) that parses and checks it. A typo fails at load, not hours later.
SECTIONS: dict[str, str] = {
    "data": "zephyr.data.build:parse_config",
    "sft": "zephyr.train.config:SFTConfig",
    "dpo": "zephyr.train.config:PrefConfig",
    "kto": "zephyr.train.config:PrefConfig",
    "quantize": "zephyr.quantize.stage:QuantizeSection",
    "eval": "zephyr.eval.stage:parse_section",
    "report": "zephyr.eval.report_stage:ReportSection",
}
KEY_ALIASES = {"from": "start"}  # YAML keys that are Python keywords -> their dataclass field

# top-level recipe keys a stage's output depends on (hashed into its key); the data stage reads
# no model, so every base model of a study shares one data directory per mixture
GLOBALS: tuple[str, ...] = ("seed", "model", "dtype", "data_root", "chat_template")
STAGE_GLOBALS: dict[str, tuple[str, ...]] = {"data": ("seed", "data_root")}


def check_section(name: str, section: dict, where: str) -> Any:
    """Parse one stage section with its registered type; unknown keys and bad values raise."""
    target = _import(SECTIONS[name])
    if not dataclasses.is_dataclass(target):
        return target(section, where)
    raw = dict(section or {})
    fields = {f.name for f in dataclasses.fields(target)}
    for key, field_name in KEY_ALIASES.items():
        if key in raw and field_name in fields:
            raw[field_name] = raw.pop(key)
    return from_dict(target, raw, where)


def build_recipe(raw: dict, where: str) -> Recipe:
    """A recipe mapping -> Recipe, with its stage list and every stage section checked."""
    if "variants" in raw:
        raise ZephyrError(f"{where} has `variants:`, so it is a study: run `zephyr study {where}`")
    recipe = from_dict(Recipe, raw, where=where)
    for stage in recipe.stages:
        if stage not in STAGES:
            raise ZephyrError(
                f"{where}: unknown stage '{stage}'; known stages: {', '.join(STAGES)}"
            )
    for name in SECTIONS:
        if name in recipe.stages or getattr(recipe, name):
            check_section(name, getattr(recipe, name), f"{where}: {name}")
    return recipe


def apply_overrides(
    raw: dict, overrides: dict[str, Any] | None, sets: list[tuple[str, Any]], where: str
) -> dict:
    """Command-line options (None: not given), then `--set` pairs, onto a recipe mapping."""
    raw = copy.deepcopy(raw)
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for key, value in sets:
        set_dotted(raw, key, value, where)
    return raw


def load_recipe(
    path: str | Path, overrides: dict[str, Any] | None = None, sets: list[str] | None = None
) -> Recipe:
    """Load, override (`overrides` from CLI options, `sets` as `key=value`) and check a recipe."""
    raw = apply_overrides(load_yaml(path), overrides, parse_sets(sets), f"{path} --set")
    return build_recipe(raw, str(path))


def _import(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def stage_key(name: str, recipe: Recipe, upstream: dict[str, str], extra: str = "") -> str:
    """Hash of what a stage's output depends on: its section, the global fields it reads (a local
    model directory by its contents too), upstream keys and its fingerprint of outside files."""
    section = getattr(recipe, name)
    names = STAGE_GLOBALS.get(name, GLOBALS)
    # a key that is None (or not a Recipe field yet) is left out, so older keys stay valid
    globals_ = {k: v for k in names if (v := getattr(recipe, k, None)) is not None}
    if "model" in names and (local := model_fingerprint(recipe.model)):
        globals_["model_files"] = local
    return sha256_json(
        {
            "stage": name,
            "section": section,
            "globals": globals_,
            "upstream": upstream,
            "extra": extra,
        }
    )[:12]


def run_root(recipe: Recipe) -> Path:
    """`out/name`: the directory holding every stage directory of the recipe (and its lock)."""
    out_root = Path(recipe.out).expanduser()
    if not out_root.is_absolute():
        out_root = Path.cwd() / out_root
    return out_root / recipe.name


@dataclass
class PlannedStage:
    name: str
    key: str
    upstream: dict[str, str]  # stage -> key
    ctx: StageContext

    @property
    def out_dir(self) -> Path:
        return self.ctx.out_dir

    @property
    def finished(self) -> bool:
        return (self.out_dir / "stage.json").exists()


def plan(recipe: Recipe, recipe_dir: Path, console: Console | None = None) -> list[PlannedStage]:
    """Each stage's key and directory, computed before anything runs (keys never read outputs)."""
    console = console or Console()
    root = run_root(recipe)
    keys: dict[str, str] = {}
    dirs: dict[str, Path] = {}
    stages = []
    for name in recipe.stages:
        upstream = {d: keys[d] for d in DEPENDS[name] if d in keys}
        inputs = {d: dirs[d] for d in DEPENDS[name] if d in dirs}
        ctx = StageContext(name, recipe, getattr(recipe, name), root, inputs, recipe_dir, console)
        extra = _import(FINGERPRINTS[name])(ctx) if name in FINGERPRINTS else ""
        keys[name] = stage_key(name, recipe, upstream, extra)
        dirs[name] = ctx.out_dir = root / f"{name}-{keys[name]}"
        stages.append(PlannedStage(name, keys[name], upstream, ctx))
    return stages


def run_pipeline(
    recipe_path: str | Path,
    only: list[str] | None = None,
    force: bool = False,
    overrides: dict[str, Any] | None = None,
    console: Console | None = None,
    sets: list[str] | None = None,
) -> dict[str, Path]:
    """Run each stage of the recipe in order; return the finished directory of each."""
    recipe_path = Path(recipe_path)
    recipe = load_recipe(recipe_path, overrides, sets)
    return run_recipe(recipe, recipe_path.resolve().parent, only, force, console)


def run_recipe(
    recipe: Recipe,
    recipe_dir: Path,
    only: list[str] | None = None,
    force: bool = False,
    console: Console | None = None,
    forced: set[Path] | None = None,
) -> dict[str, Path]:
    """Run a loaded recipe's stages under the run directory's lock. With `force`, each stage runs
    fresh in an emptied directory, once per `forced` set (a study shares stages across variants)."""
    console = console or Console()
    forced = set() if forced is None else forced
    stages = plan(recipe, recipe_dir, console)
    with lock(run_root(recipe)):
        for st in stages:
            if only and st.name not in only:
                if not st.finished:
                    raise ZephyrError(
                        f"stage '{st.name}' is needed by a later stage but has not run; drop --stages or include it"
                    )
                continue
            fresh = force and st.out_dir not in forced
            if st.finished and not fresh:
                console.print(f"[green]✓[/] {st.name}: finished earlier, skipping ({st.out_dir})")
                continue
            if fresh:
                fresh_dir(
                    st.out_dir
                )  # never resume, never leave the old stage.json beside new files
                forced.add(st.out_dir)
            _run_stage(st, console)
    return {st.name: st.out_dir for st in stages}


def _run_stage(st: PlannedStage, console: Console) -> None:
    st.out_dir.mkdir(parents=True, exist_ok=True)
    console.rule(f"[bold]{st.name}[/] → {st.out_dir}")
    t0 = time.time()
    _import(STAGES[st.name])(st.ctx)
    write_json(
        st.out_dir / "stage.json",
        provenance.record(
            {"recipe": dataclasses.asdict(st.ctx.recipe), "stage": st.name},
            key=st.key,
            upstream=st.upstream,
            seconds=round(time.time() - t0, 2),
        ),
    )
    console.print(f"[green]✓[/] {st.name} done in {time.time() - t0:.1f}s")


def finished(stage_dir: Path) -> dict:
    return read_json(stage_dir / "stage.json")
