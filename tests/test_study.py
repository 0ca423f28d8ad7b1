"""`zephyr study`: variants share equal stages, resume after a crash, plan with --dry-run, take
--set, type-check every variant at load, and end in one report; the eval cache scores M0 once."""

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from zephyr import pipeline, study
from zephyr.errors import ZephyrError

CALLS: list[str] = []
CRASH_AT: list[int] = []  # the sft call number (1-based) that crashes
REPORTS: list[dict] = []


@dataclass
class FakeData:
    n: int = 0
    sft: list | None = None


def fake_data(ctx):
    CALLS.append("data")
    (ctx.out_dir / "sft_train.jsonl").write_text("{}\n" * (ctx.section.get("n") or 1))


def fake_sft(ctx):
    CALLS.append("sft")
    if CRASH_AT and CRASH_AT[0] == CALLS.count("sft"):
        CRASH_AT.clear()
        raise RuntimeError("simulated crash in sft")
    (ctx.out_dir / "model").mkdir(exist_ok=True)


def fake_eval(ctx):
    CALLS.append("eval:" + "+".join(sorted(ctx.inputs)))
    (ctx.out_dir / "results.json").write_text('{"models": {}}')


@pytest.fixture
def recipe(tmp_path: Path, monkeypatch) -> Path:
    CALLS.clear()
    CRASH_AT.clear()
    REPORTS.clear()
    for name, fn in (("data", fake_data), ("sft", fake_sft), ("eval", fake_eval)):
        monkeypatch.setitem(pipeline.STAGES, name, f"{__name__}:{fn.__name__}")
    monkeypatch.setitem(pipeline.SECTIONS, "data", f"{__name__}:FakeData")
    monkeypatch.setattr(pipeline, "FINGERPRINTS", {})
    monkeypatch.setattr(
        study, "write_study_report", lambda base, evals, out: REPORTS.append(dict(evals))
    )
    path = tmp_path / "study.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "s",
                "out": str(tmp_path / "runs"),
                "stages": ["data", "sft", "eval", "report"],
                "data": {"n": 1, "sft": [{"source": "x", "cap": 20}]},
                "sft": {"schedule": "cosine", "max_seq_len": 64, "epochs": 2},
                "eval": {"tasks": ["hellaswag"], "limit": 10},
                "variants": [
                    {"name": "A"},
                    {"name": "B const", "sft.schedule": "constant"},
                    {"name": "C other data", "data.n": 2},
                ],
            },
            sort_keys=False,
        )
    )
    return path


def test_variants_share_every_stage_whose_key_is_equal(recipe):
    out = study.run_study(recipe, console=Console(quiet=True))
    assert CALLS.count("data") == 2, "A and B share one data dir; C's mixture differs"
    assert CALLS.count("sft") == 3 and CALLS.count("eval:data+sft") == 3
    rec = yaml.safe_load((out / "study.json").read_text())
    dirs = {v["name"]: v["stages"] for v in rec["variants"]}
    assert (
        dirs["A"]["data"]["dir"]
        == dirs["B const"]["data"]["dir"]
        != dirs["C other data"]["data"]["dir"]
    )
    assert "report" not in dirs["A"], "one report for the study, none per variant"
    assert list(REPORTS[0]) == ["A", "B const", "C other data"]
    study.run_study(recipe, console=Console(quiet=True))
    assert len(CALLS) == 8, "a finished study reruns nothing"


def test_a_study_resumes_after_an_interruption(recipe):
    CRASH_AT.append(2)  # variant B's sft
    with pytest.raises(RuntimeError, match="simulated crash"):
        study.run_study(recipe, console=Console(quiet=True))
    assert CALLS == ["data", "sft", "eval:data+sft", "sft"] and not REPORTS
    study.run_study(recipe, console=Console(quiet=True))
    assert CALLS[4:] == ["sft", "eval:data+sft", "data", "sft", "eval:data+sft"], (
        "A is not redone; B's sft resumes; C runs"
    )
    assert len(REPORTS) == 1


