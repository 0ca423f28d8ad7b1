"""The generation / preference / MCQA eval tasks on a tiny model and hand-written fixtures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from zephyr.errors import ZephyrError
from zephyr.eval.task import EvalConfig
from zephyr.eval.tasks import gen, gsm8k

OUTPUTS = [
    " She has 3 + 4 = <<3+4=7>>7 apples.\n#### 7",  # strict and flexible right
    " 5 * 2 = 10 so she pays $1,000.",  # no '####': strict invalid, flexible takes the last number
    " The answer is 12.\n#### 12.",  # trailing period stripped by lm-eval's normalisation
    " First 2 then 3 and finally -4",  # flexible: last number (negative)
    "",  # nothing at all
]
GOLDS = [
    "3 + 4 = 7\n#### 7",
    "10 * 100 = 1000\n#### 1000",
    "6 * 2 = 12\n#### 12",
    "1 - 5 = -4\n#### -4",
    "#### 3",
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def scorer(tiny_model):
    from zephyr.eval.engine import Scorer
    from zephyr.models import load_model

    model, tok = load_model(tiny_model)
    return Scorer(model, tok, batch_size=4, progress=False)


# ---------------------------------------------------------------------------- gsm8k
def test_gsm8k_extraction_matches_lm_eval_filters():
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter

    assert [gsm8k.strict(o) for o in OUTPUTS] == ["7", "[invalid]", "12.", "[invalid]", "[invalid]"]
    assert [gsm8k.flexible(o) for o in OUTPUTS] == ["7", "$1,000.", "12.", "-4", "[invalid]"]
    assert [gsm8k.exact_match(gsm8k.strict(o), g) for o, g in zip(OUTPUTS, GOLDS, strict=True)] == [
        1,
        0,
        1,
        0,
        0,
    ]
    assert [
        gsm8k.exact_match(gsm8k.flexible(o), g) for o, g in zip(OUTPUTS, GOLDS, strict=True)
    ] == [
        1,
        1,
        1,
        1,
        0,
    ]
    # the same filters and metric, as lm-eval's gsm8k.yaml configures them
    strict_f = RegexFilter(regex_pattern=r"#### (\-?[0-9\.\,]+)")
    flex_f = RegexFilter(regex_pattern=r"(-?[$0-9.,]{2,})|(-?[0-9]+)", group_select=-1)
    for filt, ours in ((strict_f, gsm8k.strict), (flex_f, gsm8k.flexible)):
        theirs = [r[0] for r in filt.apply([[o] for o in OUTPUTS], GOLDS)]
        assert theirs == [ours(o) for o in OUTPUTS]
        for t, g in zip(theirs, GOLDS, strict=True):
            em = exact_match_hf_evaluate([t], [g], regexes_to_ignore=gsm8k.IGNORE, ignore_case=True)
            assert em["exact_match"] == gsm8k.exact_match(t, g)


def test_gsm8k_bleu_rouge_match_direct_library_calls():
    import sacrebleu
    from rouge_score import rouge_scorer

    metrics, per_item, stats = gsm8k.score(OUTPUTS, [{"answer": g} for g in GOLDS])
    hyps = [o.strip() for o in OUTPUTS]
    assert metrics["bleu4"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [GOLDS]).score, abs=1e-9)
    rs = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for name in ("rouge1", "rouge2", "rougeL"):
        direct = [100 * rs.score(g, h)[name].fmeasure for h, g in zip(hyps, GOLDS, strict=True)]
        assert per_item[name] == pytest.approx(direct)
        assert metrics[name] == pytest.approx(sum(direct) / len(direct))
    assert metrics["em_strict"] == pytest.approx(0.4) and metrics["em_flexible"] == pytest.approx(
        0.8
    )
    assert 0 < metrics["bleu4"] < 100 and len(stats) == len(OUTPUTS)


def test_gsm8k_prompts_equal_lm_eval_requests(shared_data, tmp_path):
    """Few-shot draw, delimiters and stops: lm-eval's own task object builds the same prompts."""
    import os

    import lm_eval
    import yaml
    from lm_eval.api.task import ConfigurableTask

    cfg = yaml.safe_load(open(Path(lm_eval.__file__).parent / "tasks/gsm8k/gsm8k.yaml"))
    cfg.pop("tag", None)
    cfg.pop("dataset_name", None)
    # lm-eval reads the two local files; keep its datasets cache out of the user's home
    files = {s: str(shared_data / f"gsm8k/{s}.jsonl") for s in ("train", "test")}
    cfg.update(
        dataset_path="json", dataset_kwargs={"data_files": files, "cache_dir": str(tmp_path)}
    )
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    task = ConfigurableTask(config=cfg)
    task.set_fewshot_seed(gsm8k.FEWSHOT_SEED)
    task.build_all_requests(limit=3, rank=0, world_size=1)
    theirs = [inst.args[0] for inst in sorted(task.instances, key=lambda x: x.doc_id)]
    test = gen.read_rows(shared_data / "gsm8k/test.jsonl", "t")
    train = gen.read_rows(shared_data / "gsm8k/train.jsonl", "t")
    shots = gsm8k.fewshot_sets(train, 2, 5)
    assert theirs == [gsm8k.build_prompt(test[i], shots[i]) for i in range(3)]
    assert task.instances[0].args[1]["until"] == gsm8k.STOP


