"""Issue 11 section 2 data: the `mcqa` SFT source (MCQA rows prompted exactly as the tutor's MCQA
mode and the mcqa_letter task, the letter alone as the answer) and held-out preference pairs
(pref_heldout.jsonl, out of training, used by reward_accuracy)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from zephyr.data.build import build, parse_config
from zephyr.data.schema import LETTERS
from zephyr.data.text import words
from zephyr.errors import ZephyrError
from zephyr.io import read_jsonl, write_jsonl

FIXTURES = Path(__file__).parent / "fixtures" / "data"
MCQA = [{"source": "arc", "split": "train"}, {"source": "mmlu", "split": "dev"}, {"source": "sciq"}]


def mcqa_build(out: Path, cap: int | None = None, val_fraction: float = 0.3) -> dict:
    data = {
        "decontam": {"against": []},
        "val_fraction": val_fraction,
        "sft": [{"source": "gsm8k"}, {"source": "mcqa", "cap": cap}],
        "mcqa": MCQA,
    }
    return build(parse_config(data), FIXTURES, out, seed=0)


def question(row: dict) -> str:
    return row["messages"][0]["content"].split("\n\n")[0]


def test_mcqa_rows_become_letter_sft_rows_and_val_stays_val(tmp_path):
    man = mcqa_build(tmp_path)
    mcqa_train, mcqa_val = (read_jsonl(tmp_path / f"mcqa_{s}.jsonl") for s in ("train", "val"))
    sft_train, sft_val = (
        [r for r in read_jsonl(tmp_path / f"sft_{s}.jsonl") if r["source"] == "mcqa"]
        for s in ("train", "val")
    )
    assert mcqa_val and len(sft_train) == len(mcqa_train) and len(sft_val) == len(mcqa_val)
    assert {question(r) for r in sft_val} == {r["question"].strip() for r in mcqa_val}
    assert {question(r) for r in sft_train} == {r["question"].strip() for r in mcqa_train}
    by_q = {r["question"].strip(): r for r in mcqa_train + mcqa_val}
    for r in sft_train + sft_val:
        gold = by_q[question(r)]
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        assert r["messages"][1]["content"] == LETTERS[gold["answer"]]  # the letter alone
    s = man["sources"]["sft"]["mcqa"]
    assert s["read"] == len(mcqa_train) + len(mcqa_val) == s["kept"]
    assert s["train"] == len(sft_train) and s["val"] == len(sft_val)
    other = man["sources"]["sft"]["gsm8k"]
    assert other["val"] == round(0.3 * other["kept"])  # the rest of the mixture splits as before


def test_the_mcqa_source_is_capped_like_any_source(tmp_path):
    man = mcqa_build(tmp_path, cap=3)
    s = man["sources"]["sft"]["mcqa"]
    assert s["kept"] == 3 and s["dropped"] == {"over_cap": s["read"] - 3}
    with pytest.raises(ZephyrError, match=r"source: mcqa.*lists no source"):
        parse_config({"sft": [{"source": "mcqa"}]})


def test_the_sft_prompt_is_the_mcqa_letter_prompt(tmp_path, tiny_model):
    """Token for token: what SFT trains on is what the tutor and the eval task score."""
    from transformers import AutoTokenizer

    from zephyr.data.schema import sft_messages
    from zephyr.eval.tasks.gen import chat_prompt
    from zephyr.train.encode import encode_sft
    from zephyr.tutor.mcqa import _encode, letter_ids, mcq_messages

    mcqa_build(tmp_path)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    mcqa = {r["question"].strip(): r for r in read_jsonl(tmp_path / "mcqa_train.jsonl")}
    rows = [r for r in read_jsonl(tmp_path / "sft_train.jsonl") if r["source"] == "mcqa"]
    for row in rows:
        gold = mcqa[question(row)]
        task = mcq_messages(gold["question"], gold["choices"])  # as mcqa_letter prompts it
        assert chat_prompt(tok, sft_messages(row)[:-1]) == chat_prompt(tok, task)
        ex = encode_sft(tok, row, 2048)
        first = ex.labels.index(True)
        assert ex.ids[:first] == _encode(tok, task)
        assert ex.ids[first] == letter_ids(tok, len(gold["choices"]))[gold["answer"]]
        assert tok.decode(ex.ids[first:]).startswith(LETTERS[gold["answer"]] + "<|im_end|>")


def hh(turns: list[str], reply: str) -> str:
    text = "".join(
        f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns)
    )
    return f"{text}\n\nAssistant: {reply}"


@pytest.fixture
def hh_root(tmp_path) -> Path:
    """12 pairs; 6 first questions, each asked once alone and once in a longer conversation."""
    folder = tmp_path / "root" / "hh-rlhf" / "helpful-base"
    folder.mkdir(parents=True)
    pairs = []
    for i in range(6):
        for turns in (
            [f"How do plants of kind {i} grow?"],
            [f"How do plants of kind {i} grow?", "With light.", f"And kind {i} seeds?"],
        ):
            reply = f"A careful answer about kind {i} in {len(turns)} turns."
            pairs.append({"chosen": hh(turns, reply), "rejected": hh(turns, "No idea.")})
    with gzip.open(folder / "test.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(p) + "\n" for p in pairs)
    return tmp_path / "root"


def first_user(row: dict) -> str:
    return " ".join(words(next(m["content"] for m in row["prompt"] if m["role"] == "user")))


def test_heldout_pairs_leave_the_training_pool(hh_root, tmp_path):
    src = {"source": "hh_rlhf", "subset": "helpful-base"}
    data = {
        "decontam": {"against": []},
        "pref": [{**src, "cap": 100}],
        "heldout": [{**src, "cap": 2}],
    }
    man = build(parse_config(data), hh_root, tmp_path / "out", seed=0)
    held = read_jsonl(tmp_path / "out" / "pref_heldout.jsonl")
    train = read_jsonl(tmp_path / "out" / "pref_train.jsonl")
    val = read_jsonl(tmp_path / "out" / "pref_val.jsonl")
    removed = 2 * len({first_user(r) for r in held})  # each first question is asked twice
    assert len(held) == 2 and len(train) + len(val) == 12 - removed
    assert not {first_user(r) for r in held} & {first_user(r) for r in train + val}
    info = man["heldout"]
    assert info["ids"] == [r["id"] for r in held] and info["per_source"] == {
        "hh_rlhf/helpful-base": 2
    }
    assert info["sources"]["hh_rlhf/helpful-base"]["dropped"] == {"over_cap": 10}
    pool = man["sources"]["pref"]["hh_rlhf/helpful-base"]
    assert pool["dropped"] == {"heldout_prompt": removed} and pool["kept"] == 12 - removed
    assert man["outputs"]["pref_heldout.jsonl"]["rows"] == 2


def test_reward_accuracy_prefers_the_heldout_pairs(tmp_path):
    from zephyr.eval import stage
    from zephyr.eval.task import EvalConfig
    from zephyr.eval.tasks.reward_accuracy import load_pairs, pair_set

    pair = {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go."}
    write_jsonl(tmp_path / "pref_val.jsonl", [pair])
    cfg = EvalConfig(task="reward_accuracy", data_dir=tmp_path)
    assert pair_set(Path(load_pairs(cfg)[1])) == "validation"
    write_jsonl(tmp_path / "pref_heldout.jsonl", [pair, pair])
    rows, source = load_pairs(cfg)
    assert len(rows) == 2 and pair_set(Path(source)) == "heldout"
    ctx = SimpleNamespace(inputs={"data": tmp_path}, recipe=SimpleNamespace(dpo=None))
    opts = stage.task_options(ctx, stage.EvalSection(tasks=["reward_accuracy"]), {"M0": "m"})
    assert opts["reward_accuracy"]["file"] == str(tmp_path / "pref_heldout.jsonl")


def test_reward_accuracy_says_which_pairs_it_scored(tiny_model, tmp_path):
    from zephyr.eval.engine import Scorer
    from zephyr.eval.task import EvalConfig
    from zephyr.eval.tasks import reward_accuracy
    from zephyr.models import load_model

    model, tok = load_model(tiny_model)
    pairs = [{"prompt": f"Say {i}.", "chosen": f"{i}.", "rejected": "No."} for i in range(3)]
    write_jsonl(tmp_path / "pref_heldout.jsonl", pairs)
    cfg = EvalConfig(
        task="reward_accuracy", data_dir=tmp_path, options={"reference": str(tiny_model)}
    )
    res = reward_accuracy.run(Scorer(model, tok, batch_size=4, progress=False), cfg)
    assert res.n == 3 and res.to_dict()["extra"]["pairs"] == "heldout"
