"""The pipeline runs stages into keyed dirs, skips finished ones, and resumes unfinished ones."""

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from zephyr import pipeline
from zephyr.errors import ZephyrError

CALLS: list[str] = []
SEEN: list[list[str]] = []  # what each sft call found in its directory when it started
CRASH: list[bool] = []  # a True here makes the next sft call crash half-way


@dataclass
class FakeData:
    n: int = 0


def fake_data(ctx):
    CALLS.append("data")
    (ctx.out_dir / "rows.txt").write_text(str(ctx.section.get("n", 0)))


def fake_sft(ctx):
    CALLS.append("sft")
    SEEN.append(sorted(p.name for p in ctx.out_dir.iterdir()))
    assert (ctx.inputs["data"] / "rows.txt").exists(), "upstream output must be visible"
    if (ctx.out_dir / "crash-once").exists():
        (ctx.out_dir / "crash-once").unlink()
        raise RuntimeError("simulated crash")
    (ctx.out_dir / "model.txt").write_text("ok")
    if CRASH and CRASH.pop():
        raise RuntimeError("simulated crash after writing model.txt")


@pytest.fixture
def recipe(tmp_path: Path, monkeypatch) -> Path:
    CALLS.clear()
    SEEN.clear()
    CRASH.clear()
    monkeypatch.setitem(pipeline.STAGES, "data", f"{__name__}:fake_data")
    monkeypatch.setitem(pipeline.STAGES, "sft", f"{__name__}:fake_sft")
    monkeypatch.setattr(pipeline, "FINGERPRINTS", {})
    monkeypatch.setitem(pipeline.SECTIONS, "data", f"{__name__}:FakeData")
    path = tmp_path / "r.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "out": str(tmp_path / "runs"),
                "stages": ["data", "sft"],
                "data": {"n": 1},
            }
        )
    )
    return path


def test_rerun_skips_finished_stages(recipe):
    first = pipeline.run_pipeline(recipe)
    assert CALLS == ["data", "sft"]
    second = pipeline.run_pipeline(recipe)
    assert CALLS == ["data", "sft"], "finished stages must not run again"
    assert first == second
    assert (first["sft"] / "stage.json").exists()


def test_config_change_reruns_the_stage_and_its_dependants(recipe):
    first = pipeline.run_pipeline(recipe)
    data = yaml.safe_load(recipe.read_text())
    data["data"]["n"] = 2
    recipe.write_text(yaml.safe_dump(data))
    second = pipeline.run_pipeline(recipe)
    assert first["data"] != second["data"] and first["sft"] != second["sft"]
    assert CALLS == ["data", "sft", "data", "sft"]


def test_interrupted_stage_is_resumed_in_the_same_dir(recipe):
    first = pipeline.run_pipeline(recipe)
    # make the sft dir look interrupted: no stage.json, and a marker that crashes it once
    (first["sft"] / "stage.json").unlink()
    (first["sft"] / "crash-once").write_text("")
    with pytest.raises(RuntimeError, match="simulated crash"):
        pipeline.run_pipeline(recipe)
    assert not (first["sft"] / "stage.json").exists(), "a crashed stage must not be marked finished"
    resumed = pipeline.run_pipeline(recipe)
    assert resumed["sft"] == first["sft"] and (resumed["sft"] / "stage.json").exists()
    assert CALLS == ["data", "sft", "sft", "sft"], "data is finished and must not rerun"