def test_gsm8k_runs_on_tiny_model(scorer, shared_data, tmp_path):
    cfg = EvalConfig(
        task="gsm8k",
        data_dir=shared_data,
        limit=2,
        seed=3,
        log_dir=tmp_path,
        options={"max_new_tokens": 8},
    )
    res = gsm8k.run(scorer, cfg)
    assert res.n == 2 and set(res.per_item) == {
        "em_strict",
        "em_flexible",
        "rouge1",
        "rouge2",
        "rougeL",
    }
    assert all(len(v) == 2 for v in res.per_item.values())
    assert "5-shot" in res.protocol and len(res.extra["bleu_stats"]) == 2
    logs = [json.loads(x) for x in (tmp_path / "gsm8k.jsonl").read_text().splitlines()]
    assert len(logs) == 2 and logs[0]["prompt"].count("Question:") == 6


# ---------------------------------------------------------------------------- synthetic + bertscore
SYNTH = [
    {
        "id": "s1",
        "source": "synth",
        "family": "add",
        "instruction": "What is 2 + 3?",
        "input": "",
        "output": "2 + 3 = 5\nAnswer: 5",
        "answer_text": "5",
    },
    {
        "id": "s2",
        "source": "synth",
        "family": "mul",
        "instruction": "What is 4 * 6?",
        "input": "",
        "output": "4 * 6 = 24\nAnswer: 24",
        "answer_text": "24",
    },
    {
        "id": "s3",
        "source": "synth",
        "family": "mul",
        "instruction": "What is 3 * 3?",
        "input": "",
        "output": "3 * 3 = 9\nAnswer: 9",
        "answer_text": "9",
    },
]


class Canned:
    """A scorer whose generations are given: tests the scoring, not the model."""

    def __init__(self, tokenizer, answers):
        self.tokenizer, self.answers, self.calls = tokenizer, answers, 0

    def generate(self, prompts, max_new_tokens, stop):
        self.calls += 1
        return [
            self.answers[p.split("What is ")[1].split("?")[0]] + "<|im_end|>junk" for p in prompts
        ]


def test_synthetic_scores_exact_match_and_bertscore_reuses_generations(tiny_model, tmp_path):
    from zephyr.eval.tasks import bertscore, synthetic
    from zephyr.models import load_tokenizer

    data = tmp_path / "data"
    write_jsonl(data / "synth_test.jsonl", SYNTH)
    fake = Canned(
        load_tokenizer(tiny_model),
        {"2 + 3": "so\nAnswer: 5", "4 * 6": "Answer: 25", "3 * 3": "3 * 3 = 9\nAnswer: 9"},
    )
    cfg = EvalConfig(task="synthetic", data_dir=data, log_dir=tmp_path / "logs")
    res = synthetic.run(fake, cfg)
    assert res.per_item["exact_match"] == [1.0, 0.0, 1.0]
    assert res.metrics["answer_rate"] == 1.0 and res.extra["by_family"] == {"add": 1.0, "mul": 0.5}
    log = [json.loads(x) for x in (tmp_path / "logs/synthetic.jsonl").read_text().splitlines()]
    assert log[1]["pred"] == "25" and "junk" not in log[1]["output"]  # cut at <|im_end|>
    assert "<|im_start|>assistant\n" in log[0]["prompt"]

    bs = bertscore.run(fake, EvalConfig(task="bertscore", data_dir=data))
    assert fake.calls == 1  # the synthetic generations were reused
    assert bs.per_item["f1"][2] == pytest.approx(1.0, abs=1e-4)  # identical to its reference
    assert bs.per_item["f1"][1] < bs.per_item["f1"][2]
    assert set(bs.metrics) == {"precision", "recall", "f1"}


