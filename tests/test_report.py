"""Bootstrap intervals, the comparison report, `zephyr report`, and the eval/report stages."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest

from zephyr.eval import bootstrap, report


def task(name: str, p: float, n: int, seed: int, protocol: str = "0-shot test protocol") -> dict:
    rng = random.Random(seed)
    acc = [float(rng.random() < p) for _ in range(n)]
    return {
        "task": name,
        "metrics": {"acc": sum(acc) / n},
        "protocol": protocol,
        "n": n,
        "per_item": {"acc": acc},
        "extra": {},
    }


def fake_run(root: Path, models: dict[str, float], n: int = 60) -> Path:
    """A pipeline run dir: eval-*/results.json (+ stage.json) and an sft stage's metrics.jsonl."""
    run = root / "demo"
    entries = {}
    for k, (label, p) in enumerate(models.items()):
        entries[label] = {
            "path": f"/models/{label}",
            "tasks": {"arc_challenge": task("arc_challenge", p, n, seed=k)},
            "size": {"params": 134_515_008, "disk_mb": 538.1 if "int8" not in label else 170.0},
            "speed": {"tokens_per_s": 25.0 + k},
        }
    (run / "eval-1").mkdir(parents=True)
    (run / "eval-1/results.json").write_text(
        json.dumps({"models": entries, "settings": {"limit": n, "seed": 0}})
    )
    (run / "eval-1/stage.json").write_text("{}")
    (run / "sft-1").mkdir()
    rows = [
        {
            "step": s,
            "loss": 2.0 / (s + 1),
            "lr": 1e-4,
            **({"val_loss": 2.1 / (s + 1)} if s % 5 == 0 else {}),
        }
        for s in range(11)
    ]
    (run / "sft-1/metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


# ---------------------------------------------------------------------------- bootstrap
def test_bootstrap_ci_contains_mean_and_narrows_with_n():
    rng = np.random.default_rng(1)
    widths = []
    for n in (20, 200, 2000):
        x = (rng.random(n) < 0.3).astype(float)
        lo, hi = bootstrap.ci(x)
        assert lo <= x.mean() <= hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2] > 0
    assert bootstrap.ci(x) == bootstrap.ci(x)  # seeded
    assert bootstrap.ci([1.0] * 10) == (1.0, 1.0)


def test_bootstrap_bleu_and_perplexity_intervals_contain_corpus_values():
    from zephyr.eval.tasks import gsm8k

    hyps = ["the cat sat on the mat", "a dog ran", "#### 7", "he paid 5 dollars", "so x = 3"]
    refs = ["the cat sat on a mat", "the dog ran far", "#### 7", "he paid 6 dollars", "x = 3"]
    metrics, per_item, stats = gsm8k.score(hyps, [{"answer": r} for r in refs])
    res = {"metrics": metrics, "per_item": per_item, "extra": {"bleu_stats": stats}}
    cis = bootstrap.task_cis(res, resamples=200)
    assert cis["bleu4"][0] <= metrics["bleu4"] <= cis["bleu4"][1]
    assert cis["rouge1"][0] <= metrics["rouge1"] <= cis["rouge1"][1]
    ll, words, nbytes = (
        [-50.0, -80.0, -20.0, -64.0],
        [10.0, 20.0, 4.0, 12.0],
        [50.0, 90.0, 20.0, 60.0],
    )
    total = sum(ll)
    wt = {
        "metrics": {
            "word_perplexity": math.exp(-total / sum(words)),
            "bits_per_byte": -total / sum(nbytes) / math.log(2),
        },
        "per_item": {"loglikelihood": ll, "words": words, "bytes": nbytes},
    }
    cis = bootstrap.task_cis(wt, resamples=300)
    for name in ("word_perplexity", "bits_per_byte"):
        assert cis[name][0] <= wt["metrics"][name] <= cis[name][1] and cis[name][0] < cis[name][1]