def test_dry_run_prints_the_plan_and_runs_nothing(recipe):
    console = Console(record=True, width=300)
    assert study.run_study(recipe, dry_run=True, console=console) is None
    text = console.export_text()
    assert CALLS == [] and not (recipe.parent / "runs").exists()
    for name in ("1. A", "2. B const", "3. C other data"):
        assert name in text
    assert "shared with 'A'" in text  # B's data dir
    assert "estimated total" in text and "tokens/s" in text
    assert (
        "19 (from caps) rows x 2 ep x 64 tok" in text
    )  # cap 20, 5% validation  # the sft size the estimate used
    assert "2 of 2 models to score (M0, M1)" in text and "1 of 2 models to score (M1)" in text
    assert "shared stage directories: data-" in text


def test_dry_run_from_the_command_line(recipe):
    from zephyr.cli import app

    res = CliRunner().invoke(app, ["study", str(recipe), "--dry-run", "--set", "sft.epochs=4"])
    assert res.exit_code == 0, res.output
    assert "x 4 ep x" in res.output and CALLS == []


def test_pipeline_dry_run_plans_a_plain_recipe(recipe):
    from zephyr.cli import app

    raw = yaml.safe_load(recipe.read_text())
    raw.pop("variants")
    plain = recipe.with_name("plain.yaml")
    plain.write_text(yaml.safe_dump(raw))
    res = CliRunner().invoke(app, ["pipeline", str(plain), "--dry-run", "--set", "sft.epochs=3"])
    assert res.exit_code == 0, res.output
    assert (
        "1. s" in res.output and "19 (from caps) rows x 3 ep x 64 tok" in res.output and CALLS == []
    )


def test_set_applies_to_every_variant_and_wins(recipe):
    _, variants = study.load_study(recipe, sets=["sft.schedule=cosine", "sft.lr=0.01"])
    assert [v.recipe.sft["schedule"] for v in variants] == ["cosine"] * 3, "the command line wins"
    assert all(v.recipe.sft["lr"] == 0.01 for v in variants)
    _, variants = study.load_study(recipe, sets=["variants.0.data.n=7"])
    assert variants[0].recipe.data["n"] == 7 and variants[1].recipe.data["n"] == 1


def test_every_variant_is_type_checked_before_anything_runs(recipe):
    raw = yaml.safe_load(recipe.read_text())
    raw["variants"].append({"name": "D", "sft.schedul": "constant"})
    recipe.write_text(yaml.safe_dump(raw))
    with pytest.raises(
        ZephyrError, match="unknown key 'schedul' in .*variant 'D': sft .did you mean 'schedule'"
    ):
        study.run_study(recipe, console=Console(quiet=True))
    assert CALLS == []
    raw["variants"][-1] = {"name": "A"}
    recipe.write_text(yaml.safe_dump(raw))
    with pytest.raises(ZephyrError, match="two variants are named 'A'"):
        study.load_study(recipe)
    with pytest.raises(ZephyrError, match="is a study: run `zephyr study"):
        pipeline.load_recipe(recipe)


def test_the_report_gets_one_name_per_run_when_supported(monkeypatch, tmp_path: Path):
    import zephyr.eval.report as report

    got = {}

    def with_names(runs, out_dir, title="", training=None, plots=True, hide=(), run_names=None):
        got.update(runs=runs, title=title, run_names=run_names)

    def without_names(runs, out_dir, title="", training=None, plots=True, hide=()):
        got.update(runs=runs, title=title, run_names="absent")

    base = pipeline.Recipe(name="s", report={"title": "T"})
    evals = [("A", tmp_path / "eval-1"), ("B", tmp_path / "eval-2")]
    monkeypatch.setattr(report, "write_report", with_names)
    study.write_study_report(base, evals, tmp_path)
    assert got == {
        "runs": [tmp_path / "eval-1", tmp_path / "eval-2"],
        "title": "T",
        "run_names": ["A", "B"],
    }
    monkeypatch.setattr(report, "write_report", without_names)
    study.write_study_report(base, evals, tmp_path)
    assert got["run_names"] == "absent"