def test_bertscore_identical_strings_and_bad_encoder(tmp_path):
    from zephyr.eval.tasks import bertscore

    path = bertscore.encoder_dir()
    scores = bertscore.bertscore(
        ["The force is 12 N.", "water boils"], ["The force is 12 N.", "a red car"], path
    )
    assert scores["f1"][0] == pytest.approx(1.0, abs=1e-4) and scores["f1"][1] < 0.9
    with pytest.raises(ZephyrError, match="config.json"):
        bertscore.encoder_dir(str(tmp_path))


def test_synthetic_without_data_is_a_clear_error(tmp_path, scorer, monkeypatch):
    import sys

    from zephyr.eval.tasks import synthetic

    monkeypatch.setitem(sys.modules, "zephyr.data.synth", None)  # as if not installed
    with pytest.raises(ZephyrError, match="synth_test.jsonl"):
        synthetic.run(scorer, EvalConfig(task="synthetic", data_dir=tmp_path))


# ---------------------------------------------------------------------------- reward accuracy
PAIRS = [
    {
        "id": f"p{i}",
        "source": "t",
        "prompt": f"What is {i} + {i}?",
        "chosen": f"{i} + {i} = {2 * i}\nAnswer: {2 * i}",
        "rejected": f"{i} + {i} = {2 * i + 1}\nAnswer: {2 * i + 1}",
    }
    for i in range(1, 7)
]


def test_reward_accuracy_policy_equals_reference_is_all_ties(scorer, tiny_model, tmp_path):
    from zephyr.eval.tasks import reward_accuracy

    write_jsonl(tmp_path / "pref_val.jsonl", PAIRS)
    cfg = EvalConfig(
        task="reward_accuracy", data_dir=tmp_path, options={"reference": str(tiny_model)}
    )
    res = reward_accuracy.run(scorer, cfg)
    assert res.n == 6
    assert res.metrics["accuracy"] == 0.5 and res.metrics["ties"] == 1.0
    assert res.metrics["margin"] == pytest.approx(0.0, abs=1e-6)


def test_reward_accuracy_planted_better_policy(scorer, tiny_model, tmp_path):
    """A policy trained a few steps towards the chosen replies beats its reference."""
    import copy

    import torch

    from zephyr.eval.engine import Scorer
    from zephyr.eval.tasks import reward_accuracy
    from zephyr.train.encode import encode_pair

    tok = scorer.tokenizer
    model = copy.deepcopy(scorer.model).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    exs = [encode_pair(tok, row, 256, 512) for row in PAIRS]
    width = max(len(ex.prompt + ex.chosen) for ex in exs)
    ids = torch.zeros((len(exs), width), dtype=torch.long)  # right-padded, padding unlabelled
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for r, ex in enumerate(exs):
        seq = ex.prompt + ex.chosen
        ids[r, : len(seq)] = torch.tensor(seq)
        mask[r, : len(seq)] = 1
        labels[r, len(ex.prompt) : len(seq)] = torch.tensor(ex.chosen)
    for _ in range(4):  # plain likelihood steps on the chosen completions, one batch
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    policy = Scorer(model.eval(), tok, batch_size=4, progress=False)
    write_jsonl(tmp_path / "pref_val.jsonl", PAIRS)
    cfg = EvalConfig(
        task="reward_accuracy",
        data_dir=tmp_path,
        log_dir=tmp_path,
        options={"reference": str(tiny_model), "beta": 0.1},
    )
    res = reward_accuracy.run(policy, cfg)
    assert res.metrics["accuracy"] > 0.5 and res.metrics["margin"] > 0 and res.metrics["ties"] == 0
    log = [json.loads(x) for x in (tmp_path / "reward_accuracy.jsonl").read_text().splitlines()]
    m = log[0]
    assert m["margin"] == pytest.approx(
        0.1 * ((m["logp_chosen"] - m["ref_chosen"]) - (m["logp_rejected"] - m["ref_rejected"]))
    )