# ---------------------------------------------------------------------------- report
def test_report_two_models_has_deltas_and_is_self_contained(tmp_path):
    run = fake_run(tmp_path, {"M0": 0.3, "M1": 0.8})
    paths = report.write_report([run], tmp_path / "out")
    md = paths["md"].read_text()
    page = paths["html"].read_text()
    base = json.loads((run / "eval-1/results.json").read_text())["models"]
    a0, a1 = (base[m]["tasks"]["arc_challenge"]["metrics"]["acc"] * 100 for m in ("M0", "M1"))
    row = next(line for line in md.splitlines() if line.startswith("| **M1**"))
    assert f"{a1:.1f} [" in row and f"(+{a1 - a0:.1f}*)" in row  # value, CI, significant delta
    assert "0-shot test protocol" in md and "![train_sft](plots/train_sft.png)" in md
    # coloured delta, CI, embedded images, nothing fetched from elsewhere
    assert re.search(r'class="up"[^>]*>\+%.1f' % (a1 - a0), page)
    assert page.count("data:image/png;base64,") == 2  # eval chart + sft curves
    assert (
        not re.search(r'(src|href)="(https?:)?//', page)
        and "<script" not in page
        and "<link" not in page
    )
    assert (tmp_path / "out/plots/train_sft.png").stat().st_size > 1000


