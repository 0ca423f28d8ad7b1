"""`zephyr pipeline RECIPE`: run the stages a recipe names, each into a directory keyed by a hash
of its config and inputs, so a rerun skips what is already finished.

A stage is a function `run(ctx: StageContext) -> None` that writes into `ctx.out_dir`. When it
returns, the pipeline writes `stage.json` (config, key, versions, seconds) there: that file is the
"finished" marker. A stage interrupted half-way leaves its directory without `stage.json`, and the
next run calls it again in the same directory, so stages that checkpoint (training) can resume.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from zephyr import provenance
from zephyr.config import from_dict, load_yaml
from zephyr.errors import ZephyrError
from zephyr.io import read_json, sha256_json, write_json

DEFAULT_DATA_ROOT = "../shared/data"

# stage name -> "module:function"; imported lazily so `zephyr --help` stays fast.
STAGES: dict[str, str] = {
    "data": "zephyr.data.stage:run",
    "sft": "zephyr.train.stage:run_sft",
    "dpo": "zephyr.train.stage:run_dpo",
    "kto": "zephyr.train.stage:run_kto",
    "quantize": "zephyr.quantize.stage:run",
    "eval": "zephyr.eval.stage:run",
    "report": "zephyr.eval.stage:run_report",
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


@dataclass
class Recipe:
    """The top level of a recipe YAML. Stage sections stay plain dicts; each stage types its own."""

    name: str = "run"
    seed: int = 0
    model: str = "smollm2-135m"
    dtype: str = "float32"
    device: str = "auto"  # auto|cpu|cuda|mps for training and evaluation (zephyr.device)
    chat_template: str | None = None  # chatml, a .jinja file, Jinja text; None: own, else ChatML
    out: str = "runs"
    # a recipe's own paths are relative to the recipe file; empty means ../shared/data from the cwd
    data_root: str = ""
    stages: list[str] = field(default_factory=lambda: ["data"])
    data: dict = field(default_factory=dict)
    sft: dict = field(default_factory=dict)
    dpo: dict = field(default_factory=dict)
    kto: dict = field(default_factory=dict)
    quantize: dict = field(default_factory=dict)
    eval: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)


@dataclass
class StageContext:
    name: str
    recipe: Recipe
    section: dict
    out_dir: Path
    inputs: dict[str, Path]  # finished upstream stage dirs, by stage name
    recipe_dir: Path  # relative paths in the recipe are relative to this
    console: Console = field(default_factory=Console)

    def path(self, p: str | Path) -> Path:
        """Resolve a path from the recipe: absolute, or relative to the recipe's directory."""
        p = Path(p).expanduser()
        return p if p.is_absolute() else (self.recipe_dir / p)

    @property
    def data_root(self) -> Path:
        if not self.recipe.data_root:
            return (Path.cwd() / DEFAULT_DATA_ROOT).resolve()
        return self.path(self.recipe.data_root)


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    raw = load_yaml(path)
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    recipe = from_dict(Recipe, raw, where=str(path))
    for stage in recipe.stages:
        if stage not in STAGES:
            raise ZephyrError(f"{path}: unknown stage '{stage}'; known stages: {', '.join(STAGES)}")
    return recipe


def _import(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def stage_key(name: str, recipe: Recipe, upstream: dict[str, str], extra: str = "") -> str:
    """Hash of what a stage's output depends on: its section, the global fields, upstream keys."""
    section = getattr(recipe, name)
    keys = ("seed", "model", "dtype", "data_root", "chat_template")  # None is left out (old keys)
    globals_ = {k: v for k in keys if (v := getattr(recipe, k)) is not None}
    return sha256_json(
        {
            "stage": name,
            "section": section,
            "globals": globals_,
            "upstream": upstream,
            "extra": extra,
        }
    )[:12]


def run_pipeline(
    recipe_path: str | Path,
    only: list[str] | None = None,
    force: bool = False,
    overrides: dict[str, Any] | None = None,
    console: Console | None = None,
) -> dict[str, Path]:
    """Run each stage of the recipe in order; return the finished directory of each."""
    console = console or Console()
    recipe_path = Path(recipe_path)
    recipe = load_recipe(recipe_path, overrides)
    recipe_dir = recipe_path.resolve().parent
    out_root = Path(recipe.out).expanduser()
    if not out_root.is_absolute():
        out_root = Path.cwd() / out_root
    keys: dict[str, str] = {}
    dirs: dict[str, Path] = {}
    for name in recipe.stages:
        upstream = {d: keys[d] for d in DEPENDS[name] if d in keys}
        fn = _import(STAGES[name])
        section = getattr(recipe, name)
        inputs = {d: dirs[d] for d in DEPENDS[name] if d in dirs}
        ctx = StageContext(name, recipe, section, out_root, inputs, recipe_dir, console)
        extra = _import(FINGERPRINTS[name])(ctx) if name in FINGERPRINTS else ""
        key = stage_key(name, recipe, upstream, extra)
        keys[name] = key
        out_dir = out_root / recipe.name / f"{name}-{key}"
        dirs[name] = ctx.out_dir = out_dir
        marker = out_dir / "stage.json"
        if only and name not in only:
            if not marker.exists():
                raise ZephyrError(
                    f"stage '{name}' is needed by a later stage but has not run; drop --stages or include it"
                )
            continue
        if marker.exists() and not force:
            console.print(f"[green]✓[/] {name}: finished earlier, skipping ({out_dir})")
            continue
        out_dir.mkdir(parents=True, exist_ok=True)
        console.rule(f"[bold]{name}[/] → {out_dir}")
        t0 = time.time()
        fn(ctx)
        write_json(
            marker,
            provenance.record(
                {"recipe": dataclasses.asdict(recipe), "stage": name},
                key=key,
                upstream=upstream,
                seconds=round(time.time() - t0, 2),
            ),
        )
        console.print(f"[green]✓[/] {name} done in {time.time() - t0:.1f}s")
    return dirs


def finished(stage_dir: Path) -> dict:
    return read_json(stage_dir / "stage.json")