def test_reward_rule_counts_ties_half():
    from zephyr.eval.tasks.reward_accuracy import rewards

    out = rewards([(-1.0, -2.0), (-3.0, -1.0), (-1.0, -1.0)], [(-1.0, -1.0)] * 3, beta=0.5)
    assert out["accuracy"] == [1.0, 0.0, 0.5] and out["margin"] == [0.5, -1.0, 0.0]


def test_reward_accuracy_needs_reference_and_pairs(scorer, tmp_path):
    from zephyr.eval.tasks import reward_accuracy

    with pytest.raises(ZephyrError, match="reference"):
        reward_accuracy.run(scorer, EvalConfig(task="reward_accuracy", data_dir=tmp_path))
    with pytest.raises(ZephyrError, match="pref_val.jsonl"):
        reward_accuracy.run(
            scorer,
            EvalConfig(task="reward_accuracy", data_dir=tmp_path, options={"reference": "x"}),
        )


# ---------------------------------------------------------------------------- mcqa_letter
def test_mcqa_letter_reads_a_letter_with_probabilities(scorer, shared_data, tmp_path):
    from zephyr.eval.tasks import mcqa_letter

    cfg = EvalConfig(task="mcqa_letter", data_dir=shared_data, limit=5, log_dir=tmp_path)
    res = mcqa_letter.run(scorer, cfg)
    assert res.n == 5 and len(res.per_item["acc"]) == 5 and "arc" in res.extra["source"]
    logs = [json.loads(x) for x in (tmp_path / "mcqa_letter.jsonl").read_text().splitlines()]
    for row in logs:
        assert row["pred"] in "ABCDE" and math.isclose(
            sum(row["probs"].values()), 1.0, abs_tol=1e-5
        )
        assert row["prompt"].endswith("<|im_start|>assistant\n")
        assert row["acc"] == float("ABCDE".index(row["pred"]) == row["gold"])


def test_mcqa_letter_local_file_and_gold_probability(scorer, tmp_path):
    from zephyr.eval.tasks import mcqa_letter

    rows = [
        {
            "id": "m1",
            "source": "t",
            "question": "Which is a noble gas?",
            "choices": ["Neon", "Iron", "Salt"],
            "answer": 0,
            "subject": "chem",
        }
    ]
    write_jsonl(tmp_path / "mcqa_val.jsonl", rows)
    res = mcqa_letter.run(scorer, EvalConfig(task="mcqa_letter", data_dir=tmp_path))
    assert res.extra["source"].endswith("mcqa_val.jsonl") and 0 < res.metrics["p_gold"] < 1


def test_subset_is_seeded_and_keeps_indices():
    items = list(range(100))
    a, b = gen.subset(items, 10, 1), gen.subset(items, 10, 1)
    assert a == b and len(a) == 10 and all(i == v for i, v in a)
    assert gen.subset(items, 10, 2) != a and gen.subset(items, None, 0) == list(enumerate(items))


def test_mcqa_letter_explicit_source_wins_over_a_local_file(scorer, shared_data, tmp_path):
    """The study scores ARC-Challenge test items even beside a data stage's mcqa_val.jsonl."""
    from zephyr.eval.tasks import mcqa_letter

    (tmp_path / "arc").symlink_to(Path(shared_data) / "arc")
    write_jsonl(tmp_path / "mcqa_val.jsonl", [{"id": "m", "question": "q", "choices": ["a", "b"],
                                               "answer": 0, "subject": "s", "source": "t"}])  # fmt: skip
    cfg = EvalConfig(
        task="mcqa_letter", data_dir=tmp_path, limit=2, options={"source": "arc_challenge"}
    )
    res = mcqa_letter.run(scorer, cfg)
    assert res.n == 2 and "ARC-Challenge" in res.extra["source"]