def test_report_shows_the_quantize_stage_comparison(tmp_path):
    run = fake_run(tmp_path, {"M0": 0.3, "M2": 0.5})
    rows = {}
    for label, mb, ppl, tps in (("fp32", 513.2, 23.0, 15.0), ("int4-g32-lora", 125.9, 23.1, 21.0)):
        rows[label] = {
            "disk_mb": mb,
            "peak_rss_mb": 1100.0,
            "tokens_per_s": tps,
            "wikitext_ppl": ppl,
            "size_x_fp32": mb / 513.2,
            "ppl_x_fp32": ppl / 23.0,
            "speed_x_fp32": tps / 15.0,
            "tasks": {"mmlu": {"value": 0.26, "ci95": [0.2, 0.33], "n": 50}},
        }
    rows["int4-g32-lora"] |= {"weight_rel_error": 3.1e-10, "quantize_s": 26.0}
    compare = {"source": "/runs/dpo/model", "config": {"ppl_tokens": 4096}, "models": rows}
    (run / "quantize-1").mkdir()
    (run / "quantize-1/compare.json").write_text(json.dumps(compare))
    paths = report.write_report([run], tmp_path / "out", plots=False)
    md, page = paths["md"].read_text(), paths["html"].read_text()
    assert "## Table 2: quantization of `/runs/dpo/model`" in md
    row = next(line for line in md.splitlines() if line.startswith("| int4-g32-lora |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:3] == ["125.9", "0.245"] and "0.260 [0.20,0.33]" in cells
    assert "3.10e-10" in cells and "mmlu (n=50)" in md and "4096 tokens" in md
    assert "<td>int4-g32-lora</td>" in page and "Table 2" in page


def test_report_worse_model_is_red_and_labels_collide_across_runs(tmp_path):
    run = fake_run(tmp_path, {"M0": 0.7, "M2-int8": 0.2})
    other = tmp_path / "b"
    fake_run(other, {"M0": 0.5})
    t = report.build_table(report.collect([run, other / "demo"]))
    assert t.models == ["M0@/models/M0", "M0@demo", "M2-int8@demo"]  # same base, new scores: 2 rows
    c = t.cells[("M2-int8@demo", "arc_challenge", "acc")]
    assert c.delta < 0 and 'class="down"' in report._delta_html(c, "acc")
    assert report.direction("word_perplexity") == -1 and report.direction("acc") == 1


def test_report_errors_are_one_sentence(tmp_path):
    from zephyr.errors import ZephyrError

    with pytest.raises(ZephyrError, match="no eval results"):
        report.write_report([tmp_path], tmp_path / "out")
    (tmp_path / "results.json").write_text("[]")
    with pytest.raises(ZephyrError, match="'models'"):
        report.write_report([tmp_path / "results.json"], tmp_path / "out")


def test_zephyr_report_cli(tmp_path):
    import typer
    from typer.testing import CliRunner

    from zephyr.eval import report_cli

    app = typer.Typer()  # just this command: other stages' commands are not under test here

    @app.callback()
    def main() -> None:
        pass

    report_cli.register(app)
    run = fake_run(tmp_path, {"M0": 0.3, "M1": 0.5})
    res = CliRunner().invoke(
        app,
        ["report", str(run / "eval-1/results.json"), "--out", str(tmp_path / "r"), "--no-plots"],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r/report.html").is_file() and "M1" in (tmp_path / "r/report.md").read_text()
    runs = [
        study_run(tmp_path, n, "smollm2-135m", {"M0": 0.3, "M1": p}, ["sft"])
        for n, p in (("a", 0.6), ("b", 0.4))
    ]
    named = CliRunner().invoke(
        app,
        [
            "report",
            *map(str, runs),
            "--out",
            str(tmp_path / "r3"),
            "--no-plots",
            "--name",
            "smollm2/D_S/cosine",
            "--name",
            "smollm2/D_S/constant",
        ],
    )
    assert named.exit_code == 0, named.output
    md = (tmp_path / "r3/report.md").read_text()
    assert "| smollm2/D_S/cosine, smollm2/D_S/constant |" in md and "| smollm2/D_S/constant |" in md
    bad = CliRunner().invoke(
        app, ["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")]
    )
    assert bad.exit_code == 2 and "does not exist" in " ".join(bad.output.split())


# ---------------------------------------------------------------------------- stages
def test_eval_and_report_stages_on_tiny_model(tiny_model, tmp_path):
    from rich.console import Console

    from zephyr.eval import report_stage, stage
    from zephyr.pipeline import Recipe, StageContext

    data = tmp_path / "data-1"
    data.mkdir()
    (data / "mcqa_val.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "id": f"q{i}",
                    "source": "t",
                    "question": f"Which number is {i}?",
                    "choices": [str(i), str(i + 1), "x"],
                    "answer": 0,
                    "subject": "math",
                }
            )
            + "\n"
            for i in range(4)
        )
    )
    # a "trained" model: the tiny model copied as the sft stage's output, with metrics
    sft = tmp_path / "sft-1"
    (sft / "model").mkdir(parents=True)
    for f in Path(tiny_model).iterdir():
        (sft / "model" / f.name).write_bytes(f.read_bytes())
    (sft / "metrics.jsonl").write_text(
        json.dumps({"step": 0, "loss": 1.0, "lr": 1e-4, "val_loss": 1.1}) + "\n"
    )
    recipe = Recipe(
        name="t",
        model=str(tiny_model),
        eval={"tasks": ["mcqa_letter"], "limit": 3, "batch_size": 2, "speed_tokens": 3},
        report={"title": "T"},
    )
    console = Console(quiet=True)
    ctx = StageContext(
        "eval",
        recipe,
        recipe.eval,
        tmp_path / "eval-1",
        {"data": data, "sft": sft},
        tmp_path,
        console,
    )
    ctx.out_dir.mkdir()
    stage.run(ctx)
    res = json.loads((ctx.out_dir / "results.json").read_text())
    assert list(res["models"]) == ["M0", "M1"]
    m0 = res["models"]["M0"]
    assert (
        m0["tasks"]["mcqa_letter"]["n"] == 3
        and m0["size"]["params"] > 0
        and m0["speed"]["tokens_per_s"] > 0
    )
    assert m0["tasks"]["mcqa_letter"]["extra"]["source"].endswith("mcqa_val.jsonl")
    assert (ctx.out_dir / "logs/M1/mcqa_letter.jsonl").is_file() and not (
        ctx.out_dir / "results.partial.json"
    ).exists()
    # same weights: identical scores, zero delta
    assert (
        res["models"]["M1"]["tasks"]["mcqa_letter"]["per_item"]
        == m0["tasks"]["mcqa_letter"]["per_item"]
    )

    rctx = StageContext(
        "report",
        recipe,
        recipe.report,
        tmp_path / "report-1",
        {"eval": ctx.out_dir, "sft": sft},
        tmp_path,
        console,
    )
    report_stage.run_report(rctx)
    page = (rctx.out_dir / "report.html").read_text()
    assert (
        "<title>T</title>" in page
        and "train_sft" in page
        and (rctx.out_dir / "report.json").is_file()
    )


