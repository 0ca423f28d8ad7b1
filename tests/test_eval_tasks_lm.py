"""hellaswag, arc, mmlu, wikitext and `zephyr eval`: prompts, metrics, limits, logs, CLI errors."""

from __future__ import annotations

import bz2
import csv
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zephyr.eval.run import evaluate, run_task
from zephyr.eval.task import EvalConfig
from zephyr.eval.tasks import arc, hellaswag, mmlu, wikitext

HELLASWAG = [
    (
        "Roof shingle removal: A man is sitting on a roof. he",
        0,
        [
            "is using wrap to wrap a pair of skis.",
            "is ripping level tiles off.",
            "is holding a cube.",
            "starts pulling up roofing.",
        ],
    ),
    (
        "Baking cookies: Preheat the oven. [title] Mix the flour with sugar.",
        0,
        ["Add two eggs.", "Paint  the wall.", "[step] Drive to work.", "Sing a song."],
    ),
    (
        "Sumo: A cartoon is shown. two men",
        1,
        ["fly away.", "wrestle in a ring.", "cook.", "sleep."],
    ),
]
ARC = [
    {
        "id": "q1",
        "question": {
            "stem": "Which is a metal?",
            "choices": [
                {"text": "iron", "label": "A"},
                {"text": "wood", "label": "B"},
                {"text": "glass", "label": "C"},
            ],
        },
        "answerKey": "A",
    },
    {
        "id": "q2",
        "question": {
            "stem": "What do plants need?",
            "choices": [
                {"text": "light", "label": "1"},
                {"text": "noise", "label": "2"},
                {"text": "plastic", "label": "3"},
                {"text": "metal", "label": "4"},
            ],
        },
        "answerKey": "1",
    },
]
DEV = [[f"Dev question {i}, with a comma?", "w", "x", "y", "z", "ABCD"[i % 4]] for i in range(5)]
TEST = {
    "college_physics": [
        [f" Physics question {i}? ", "one", "two", "three", "four", "ABCD"[i % 4]] for i in range(3)
    ],
    "world_religions": [["Which religion?", "a", "b", "c", "d", "D"]],
}
WIKI = " \n = Alpha = \n \n Alpha is a letter , used in 1990 @-@ 1995 . \n = = History = = \n The history of alpha is long . \n \n = Beta = \n \n Beta follows alpha . \n"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A tiny folder laid out like ../shared/data (same file names)."""
    d = tmp_path_factory.mktemp("evaldata")
    (d / "hellaswag").mkdir()
    lines = [x for ctx, gold, ends in HELLASWAG for x in [ctx, str(gold), *ends]]
    with bz2.open(d / "hellaswag" / "hellaswag_val_full.txt.bz2", "wt") as f:
        f.write("\n".join(lines) + "\n")
    for folder in arc.FOLDERS.values():
        (d / "arc" / folder).mkdir(parents=True)
        (d / "arc" / folder / f"{folder}-Test.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in ARC)
        )
    for split, table in (("dev", {s: DEV for s in TEST}), ("test", TEST)):
        (d / "mmlu" / split).mkdir(parents=True)
        for subject, rows in table.items():
            with open(d / "mmlu" / split / f"{subject}_{split}.csv", "w", newline="") as f:
                csv.writer(f).writerows(rows)
    (d / "wikitext-2").mkdir()
    (d / "wikitext-2" / "test.txt").write_text(WIKI)
    return d


class FakeScorer:
    """Log-likelihood = -(number of characters of the continuation) + bonus for the word 'x'."""

    max_length = 2048

    def __init__(self):
        self.requests = []

    def loglikelihood(self, requests):
        self.requests += requests
        return [
            (-float(len(c)) + (20.0 if "wrestle" in c or c == " iron" else 0.0), False)
            for _, c in requests
        ]

    def loglikelihood_rolling(self, texts):
        return [-2.0 * len(t.split()) for t in texts]


def test_hellaswag_reads_and_preprocesses_like_lm_eval(data_dir):
    items = hellaswag.load(EvalConfig(data_dir=data_dir))
    assert (
        items[0].context == "Roof shingle removal: A man is sitting on a roof. He"
    )  # ctx_b.capitalize()
    assert items[1].context == "Baking cookies: Preheat the oven.. Mix the flour with sugar."
    assert items[1].choices[1:3] == ["Paint the wall.", " Drive to work."]  # lm-eval strips first
    assert items[2].context.endswith("shown. Two men") and [it.gold for it in items] == [0, 0, 1]


def test_acc_and_acc_norm_follow_lm_eval(data_dir, tmp_path):
    scorer = FakeScorer()
    cfg = EvalConfig(task="hellaswag", data_dir=data_dir, log_dir=tmp_path)
    res = hellaswag.run(scorer, cfg)
    # acc: argmax loglik = shortest ending (or the 'wrestle' bonus); acc_norm divides by characters
    assert scorer.requests[0] == (
        "Roof shingle removal: A man is sitting on a roof. He",
        " is using wrap to wrap a pair of skis.",
    )
    # acc: the shortest ending wins (item 2: the 'wrestle' bonus); acc_norm: the longest (item 0)
    assert res.per_item["acc"] == [0.0, 0.0, 1.0]
    assert res.per_item["acc_norm"] == [1.0, 0.0, 1.0]  # item 1: a tie goes to the first max
    assert (
        res.metrics == {"acc": pytest.approx(1 / 3), "acc_norm": pytest.approx(2 / 3)}
        and res.n == 3
    )
    assert "0-shot" in res.protocol and "len(ending chars)" in res.protocol
    logs = [json.loads(x) for x in (tmp_path / "hellaswag.jsonl").read_text().splitlines()]
    assert (
        logs[2]["prediction"] == 1 and logs[2]["gold"] == 1 and len(logs[2]["loglikelihoods"]) == 4
    )


def test_arc_prompt_numeric_labels_and_limit(data_dir):
    scorer = FakeScorer()
    res = run_task(scorer, "arc_easy", EvalConfig(data_dir=data_dir))
    assert scorer.requests[0] == ("Question: Which is a metal?\nAnswer:", " iron")
    assert res.task == "arc_easy" and res.per_item["acc"] == [
        1.0,
        1.0,
    ]  # gold of q2 = label "1" -> index 0
    one = run_task(FakeScorer(), "arc_challenge", EvalConfig(data_dir=data_dir, limit=1, seed=3))
    again = run_task(FakeScorer(), "arc_challenge", EvalConfig(data_dir=data_dir, limit=1, seed=3))
    assert one.n == 1 and one.per_item == again.per_item


def test_mmlu_prompt_is_lm_eval_default_and_aggregate_weights_by_size(data_dir):
    scorer = FakeScorer()
    res = mmlu.run(scorer, EvalConfig(task="mmlu", data_dir=data_dir))
    ctx, cont = scorer.requests[0]
    shots = "".join(
        f"Dev question {i}, with a comma?\nA. w\nB. x\nC. y\nD. z\nAnswer: {'ABCD'[i % 4]}\n\n"
        for i in range(5)
    )
    assert ctx == (
        "The following are multiple choice questions (with answers) about college physics.\n\n"
        + shots
        + "Physics question 0?\nA. one\nB. two\nC. three\nD. four\nAnswer:"
    )
    assert [c for _, c in scorer.requests[:4]] == [" A", " B", " C", " D"]
    # every letter has the same fake loglik -> prediction A: right on items 0 (A); world_religions gold D
    assert res.per_item["acc"] == [1.0, 0.0, 0.0, 0.0]
    assert res.metrics["acc"] == pytest.approx(1 / 4)  # micro (by size), not (1/3 + 0) / 2
    assert res.extra["subjects"]["college_physics"] == {"acc": pytest.approx(1 / 3), "n": 3}
    assert res.metrics["acc_stem"] == pytest.approx(1 / 3) and res.metrics["acc_humanities"] == 0.0
    assert "5-shot" in res.protocol
    zero = FakeScorer()
    mmlu.run(zero, EvalConfig(task="mmlu", data_dir=data_dir, num_fewshot=0))
    assert zero.requests[0][0].endswith(
        "physics.\n\nPhysics question 0?\nA. one\nB. two\nC. three\nD. four\nAnswer:"
    )


def test_wikitext_documents_and_metric_definitions(data_dir):
    docs = wikitext.documents(WIKI)
    assert len(docs) == 2 and docs[0].startswith(" = Alpha = ") and "= = History = =" in docs[0]
    assert wikitext.detokenize(docs[0]).count("1990-1995") == 1
    res = wikitext.run(
        FakeScorer(),
        EvalConfig(task="wikitext", data_dir=data_dir, options={"token_perplexity": False}),
    )
    lls = [-2.0 * len(wikitext.detokenize(d).split()) for d in docs]
    words = sum(len(__import__("re").split(r"\s+", d)) for d in docs)
    nbytes = sum(len(d.encode()) for d in docs)
    assert res.metrics["word_perplexity"] == pytest.approx(math.exp(-sum(lls) / words))
    assert res.metrics["byte_perplexity"] == pytest.approx(math.exp(-sum(lls) / nbytes))
    assert res.metrics["bits_per_byte"] == pytest.approx(-sum(lls) / nbytes / math.log(2))


def test_all_tasks_on_tiny_model_with_fixtures(tiny_model, data_dir, tmp_path):
    res = evaluate(
        str(tiny_model),
        "hellaswag,arc_challenge,arc_easy,mmlu,wikitext",
        data_dir=data_dir,
        batch_size=4,
        log_dir=tmp_path,
        options={"wikitext": {"window": 32, "stride": 16}},
    )
    tasks = res["tasks"]
    for name in ("hellaswag", "arc_challenge", "arc_easy", "mmlu"):
        acc = tasks[name]["per_item"]["acc"]
        assert tasks[name]["metrics"]["acc"] == pytest.approx(sum(acc) / len(acc)) and set(acc) <= {
            0.0,
            1.0,
        }
        assert (tmp_path / f"{name}.jsonl").exists()
    assert 1.0 < tasks["wikitext"]["metrics"]["token_perplexity"] and tasks["wikitext"]["n"] == 2
    assert (
        res["provenance"]["config"]["tasks"][0] == "hellaswag"
        and "torch" in res["provenance"]["versions"]
    )


def test_all_tasks_on_shared_data(tiny_model, shared_data):
    common = dict(data_dir=shared_data, seed=1, batch_size=8)
    res = evaluate(str(tiny_model), "hellaswag,arc_challenge,arc_easy,mmlu", limit=3, **common)
    assert {k: v["n"] for k, v in res["tasks"].items()} == dict.fromkeys(res["tasks"], 3)
    assert 0.0 <= res["tasks"]["mmlu"]["metrics"]["acc"] <= 1.0
    # one article (~4k tokens, rolling windows); token perplexity is covered on the fixture above
    wiki = evaluate(
        str(tiny_model),
        "wikitext",
        limit=1,
        options={"wikitext": {"token_perplexity": False}},
        **common,
    )
    assert (
        wiki["tasks"]["wikitext"]["n"] == 1
        and wiki["tasks"]["wikitext"]["metrics"]["bits_per_byte"] > 0
    )


def test_cli_eval_writes_json_and_fails_clearly(tiny_model, data_dir, tmp_path):
    from zephyr.cli import app

    runner = CliRunner()
    out = tmp_path / "r.json"
    ok = runner.invoke(
        app,
        [
            "eval",
            str(tiny_model),
            "--tasks",
            "arc_easy",
            "--data-dir",
            str(data_dir),
            "--json",
            str(out),
        ],
    )
    assert ok.exit_code == 0, ok.output
    flat = "".join(ok.output.replace("│", " ").split())  # the table wraps at 80 columns
    assert (
        "arc_easy" in flat and "acc_norm" in flat and "Question:q" in flat
    )  # protocol beside numbers
    assert json.loads(out.read_text())["tasks"]["arc_easy"]["n"] == 2
    bad_task = runner.invoke(
        app, ["eval", str(tiny_model), "--tasks", "nope", "--data-dir", str(data_dir)]
    )
    assert bad_task.exit_code == 2 and "unknown task 'nope'" in " ".join(bad_task.output.split())
    bad_model = runner.invoke(
        app, ["eval", str(tmp_path / "missing"), "--tasks", "arc_easy", "--data-dir", str(data_dir)]
    )
    assert bad_model.exit_code == 2 and "not found" in " ".join(bad_model.output.split())
    no_data = runner.invoke(
        app, ["eval", str(tiny_model), "--tasks", "mmlu", "--data-dir", str(tmp_path)]
    )
    assert no_data.exit_code == 2 and "mmlu" in no_data.output and "--data-dir" in no_data.output
