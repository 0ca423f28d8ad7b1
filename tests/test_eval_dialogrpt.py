"""The DialogRPT task on a tiny random GPT-2 classifier, and its offline error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zephyr.errors import ZephyrError
from zephyr.eval.task import EvalConfig
from zephyr.eval.tasks import dialogrpt


@pytest.fixture(scope="module")
def ranker_dir(tmp_path_factory) -> Path:
    """A random GPT-2 sequence classifier with one logit (DialogRPT's shape), saved with a tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from zephyr.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    cfg = GPT2Config(
        vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=512, num_labels=1
    )
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("dialogrpt")
    GPT2ForSequenceClassification(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def scorer(tiny_model):
    from zephyr.eval.engine import Scorer
    from zephyr.models import load_model

    model, tok = load_model(tiny_model)
    return Scorer(model, tok, batch_size=4, progress=False)


def test_dialogrpt_scores_the_models_replies_with_the_ranker(scorer, ranker_dir, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rows = [
        {
            "id": "a",
            "prompt": "How do plants make food?",
            "chosen": "By photosynthesis.",
            "rejected": "x",
        },
        {
            "id": "b",
            "prompt": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "What is 2+2?"},
            ],
            "chosen": "4",
            "rejected": "5",
        },
        {"id": "c", "prompt": "Name a prime.", "chosen": "Seven is prime.", "rejected": "Nine."},
    ]
    file = tmp_path / "pairs.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = EvalConfig(
        task="dialogrpt",
        data_dir=tmp_path,
        log_dir=tmp_path / "logs",
        options={"file": str(file), "model": str(ranker_dir), "max_new_tokens": 6},
    )
    res = dialogrpt.run(scorer, cfg)
    assert res.n == 3 and set(res.metrics) == {"updown", "win_vs_chosen"}
    # recompute each score independently: the model card's input, sigmoid of the one logit
    model = AutoModelForSequenceClassification.from_pretrained(ranker_dir).eval()
    tok = AutoTokenizer.from_pretrained(ranker_dir)
    logs = [json.loads(x) for x in (tmp_path / "logs/dialogrpt.jsonl").read_text().splitlines()]
    contexts = [
        "How do plants make food?",
        "Hi<|endoftext|>Hello<|endoftext|>What is 2+2?",
        "Name a prime.",
    ]

    def score(context: str, reply: str) -> float:
        ids = tok(context + "<|endoftext|>" + reply.strip(), return_tensors="pt")["input_ids"]
        with torch.no_grad():
            return torch.sigmoid(model(input_ids=ids).logits[0, 0]).item()

    want = [score(c, r["output"]) for c, r in zip(contexts, logs, strict=True)]
    assert res.per_item["updown"] == pytest.approx(want, abs=1e-6)
    assert res.metrics["updown"] == pytest.approx(sum(want) / 3)
    wins = [float(w > score(c, r["chosen"])) for w, c, r in zip(want, contexts, rows, strict=True)]
    assert res.per_item["win_vs_chosen"] == wins
    assert len({round(x, 6) for x in want}) > 1  # different replies, different scores


def test_dialogrpt_without_a_ranker_says_how_to_provide_one(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ZephyrError, match="huggingface-cli download microsoft/DialogRPT-updown"):
        dialogrpt.load_ranker("microsoft/DialogRPT-updown")
    with pytest.raises(ZephyrError, match="has no config.json"):
        dialogrpt.load_ranker(str(tmp_path / "missing"))


def test_dialogrpt_fails_before_generating_when_the_ranker_is_missing(tmp_path):
    (tmp_path / "pref_val.jsonl").write_text(json.dumps({"prompt": "Hi", "chosen": "a"}) + "\n")
    cfg = EvalConfig(task="dialogrpt", data_dir=tmp_path, options={"model": str(tmp_path / "no")})
    with pytest.raises(ZephyrError, match="--dialogrpt-model"):
        dialogrpt.run(None, cfg)  # no scorer needed: nothing is generated first
