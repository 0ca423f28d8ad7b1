"""The pipeline runs stages into keyed dirs, skips finished ones, and resumes unfinished ones."""

from pathlib import Path

import pytest
import yaml

from zephyr import pipeline
from zephyr.errors import ZephyrError

CALLS: list[str] = []


def fake_data(ctx):
    CALLS.append("data")
    (ctx.out_dir / "rows.txt").write_text(str(ctx.section.get("n", 0)))


def fake_sft(ctx):
    CALLS.append("sft")
    assert (ctx.inputs["data"] / "rows.txt").exists(), "upstream output must be visible"
    if (ctx.out_dir / "crash-once").exists():
        (ctx.out_dir / "crash-once").unlink()
        raise RuntimeError("simulated crash")
    (ctx.out_dir / "model.txt").write_text("ok")


@pytest.fixture
def recipe(tmp_path: Path, monkeypatch) -> Path:
    CALLS.clear()
    monkeypatch.setitem(pipeline.STAGES, "data", f"{__name__}:fake_data")
    monkeypatch.setitem(pipeline.STAGES, "sft", f"{__name__}:fake_sft")
    monkeypatch.setattr(pipeline, "FINGERPRINTS", {})
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