def test_find_models_labels_quantized_by_source(tmp_path, tiny_model):
    from zephyr.eval import stage
    from zephyr.pipeline import Recipe, StageContext

    dirs = {}
    for name in ("sft", "dpo"):
        d = tmp_path / f"{name}-1" / "model"
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
        dirs[name] = d.parent
    q = tmp_path / "quantize-1"
    for method, src in (("int8", dirs["sft"] / "model"), ("int4", dirs["dpo"] / "model")):
        (q / method).mkdir(parents=True)
        (q / method / "quantization.json").write_text(
            json.dumps({"method": method, "source": {"path": str(src)}})
        )
    recipe = Recipe(model=str(tiny_model))
    ctx = StageContext("eval", recipe, {}, tmp_path / "e", {**dirs, "quantize": q}, tmp_path)
    models = stage.find_models(ctx)
    assert list(models) == ["M0", "M1", "M2", "M2-int4", "M1-int8"]
    assert stage.reference_of(ctx, models) == str(dirs["sft"] / "model")
    opts = stage.task_options(ctx, stage.EvalSection(tasks=["reward_accuracy"]), models)
    assert (
        opts["reward_accuracy"]["reference"] == models["M1"]
        and opts["reward_accuracy"]["beta"] == 0.1
    )
    (tmp_path / "data-1").mkdir()
    (tmp_path / "data-1/pref_val.jsonl").write_text("{}\n")
    ctx.inputs["data"] = tmp_path / "data-1"
    opts = stage.task_options(ctx, stage.EvalSection(tasks=["dialogrpt"]), models)
    assert opts["dialogrpt"]["file"] == str(tmp_path / "data-1/pref_val.jsonl")  # held-out pairs


def test_eval_json_files_of_one_model_merge_into_one_row(tmp_path):
    """`zephyr eval --json` writes one file per call; a report of several such files is one row."""
    from zephyr.io import write_json

    def task(acc: list[float]) -> dict:
        return {"metrics": {"acc": sum(acc) / len(acc)}, "n": len(acc), "per_item": {"acc": acc}}

    write_json(tmp_path / "a.json", {"model": "smollm2-135m", "tasks": {"arc_easy": task([1, 0])}})
    write_json(tmp_path / "b.json", {"model": "smollm2-135m", "tasks": {"mmlu": task([1, 1, 0])}})
    got = report.collect([tmp_path / "a.json", tmp_path / "b.json"])
    assert list(got.models) == ["M0"]
    assert set(got.models["M0"]["tasks"]) == {"arc_easy", "mmlu"}
    t = report.build_table(got)
    assert t.cells[("M0", "mmlu", "acc")].value == pytest.approx(100 * 2 / 3)  # percent
    # a pipeline stage's model gets the eval stage's label; anything else keeps its spec
    write_json(
        tmp_path / "c.json",
        {"model": "runs/demo/dpo-1a2b/model", "tasks": {"mmlu": task([0, 1, 1])}},
    )
    write_json(tmp_path / "d.json", {"model": "my/model", "tasks": {"mmlu": task([0, 0, 1])}})
    got = report.collect([tmp_path / f"{x}.json" for x in "abcd"])
    assert list(got.models) == ["M0", "M2", "my/model"]
    assert report.build_table(got).models[:2] == ["M0", "M2"]


# ---------------------------------------------------------------------------- many runs
def study_run(
    root: Path, name: str, base: str, models: dict[str, float], stages: list[str], **recipe
) -> Path:
    """A finished pipeline run of one study variant: eval stage (stage.json records the recipe),
    per-item MMLU logs, and the metrics.jsonl of each training stage."""
    run = root / name
    rng = random.Random(7)
    subjects = [rng.choice(["algebra", "virology"]) for _ in range(40)]
    entries, stage_dirs = {}, {}
    for stage in stages:
        d = run / f"{stage}-1"
        d.mkdir(parents=True)
        stage_dirs[stage] = str(d)
        lr = recipe.get("lr", "cosine")
        rows = [
            {
                "step": s,
                "loss": 2.0 / (s + 1) + (0.1 if lr == "constant" else 0),
                "lr": 1e-4 if lr == "constant" else 1e-4 * (1 + math.cos(math.pi * s / 10)) / 2,
                **({"val_loss": 2.1 / (s + 1)} if s % 5 == 0 else {}),
                **({"reward_acc": 0.5 + s / 40} if s % 5 == 0 and stage == "dpo" else {}),
            }
            for s in range(11)
        ]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        start = base if stage == "sft" or "sft" not in stages else str(run / "sft-1/model")
        (d / "train.json").write_text(json.dumps({"base": start}))
    for label, p in models.items():
        arc = task("arc_challenge", p, 40, seed=1)  # one seed: the same items, paired
        mmlu = task("mmlu", p, 40, seed=2)
        entries[label] = {"path": base if label == "M0" else f"{run}/x/model", "tasks": {}}
        entries[label]["tasks"] = {"arc_challenge": arc, "mmlu": mmlu}
        logs = run / "eval-1/logs" / label
        logs.mkdir(parents=True)
        (logs / "mmlu.jsonl").write_text(
            "".join(
                json.dumps({"id": i, "subject": s, "acc": a}) + "\n"
                for i, (s, a) in enumerate(zip(subjects, mmlu["per_item"]["acc"], strict=True))
            )
        )
    stage_dirs["data"] = str(run / "data-1")
    (run / "eval-1/results.json").write_text(
        json.dumps({"models": entries, "settings": {"limit": 40, "seed": 0}, "stages": stage_dirs})
    )
    full = {"model": base, "stages": ["data", *stages, "eval"], **recipe}
    (run / "eval-1/stage.json").write_text(json.dumps({"config": {"recipe": full}}))
    return run


