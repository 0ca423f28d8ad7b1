"""Each reader on the hand-made fixtures: the rows it yields and the malformed rows it reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from zephyr.data.config import Source
from zephyr.data.readers import reader
from zephyr.data.schema import sft_messages
from zephyr.data.stats import Stats
from zephyr.errors import ZephyrError

ROOT = Path(__file__).parent / "fixtures" / "data"


def read(kind: str, strict: bool = False, **spec) -> tuple[list[dict], Stats]:
    spec = Source(**spec)
    mod = reader(spec, kind, "test")
    stats = Stats(spec.label, kind, strict)
    rows = list(mod.rows(spec, mod.files(spec, ROOT), stats, kind))
    return rows, stats


def lines(stats: Stats) -> list[tuple[str, int]]:
    return [(Path(m["file"]).name, m["line"]) for m in stats.malformed]


def test_gsm8k_solution_format_and_malformed_lines():
    rows, stats = read("sft", source="gsm8k", split="train")
    assert len(rows) == 4
    assert lines(stats) == [("train.jsonl", 3), ("train.jsonl", 4)]
    assert "invalid JSON" in stats.malformed[0]["reason"] and "####" in stats.malformed[1]["reason"]
    first = rows[0]
    assert first["output"].endswith("\nAnswer: 72")
    assert "<<" not in first["output"] and "####" not in first["output"]
    assert sft_messages(first)[-1] == {"role": "assistant", "content": first["output"]}
    assert len({r["id"] for r in rows}) == 4


def test_arc_numeric_labels_both_subsets_and_bad_key():
    rows, stats = read("mcqa", source="arc", split="train")
    assert [r["answer"] for r in rows] == [1, 1, 1, 0]  # B, "2" of 1-3, B, A
    assert rows[1]["choices"] == ["coal", "wind", "oil"]
    assert {r["subject"] for r in rows} == {"arc_challenge", "arc_easy"}
    assert lines(stats) == [("ARC-Challenge-Train.jsonl", 3)]
    only_easy, _ = read("mcqa", source="arc", split="train", subset="easy")
    assert len(only_easy) == 2


def test_mmlu_csv_quotes_newlines_and_subject():
    rows, stats = read("mcqa", source="mmlu", split="dev")
    assert len(rows) == 3 and rows[0]["subject"] == "astronomy"
    assert rows[0]["choices"][2] == "Maybe, it depends"
    assert (
        rows[2]["question"] == "A question with a\nline break inside its quotes"
        and rows[2]["answer"] == 2
    )
    assert lines(stats) == [("astronomy_dev.csv", 3)]
    assert "6 columns" in stats.malformed[0]["reason"]


def test_sciq_shuffles_the_correct_answer_and_counts_a_bad_row():
    rows, stats = read("mcqa", source="sciq", split="valid")
    assert len(rows) == 2 and stats.dropped["malformed"] == 1
    assert rows[0]["choices"][rows[0]["answer"]] == "mesophilic organisms"
    assert rows[1]["choices"][rows[1]["answer"]] == "coriolis effect"
    assert sorted(rows[0]["choices"]) == sorted(
        ["mesophilic organisms", "protozoa", "gymnosperms", "viruses"]
    )
    # deterministic: the same file gives the same order
    assert read("mcqa", source="sciq", split="valid")[0] == rows
    assert stats.malformed[0]["line"] == 18  # the third element starts on line 18 of the file


def test_hellaswag_six_line_groups():
    rows, stats = read("mcqa", source="hellaswag", split="val")
    assert len(rows) == 2 and rows[0]["answer"] == 3 and len(rows[0]["choices"]) == 4
    assert rows[1]["question"].startswith("Baking cookies")
    assert lines(stats) == [("hellaswag_val_full.txt.bz2", 7)]  # gold label 7


def test_hh_rlhf_splits_shared_history_into_prompt_messages():
    rows, stats = read("pref", source="hh_rlhf", subset="helpful-base")
    assert len(rows) == 4 and lines(stats) == [("test.jsonl.gz", 3)]
    multi = rows[1]
    assert [m["role"] for m in multi["prompt"]] == ["user", "assistant", "user"]
    assert multi["chosen"].startswith("I can't send email") and multi["rejected"] == "Sure."
    assert rows[0]["prompt"] == [{"role": "user", "content": "What is the boiling point of water?"}]


def test_pandalm_majority_ties_and_bad_labels():
    rows, stats = read("pref", source="pandalm")
    assert stats.dropped["tie"] == 2 and stats.dropped["malformed"] == 1
    assert [(r["chosen"], r["rejected"]) for r in rows] == [
        ("Response two.", "Response one."),
        ("Response one.", "Response two."),
        ("True", "Response two."),  # a JSON boolean response kept as text
    ]
    assert rows[0]["prompt"] == "Instruction number 0.\n\nSome input."


def test_sharegpt_pref_and_alpaca_history():
    rows, stats = read("pref", source="dpo_demo")
    assert len(rows) == 2 and stats.dropped["malformed"] == 1
    assert [m["role"] for m in rows[1]["prompt"]] == ["user", "assistant", "user"]
    lima, stats = read("sft", source="lima")
    assert len(lima) == 3 and stats.dropped["malformed"] == 1
    assert [m["role"] for m in lima[1]["messages"]] == ["user", "assistant", "user", "assistant"]
    code, _ = read("sft", source="code_alpaca")
    assert code[0]["input"].startswith("dataList") and len(code) == 4


def test_generic_csv_jsonl_and_parquet(tmp_path):
    cols = {"question": "q", "choices": ["a", "b", "c", "d"], "answer": "label", "subject": "topic"}
    rows, stats = read("mcqa", source="file", path="generic/mcqa.csv", columns=cols)
    assert [(r["answer"], r["subject"]) for r in rows] == [(1, "math"), (1, "astronomy")]
    assert lines(stats) == [("mcqa.csv", 4)]
    prefs, stats = read("pref", source="file", path="generic/prefs.jsonl")
    assert prefs[0]["id"] == "fb-1" and isinstance(prefs[1]["prompt"], list)
    assert lines(stats) == [("prefs.jsonl", 3)]
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"q": ["Say hi", "Say bye"], "a": ["hi", None]})
    pq.write_table(table, tmp_path / "sft.parquet")
    spec = dict(
        source="file",
        path=str(tmp_path / "sft.parquet"),
        columns={"instruction": "q", "output": "a"},
    )
    rows, stats = read("sft", **spec)
    assert rows[0]["output"] == "hi" and lines(stats) == [("sft.parquet", 2)]


def test_strict_mode_names_file_and_line():
    with pytest.raises(ZephyrError, match=r"train\.jsonl:3: invalid JSON"):
        read("sft", strict=True, source="gsm8k", split="train")


@pytest.mark.parametrize(
    ("kind", "spec", "message"),
    [
        ("sft", {"source": "gsm8k", "split": "nope"}, "data file not found"),
        ("sft", {"source": "wikipedia"}, "unknown source 'wikipedia'"),
        ("mcqa", {"source": "gsm8k"}, "gives sft rows, not mcqa"),
        (
            "mcqa",
            {"source": "file", "path": "gsm8k/train.jsonl", "format": "xml"},
            "unknown format 'xml'",
        ),
        ("mcqa", {"source": "mmlu", "split": "train"}, "mmlu split must be one of"),
    ],
)
def test_bad_sources_are_one_clear_error(kind, spec, message):
    with pytest.raises(ZephyrError, match=message):
        read(kind, **spec)


def test_hub_reader_says_it_is_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ZephyrError, match="HF_HUB_OFFLINE"):
        read("sft", source="hub", path="openai/gsm8k", subset="main")
