"""The report's inputs: eval results of one or more runs -> `Collected` (rows, curves, Table 2).

A run is a pipeline run directory (its newest eval-*), an eval stage directory, a results.json, or
a `zephyr eval --json` file. Each row is a model of one run; a model that several runs evaluated
identically (a base model's M0, an M1 two variants share) is one row naming every run. Labels:
M0 base, M1 SFT, M2 DPO, M2-kto, "M0 + DPO" (DPO from the base), quantized `<label>-<method>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zephyr.errors import ZephyrError
from zephyr.io import read_json, read_jsonl

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