def test_report_of_a_study_compares_each_row_with_its_own_base(tmp_path):
    runs = [
        study_run(tmp_path, "s-cos", "smollm2-135m", {"M0": 0.3, "M1": 0.7}, ["sft"]),
        study_run(tmp_path, "g", "gemma-270m", {"M0": 0.5, "M1": 0.6}, ["sft"]),
        study_run(
            tmp_path, "s-const", "smollm2-135m", {"M0": 0.3, "M1": 0.5}, ["sft"], lr="constant"
        ),
        study_run(
            tmp_path,
            "s-dpo0",
            "smollm2-135m",
            {"M0": 0.3, "M2": 0.4},
            ["dpo"],
            dpo={"from": "base"},
        ),
        study_run(
            tmp_path, "s-dpo1", "smollm2-135m", {"M0": 0.3, "M1": 0.7, "M2": 0.8}, ["sft", "dpo"]
        ),
    ]
    names = [
        "smollm2/D_S/cosine",
        "gemma/D_S",
        "smollm2/D_S/constant",
        "smollm2/M0+DPO",
        "smollm2/M2",
    ]
    got = report.collect(runs, run_names=names)
    t = report.build_table(got)
    rows = {k: got.rows[k] for k in t.models}
    labels = [(r.label, r.base) for r in rows.values()]
    # one smollm2 M0 for the four smollm2 runs (same items, same scores), gemma's M0 apart
    assert labels.count(("M0", "smollm2-135m")) == 1 and ("M0", "gemma-270m") in labels
    m0 = next(k for k, r in rows.items() if r.label == "M0" and r.base == "smollm2-135m")
    assert rows[m0].runs == [n for n in names if n.startswith("smollm2")]
    # the DPO-from-base model is labelled M0 + DPO; DPO from M1 stays M2
    assert ("M0 + DPO", "smollm2-135m") in labels and ("M2", "smollm2-135m") in labels
    # every delta against the row's own base model's M0, not the first run's
    raw = {
        n: json.loads((r / "eval-1/results.json").read_text())["models"]
        for n, r in zip(names, runs, strict=True)
    }
    acc = {
        n: {m: e["tasks"]["arc_challenge"]["metrics"]["acc"] for m, e in v.items()}
        for n, v in raw.items()
    }
    for key, row in rows.items():
        if row.label == "M0":
            assert t.cells[(key, "arc_challenge", "acc")].delta is None
            continue
        run = row.runs[0]
        src = {"M0 + DPO": "M2"}.get(row.label, row.label)
        want = 100 * (acc[run][src] - acc[run]["M0"])
        assert t.cells[(key, "arc_challenge", "acc")].delta == pytest.approx(want), key
    gemma_m1 = next(k for k, r in rows.items() if r.label == "M1" and r.base == "gemma-270m")
    assert rows[gemma_m1].ref != m0 and got.rows[rows[gemma_m1].ref].base == "gemma-270m"
    assert t.cells[(gemma_m1, "arc_challenge", "acc")].delta_ci is not None  # paired on own M0
    # rows grouped by base model, M0 first
    assert [r.label for r in rows.values()][:1] == ["M0"] and t.models.index(
        gemma_m1
    ) > t.models.index(m0)

    paths = report.write_report(runs, tmp_path / "out", run_names=names)
    md = paths["md"].read_text()
    assert "| model | base model | variant |" in md
    assert "| **M0 + DPO** DPO from the base | `smollm2-135m` | smollm2/M0+DPO |" in md
    # training curves overlaid: one figure per stage, every run in its legend sources
    assert paths["train_sft"].stat().st_size > 1000 and paths["train_dpo"].stat().st_size > 1000
    assert "smollm2/D_S/constant: M1" in md and "smollm2/M0+DPO: M0 + DPO" in md
    assert "smollm2/M2: M2" in md


