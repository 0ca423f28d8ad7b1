"""The data stage's files in the form TRL reads: `messages` SFT rows, conversational preference rows
(one type per field); every file loads with `datasets.load_dataset("json")`, TRL trains on them
for a step, and so does Zephyr."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_data_build import DATA, ROOT
from zephyr.data.build import build, parse_config


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data")
    build(parse_config(DATA), ROOT, out, seed=0)
    return out


def load(path: Path):
    from datasets import load_dataset

    return load_dataset(
        "json", data_files=str(path), split="train", cache_dir=str(path.parent / ".hf")
    )


def test_every_output_loads_with_datasets(built):
    files = sorted(built.glob("*.jsonl"))
    assert {f.name for f in files} >= {"sft_train.jsonl", "pref_train.jsonl", "mcqa_val.jsonl"}
    for f in files:
        ds = load(f)
        assert len(ds) == sum(1 for line in f.read_text().splitlines() if line.strip()), f
    sft = load(built / "sft_train.jsonl")
    assert "messages" in sft.column_names and "instruction" not in sft.column_names
    assert all(m[-1]["role"] == "assistant" for m in sft["messages"])
    pref = load(built / "pref_train.jsonl")
    # the sources mix plain-string and multi-turn prompts: on disk every prompt is a message list
    assert all(isinstance(p, list) and p[-1]["role"] == "user" for p in pref["prompt"])
    assert any(len(p) > 1 for p in pref["prompt"])
    assert all(c[0]["role"] == "assistant" for c in list(pref["chosen"]) + list(pref["rejected"]))


def trl_args(tmp_path: Path) -> dict:
    return dict(
        output_dir=str(tmp_path / "trl"),
        max_steps=1,
        per_device_train_batch_size=2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        max_length=128,
        gradient_checkpointing=False,
        dataloader_num_workers=0,
    )


def test_trl_trains_a_step_on_the_files(built, tiny_model, tmp_path):
    pytest.importorskip("trl")
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from zephyr.models import load_model

    model, tok = load_model(tiny_model)
    sft = SFTTrainer(
        model=model,
        args=SFTConfig(**trl_args(tmp_path)),
        train_dataset=load(built / "sft_train.jsonl"),
        processing_class=tok,
    )
    assert sft.train().training_loss > 0
    model, tok = load_model(tiny_model)
    dpo = DPOTrainer(
        model=model,
        args=DPOConfig(**trl_args(tmp_path)),
        train_dataset=load(built / "pref_train.jsonl"),
        processing_class=tok,
    )
    assert abs(dpo.train().training_loss - 0.6931) < 1e-3  # log 2: policy == reference at step 1


def test_zephyr_trains_on_the_files(built, tiny_model, tmp_path, monkeypatch):
    from zephyr.train.config import PrefConfig, SFTConfig
    from zephyr.train.pref import train_pref
    from zephyr.train.sft import train_sft

    monkeypatch.setenv("ZEPHYR_HOME", str(tmp_path / "home"))
    common = dict(micro_batch=2, max_steps=1, bf16=False, merge=False, max_val=2)
    info = train_sft(
        SFTConfig(**common, max_seq_len=128), str(tiny_model), built, tmp_path / "s", 0
    )
    assert info["rows"]["train"] > 0 and info["rows"]["dropped"] == 0
    info = train_pref(
        PrefConfig(**common, max_seq_len=256), str(tiny_model), built, tmp_path / "p", 0
    )
    assert info["rows"]["train"] > 0