def test_unknown_stage_and_key_are_one_sentence(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [data, trian]\n")
    with pytest.raises(ZephyrError, match="unknown stage 'trian'"):
        pipeline.load_recipe(bad)
    bad.write_text("stgaes: [data]\n")
    with pytest.raises(ZephyrError, match="did you mean 'stages'"):
        pipeline.load_recipe(bad)


def test_missing_recipe(tmp_path: Path):
    with pytest.raises(ZephyrError, match="recipe not found"):
        pipeline.load_recipe(tmp_path / "nope.yaml")


# ---------------------------------------------------------------------------- --set
def test_set_overrides_any_key_with_yaml_values(recipe):
    r = pipeline.load_recipe(recipe, sets=["data.n=5", "sft.lr=0.001", "seed=3", "dpo.from=base"])
    assert r.data == {"n": 5} and r.sft == {"lr": 0.001} and r.seed == 3
    assert r.dpo == {"from": "base"}
    first = pipeline.run_pipeline(recipe)
    second = pipeline.run_pipeline(recipe, sets=["data.n=2"])
    assert first["data"] != second["data"], "a --set value is part of the stage key"
    assert (second["data"] / "rows.txt").read_text() == "2"


def test_set_indexes_lists_and_names_bad_input(recipe):
    raw = {"data": {"sft": [{"source": "lima", "cap": 5}]}}
    pipeline.set_dotted(raw, "data.sft.0.cap", 9, "x")
    assert raw["data"]["sft"][0]["cap"] == 9
    with pytest.raises(ZephyrError, match="indexes a list of 1 items"):
        pipeline.set_dotted(raw, "data.sft.3.cap", 9, "x")
    with pytest.raises(ZephyrError, match="is not key=value"):
        pipeline.load_recipe(recipe, sets=["sft.lr"])
    with pytest.raises(ZephyrError, match="unknown key 'n_rows'"):
        pipeline.load_recipe(recipe, sets=["sft.n_rows=3"])  # typed like the file's own keys


# ---------------------------------------------------------------------------- load-time types
TYPOS = {
    "data": ({"val_fracton": 0.1}, "unknown key 'val_fracton'.*did you mean 'val_fraction'"),
    "sft": ({"epochs": "many"}, "sft.epochs must be a number"),
    "dpo": ({"from": "sideways"}, "dpo.start must be one of auto, base, sft"),
    "kto": ({"bta": 0.1}, "unknown key 'bta'.*did you mean 'beta'"),
    "quantize": ({"methds": ["int8"]}, "unknown key 'methds'.*did you mean 'methods'"),
    "eval": ({"limit": "all"}, "eval.limit must be int"),
    "eval-task": ({"tasks": ["hellaswag", "gms8k"]}, "unknown task 'gms8k'"),
    "report": ({"titel": "x"}, "unknown key 'titel'.*did you mean 'title'"),
}


@pytest.mark.parametrize("stage", list(TYPOS))
def test_each_stage_section_is_type_checked_at_load(tmp_path: Path, stage: str):
    section, message = TYPOS[stage]
    path = tmp_path / "r.yaml"
    key = stage.split("-")[0]
    path.write_text(yaml.safe_dump({"stages": list(pipeline.STAGES), key: section}))
    with pytest.raises(ZephyrError, match=message):
        pipeline.load_recipe(path)


def test_sections_are_checked_without_importing_torch(tmp_path: Path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"stages": list(pipeline.STAGES), "sft": {"lr": 0.1}}))
    code = (
        "import sys; from zephyr.pipeline import load_recipe; "
        f"load_recipe({str(path)!r}); assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_env())


def test_the_demo_recipe_passes_its_checks():
    r = pipeline.load_recipe(Path(__file__).parents[1] / "recipes" / "demo.yaml")
    assert r.stages[0] == "data"


# ---------------------------------------------------------------------------- --force
def test_force_is_a_fresh_run_in_a_clean_dir(recipe):
    first = pipeline.run_pipeline(recipe)
    (first["sft"] / "stale.txt").write_text("from the old run")
    CRASH.append(True)
    with pytest.raises(RuntimeError, match="simulated crash"):
        pipeline.run_pipeline(recipe, force=True)
    assert SEEN[-1] == [], "a forced stage must start in an empty directory"
    assert not (first["sft"] / "stage.json").exists(), "old stage.json beside half-new outputs"
    assert not (first["sft"] / "stale.txt").exists()
    assert CALLS == ["data", "sft", "data", "sft"], "force reruns every stage"
    again = pipeline.run_pipeline(recipe)  # an interrupted forced run resumes like any other
    assert again == first and (again["sft"] / "stage.json").exists()
    assert SEEN[-1] == ["model.txt"] and CALLS[-1] == "sft"
    assert not list(first["sft"].parent.glob(".sft-*")), "the moved-aside copy is removed"


# ---------------------------------------------------------------------------- lock
def _env() -> dict:
    import os

    src = str(Path(pipeline.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_a_second_pipeline_on_the_same_run_dir_is_refused(recipe, tmp_path: Path):
    run_dir = tmp_path / "runs" / "t"
    code = (
        "import sys; from pathlib import Path; from zephyr.rundir import lock\n"
        "with lock(Path(sys.argv[1])):\n    print('held', flush=True); sys.stdin.readline()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(run_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(
            ZephyrError, match=f"in use by another zephyr run \\(pid {holder.pid} on"
        ):
            pipeline.run_pipeline(recipe)
        assert CALLS == [], "nothing may run while another process holds the run dir"
    finally:
        holder.communicate("\n", timeout=30)
    # the holder is gone; its lock file (naming a dead pid) is taken over
    assert str(holder.pid) in (run_dir / ".zephyr.lock").read_text()
    pipeline.run_pipeline(recipe)
    assert CALLS == ["data", "sft"]


# ---------------------------------------------------------------------------- model fingerprint
def test_stage_key_follows_a_local_model_dirs_contents(recipe, tmp_path: Path):
    model = tmp_path / "base"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 64}')
    (model / "model.safetensors").write_bytes(b"\0" * (2 << 20))  # large: size + mtime
    first = pipeline.run_pipeline(recipe, overrides={"model": str(model)})
    (model / "config.json").write_text('{"hidden_size": 32}')
    second = pipeline.run_pipeline(recipe, overrides={"model": str(model)})
    assert second["sft"] != first["sft"], "a changed config must not reuse the old sft stage"
    assert second["data"] == first["data"], "the data stage reads no model"
    (model / "model.safetensors").write_bytes(b"\1" * (3 << 20))
    third = pipeline.run_pipeline(recipe, overrides={"model": str(model)})
    assert third["sft"] not in (first["sft"], second["sft"]), "retrained weights, new key"
    assert CALLS == ["data", "sft", "sft", "sft"]


def test_train_force_with_data_and_out_starts_in_an_empty_dir(tmp_path: Path, monkeypatch):
    import zephyr.train.sft as sft_module
    from zephyr.train.cli import train_command

    out = tmp_path / "sft-out"
    (out / "model").mkdir(parents=True)
    (out / "metrics.jsonl").write_text('{"step": 9, "loss": 1.0}\n')  # a finished earlier run
    seen = []
    monkeypatch.setattr(
        sft_module,
        "train_sft",
        lambda cfg, spec, data, o, seed, console, **kw: seen.append(sorted(o.iterdir())),
    )
    train_command("sft", None, tmp_path, out, "smollm2-135m", [], resume=False, force=True)
    assert seen == [[]], "--force must not keep the old run's files"