def test_report_cohort_table_counts_items_per_subject(tmp_path):
    run = study_run(tmp_path, "s", "smollm2-135m", {"M0": 0.3, "M1": 0.7}, ["sft"])
    got = report.collect([run])
    t = report.build_table(got)
    logs = [json.loads(x) for x in (run / "eval-1/logs/M1/mmlu.jsonl").read_text().splitlines()]
    alg = [r["acc"] for r in logs if r["subject"] == "algebra"]
    assert t.cohorts[("mmlu", "algebra")]["M1"] == (pytest.approx(sum(alg) / len(alg)), len(alg))
    assert t.cohorts[("arc", "Challenge")]["M0"][1] == 40
    md = report.write_report([run], tmp_path / "out", plots=False)["md"].read_text()
    line = next(x for x in md.splitlines() if x.startswith("| mmlu | algebra |"))
    assert f"{100 * sum(alg) / len(alg):.1f} ({len(alg)})" in line
    assert "## Error analysis" in md


def test_report_run_names_must_match_runs(tmp_path):
    from zephyr.errors import ZephyrError

    run = study_run(tmp_path, "s", "smollm2-135m", {"M0": 0.3}, ["sft"])
    with pytest.raises(ZephyrError, match="one name per run"):
        report.write_report([run], tmp_path / "o", run_names=["a", "b"])


def test_cohorts_from_the_logs_a_real_eval_writes(tiny_model, shared_data, tmp_path):
    """The eval's own per-item logs (MMLU subject, synthetic family) feed the cohort table."""
    from zephyr.eval.run import evaluate
    from zephyr.io import write_json

    eval_dir = tmp_path / "run/eval-1"
    res = evaluate(
        str(tiny_model),
        ["mmlu", "synthetic", "arc_easy", "mcqa_letter"],
        data_dir=shared_data,
        limit=12,
        num_fewshot=0,
        log_dir=eval_dir / "logs/M0",
        options={"synthetic": {"max_new_tokens": 4, "n": 12}, "mcqa_letter": {"debias": "none"}},
    )
    write_json(eval_dir / "results.json", {"models": {"M0": {"path": str(tiny_model), **res}}})
    t = report.build_table(report.collect([tmp_path / "run"]))
    mmlu = {c: v["M0"] for (task, c), v in t.cohorts.items() if task == "mmlu"}
    families = {c: v["M0"] for (task, c), v in t.cohorts.items() if task == "synthetic"}
    assert sum(n for _, n in mmlu.values()) == 12 and sum(n for _, n in families.values()) == 12
    assert len(families) > 1 and t.cohorts[("arc", "Easy")]["M0"][1] == 12
    mcqa = {c: v["M0"] for (task, c), v in t.cohorts.items() if task.startswith("mcqa")}
    assert sum(n for _, n in mcqa.values()) == 12  # MCQA subjects from the task's own logs
    subjects = res["tasks"]["mmlu"]["extra"]["subjects"]
    assert {s: (pytest.approx(v["acc"]), v["n"]) for s, v in subjects.items()} == mmlu