def test_the_eval_cache_scores_each_model_and_task_once(tmp_path: Path):
    from zephyr.eval import cache
    from zephyr.eval import stage as eval_stage

    calls = []

    def fake_evaluate(label, spec, sec, shared):
        calls.append((label, list(sec.tasks)))
        tasks = {t: {"task": t, "metrics": {"acc": 0.5}, "n": 1} for t in sec.tasks}
        return {"path": spec, "tasks": tasks, "size": {"params": 1}, "seconds": 1.0}

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("{}\n")
    sec = eval_stage.EvalSection(tasks=["hellaswag", "reward_accuracy"], limit=5)
    opts = {"reward_accuracy": {"file": str(pairs)}}
    shared = eval_stage.EvalRun(
        opts, tmp_path, 0, tmp_path / "logs", Console(quiet=True), cache=tmp_path / "cache"
    )
    args = (shared, fake_evaluate)
    first = cache.evaluate_cached("M0", str(base), sec, *args)
    again = cache.evaluate_cached("M0", str(base), sec, *args)
    assert calls == [("M0", ["hellaswag", "reward_accuracy"])], "the second M0 is shared"
    assert again["tasks"] == first["tasks"] and again["size"] == {"params": 1}
    sec3 = eval_stage.EvalSection(tasks=["hellaswag", "reward_accuracy", "mmlu"], limit=5)
    cache.evaluate_cached("M0", str(base), sec3, *args)
    assert calls[-1] == ("M0", ["mmlu"]), "only the new task is scored"
    pairs.write_text("{}\n{}\n")  # other held-out pairs: that task again, not the others
    cache.evaluate_cached("M0", str(base), sec, *args)
    assert calls[-1] == ("M0", ["reward_accuracy"])
    (base / "config.json").write_text('{"changed": 1}')  # another model: everything again
    cache.evaluate_cached("M0", str(base), sec, *args)
    assert calls[-1] == ("M0", ["hellaswag", "reward_accuracy"])


TINY_TRAIN = {"max_steps": 1, "micro_batch": 2, "max_seq_len": 64, "max_val": 2}