def test_a_training_stage_shared_by_variants_is_one_curve(tmp_path):
    a = study_run(tmp_path, "a", "smollm2-135m", {"M0": 0.3, "M1": 0.6}, ["sft"])
    b = study_run(tmp_path, "b", "smollm2-135m", {"M0": 0.3, "M1": 0.6, "M2": 0.7}, ["sft", "dpo"])
    res = json.loads((b / "eval-1/results.json").read_text())
    res["stages"]["sft"] = str(a / "sft-1")  # the M2 variant trained DPO on variant a's M1
    res["models"]["M1"]["path"] = f"{a}/x/model"
    (b / "eval-1/results.json").write_text(json.dumps(res))
    got = report.collect([a, b], run_names=["D_S/M1", "D_S/M2"])
    assert [(r.label, r.runs) for r in got.rows.values()] == [
        ("M0", ["D_S/M1", "D_S/M2"]),
        ("M1", ["D_S/M1", "D_S/M2"]),  # one model, evaluated twice alike: one row
        ("M2", ["D_S/M2"]),
    ]
    assert [(c.stage, c.name) for c in got.curves] == [
        ("sft", "D_S/M1, D_S/M2: M1"),
        ("dpo", "D_S/M2: M2"),
    ]


def test_report_of_real_stages_labels_dpo_from_the_base(tiny_model, tmp_path, monkeypatch):
    """dpo (from: base) -> eval -> report on a tiny model: the real train.json and results.json."""
    from rich.console import Console

    from zephyr.eval import stage
    from zephyr.pipeline import Recipe, StageContext
    from zephyr.train.stage import run_dpo

    monkeypatch.setenv("ZEPHYR_HOME", str(tmp_path / "home"))
    data = Path(__file__).parent / "fixtures/train"
    dpo = dict(lr=1e-2, micro_batch=4, grad_accum=1, max_steps=2, warmup_steps=0, bf16=False)
    dpo |= dict(max_seq_len=96, max_val=4, eval_every=0, **{"from": "base"})
    recipe = Recipe(
        name="t",
        model=str(tiny_model),
        stages=["dpo", "eval"],
        dpo=dpo,
        eval={"tasks": ["reward_accuracy"], "limit": 4, "batch_size": 2, "speed_tokens": 0},
    )
    quiet = Console(quiet=True)
    run = tmp_path / "runs/t"
    dctx = StageContext("dpo", recipe, recipe.dpo, run, {"data": data}, tmp_path, quiet)
    dctx.out_dir = run / "dpo-1"
    dctx.out_dir.mkdir(parents=True)
    run_dpo(dctx)
    inputs = {"data": data, "dpo": dctx.out_dir}
    ectx = StageContext("eval", recipe, recipe.eval, run, inputs, tmp_path, quiet)
    ectx.out_dir = run / "eval-1"
    ectx.out_dir.mkdir()
    stage.run(ectx)
    (ectx.out_dir / "stage.json").write_text(
        json.dumps({"config": {"recipe": {"model": str(tiny_model), "dpo": dpo}}})
    )
    got = report.collect([run], run_names=["tiny/M0+DPO"])
    assert [r.label for r in got.rows.values()] == ["M0", "M0 + DPO"]
    assert [c.name for c in got.curves] == ["tiny/M0+DPO: M0 + DPO"]
    t = report.build_table(got)
    key = next(k for k, r in got.rows.items() if r.label == "M0 + DPO")
    cell = t.cells[(key, "reward_accuracy", "accuracy")]  # M0 has no reference: no delta
    assert cell.value is not None and cell.delta is None
    assert (next(iter(got.rows)), "reward_accuracy", "accuracy") not in t.cells


def test_paired_bleu_delta_resamples_both_models_together():
    """Corpus BLEU has no per-item score: the paired interval resamples the items' sentence
    statistics of both models jointly; a clearly better model's interval excludes 0."""
    from zephyr.eval.report_table import paired_bleu_delta
    from zephyr.eval.tasks.gsm8k import bleu_stats

    refs = [f"step {i} gives {i * 3} apples so the answer is {i * 3}" for i in range(30)]
    good = {"n": 30, "extra": {"bleu_stats": [bleu_stats(r, r) for r in refs]}}
    bad = {"n": 30, "extra": {"bleu_stats": [bleu_stats("no idea", r) for r in refs]}}
    lo, hi = paired_bleu_delta(good, bad, resamples=200, seed=0)
    assert 0 < lo <= hi
    lo, hi = paired_bleu_delta(good, good, resamples=200, seed=0)
    assert lo == hi == 0
    assert paired_bleu_delta(good, {"n": 29, "extra": {"bleu_stats": []}}, 200, 0) is None