def tiny_study(
    tmp_path: Path,
    tiny_model: Path,
    shared_data: Path,
    data: dict,
    eval_: dict,
    variants: list[dict],
    **sections: dict,
) -> Path:
    """A study recipe on the tiny model: the real data stage on synthetic rows, one-step training."""
    path = tmp_path / "study.yaml"
    recipe = {
        "name": "tiny",
        "model": str(tiny_model),
        "out": str(tmp_path / "runs"),
        "data_root": str(shared_data),
        "stages": ["data", "sft", "eval"],
        "data": {
            "synth": {"n_per_family": 3, "test_n_per_family": 1},
            "decontam": {"against": []},
            "sft": [{"source": "synth"}],
            "val_fraction": 0.2,
            **data,
        },
        "sft": dict(TINY_TRAIN),
        **sections,
        "eval": {**eval_, "speed_tokens": 0},
        "variants": variants,
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_real_study_on_the_tiny_model_shares_data_and_m0(tiny_model, shared_data, tmp_path):
    """The real data, sft and eval stages: two schedules, one data dir, M0 scored once, one report."""
    import json

    path = tiny_study(
        tmp_path,
        tiny_model,
        shared_data,
        data={"mcqa": [{"source": "synth"}]},
        eval_={"tasks": ["mcqa_letter"], "limit": 2},
        variants=[{"name": "cosine"}, {"name": "constant", "sft.schedule": "constant"}],
    )
    out = study.run_study(path, console=Console(quiet=True))
    root = tmp_path / "runs" / "tiny"
    assert len(list(root.glob("data-*"))) == 1 and len(list(root.glob("sft-*"))) == 2
    evals = sorted(root.glob("eval-*/results.json"), key=lambda p: p.stat().st_mtime)
    first, second = (json.loads(p.read_text())["models"] for p in evals)
    assert "shared" not in first["M0"] and second["M0"]["shared"] == {
        "mcqa_letter": str(evals[0].parent / "logs" / "M0")
    }, "the second variant's M0 comes from the eval cache"
    assert second["M0"]["tasks"] == first["M0"]["tasks"]
    assert (out / "report.html").is_file() and (out / "study.json").is_file()
    console = Console(record=True, width=300)
    study.run_study(path, dry_run=True, console=console)
    text = console.export_text()
    assert text.count(" done ") == 6 and "shared with" not in text  # 3 stages x 2 variants
    assert "estimated total: ~0 min" in text


def test_row_tokens_measures_built_rows(tmp_path: Path):
    from zephyr import estimate

    f = tmp_path / "sft_train.jsonl"
    f.write_text(("x" * 399 + "\n") * 10)  # 400 chars a line
    assert estimate.row_tokens(f) == pytest.approx(
        400 / estimate.CHARS_PER_TOKEN * estimate.PAD_FACTOR
    )


def test_reward_accuracy_only_for_preference_models_and_m0_once(tiny_model, shared_data, tmp_path):
    """An SFT-only variant and an "M0 + DPO" variant: reward accuracy is scored for the DPO model
    (against M0) only, so M0's scores are equal in both runs and the report shows one M0 row."""
    import json

    path = tiny_study(
        tmp_path,
        tiny_model,
        shared_data,
        data={"pref": [{"source": "synth"}]},
        eval_={"tasks": ["reward_accuracy"], "limit": 3},
        variants=[
            {"name": "sft only"},
            {"name": "dpo from base", "stages": ["data", "dpo", "eval"], "dpo.from": "base"},
        ],
        dpo=dict(TINY_TRAIN),
    )
    out = study.run_study(path, console=Console(quiet=True))
    root = tmp_path / "runs" / "tiny"
    evals = sorted(root.glob("eval-*/results.json"), key=lambda p: p.stat().st_mtime)
    sft_run, dpo_run = (json.loads(p.read_text())["models"] for p in evals)
    assert sft_run["M0"]["tasks"] == {} and sft_run["M1"]["tasks"] == {}
    assert dpo_run["M0"]["tasks"] == {}
    ra = dpo_run["M2"]["tasks"]["reward_accuracy"]
    assert ra["n"] >= 1 and ra["extra"]["reference"] == str(tiny_model)
    report = (out / "report.md").read_text()
    table = report.split("## Table 1")[1].split("\n\n")[1]
    assert sum(line.startswith("| **M0** ") for line in table.splitlines()) == 1, table
    assert sum(line.startswith("| **M0 + DPO** ") for line in table.splitlines()) == 1, table


def test_the_estimate_takes_the_bf16_rates_where_the_hardware_has_them(monkeypatch):
    """Eval in `auto` / bfloat16 and bf16 training use the rates measured in bf16 only where the
    CPU multiplies bf16 in hardware; an AVX2-only CPU keeps the fp32 rates."""
    from types import SimpleNamespace

    from zephyr import device, estimate

    def stage(section: dict) -> SimpleNamespace:
        recipe = SimpleNamespace(model="smollm2-135m", device="cpu")
        return SimpleNamespace(ctx=SimpleNamespace(section=section, recipe=recipe))

    ev = {"tasks": ["hellaswag"], "limit": 100}
    for has_bf16, speedup in ((False, 1.0), (True, estimate.EVAL_BF16_SPEEDUP)):
        monkeypatch.setattr(device, "cpu_bf16", lambda cpuinfo=None, v=has_bf16: v)
        fp32 = estimate.eval_seconds_per_model(stage(ev))
        auto = estimate.eval_seconds_per_model(stage({**ev, "dtype": "auto"}))
        assert fp32 == pytest.approx(100 * estimate.EVAL_S_PER_ITEM["hellaswag"])
        assert auto == pytest.approx(fp32 / speedup)
        assert estimate._bf16(stage({"bf16": True})) is has_bf16
