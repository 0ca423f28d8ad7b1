"""The data stage under broken and hostile input (issue 14 items 9-11): lone surrogates, deeply
nested rows, UTF-8 BOMs, over-long CSV fields, decompression bombs, stale outputs. Tiny inputs,
generated in tmp dirs."""

from __future__ import annotations

import gzip
import json
import os
import tracemalloc
from pathlib import Path

import pytest

from zephyr.data.build import build, parse_config
from zephyr.data.readers.common import json_array, jsonl
from zephyr.data.stats import Stats
from zephyr.errors import ZephyrError
from zephyr.io import atomic_dir, read_jsonl, recover_dir

FIXTURES = Path(__file__).parent / "fixtures" / "data"
BOM = "\ufeff"
NESTED = '{"instruction": "deep", "output": "x", "extra": ' + "[" * 100_000 + "]" * 100_000 + "}"


def sft_row(i: int) -> str:
    return json.dumps({"instruction": f"Question number {i}?", "output": f"Answer {i}."})


def quiet_build(data: dict, root: Path, out: Path) -> dict:
    return build(parse_config({"decontam": {"against": []}, **data}), root, out, seed=0)


def test_surrogates_nesting_bom_and_long_csv_fields_are_counted_bad_rows(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    lines = [
        BOM + sft_row(1),  # a BOM before the first row
        '{"instruction": "lone \\ud800 surrogate", "output": "x"}',
        NESTED,
        sft_row(2),
    ]
    (root / "rows.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    csv_lines = [
        BOM + "q,a,b,label",
        "What is 2+2?,4,5,A",
        f"Long?,{'x' * 200_000},y,A",
        "Z?,1,2,B",
    ]
    (root / "quiz.csv").write_text("\n".join(csv_lines) + "\n", encoding="utf-8")
    data = {
        "sft": [{"source": "file", "path": "rows.jsonl", "name": "rows"}],
        "mcqa": [
            {
                "source": "file",
                "path": "quiz.csv",
                "name": "quiz",
                "columns": {"question": "q", "choices": ["a", "b"], "answer": "label"},
            }
        ],
        "val_fraction": 0,
    }
    man = quiet_build(data, root, tmp_path / "out")
    rows = man["sources"]["sft"]["rows"]
    assert rows["read"] == 4 and rows["kept"] == 2 and rows["dropped"] == {"malformed": 2}
    reasons = {(m["line"], m["reason"]) for m in rows["malformed_examples"]}
    assert reasons == {
        (2, "lone surrogate (not valid UTF-8) in row.instruction"),
        (3, "nested too deeply"),
    }
    kept = read_jsonl(tmp_path / "out" / "sft_train.jsonl")
    asked = [m["content"] for r in kept for m in r["messages"] if m["role"] == "user"]
    assert sorted(asked) == ["Question number 1?", "Question number 2?"]
    quiz = man["sources"]["mcqa"]["quiz"]
    assert quiz["kept"] == 2 and quiz["dropped"] == {"malformed": 1}  # the BOM'd header still maps
    assert quiz["malformed_examples"][0]["line"] == 3
    assert "field larger than field limit" in quiz["malformed_examples"][0]["reason"]


def test_json_arrays_count_deep_and_long_elements(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(
        BOM
        + '[{"a": 1},\n'
        + "[" * 50_000
        + "]" * 50_000
        + ',\n{"b": "'
        + "y" * 500
        + '"},\n{"c": 3}]'
    )
    stats = Stats("a", "sft", max_row_chars=100)
    assert list(json_array(path, stats)) == [(1, {"a": 1}), (4, {"c": 3})]
    assert [(m["line"], m["reason"][:14]) for m in stats.malformed] == [
        (2, "nested too dee"),
        (3, "element longer"),
    ]


def test_a_long_compressed_line_is_never_held_whole(tmp_path):
    path = tmp_path / "bomb.jsonl.gz"
    with gzip.open(path, "wt") as f:  # 16 MB on one line: a few KB compressed
        f.write('{"instruction": "' + "a" * (16 << 20) + '"}\n' + sft_row(1) + "\n")
    assert path.stat().st_size < 100_000
    stats = Stats("bomb", "sft", max_row_chars=10_000)
    tracemalloc.start()
    try:
        got = list(jsonl(path, stats))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [line for line, _ in got] == [2]
    assert stats.malformed[0]["line"] == 1 and "longer than 10000" in stats.malformed[0]["reason"]
    assert peak < 4 << 20, peak  # streamed in bounded chunks, not a 16 MB string


def test_a_source_over_its_decompressed_cap_stops_the_build_naming_the_file(tmp_path):
    root = tmp_path / "root"
    (root / "hh-rlhf" / "helpful-base").mkdir(parents=True)
    pair = {
        "chosen": "\n\nHuman: Hi?\n\nAssistant: Hello.",
        "rejected": "\n\nHuman: Hi?\n\nAssistant: Go.",
    }
    with gzip.open(root / "hh-rlhf" / "helpful-base" / "test.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(pair) + "\n" for _ in range(40_000))  # ~3.5 MB decompressed
    data = {
        "pref": [{"source": "hh_rlhf", "subset": "helpful-base"}],
        "max_source_bytes": 1_000_000,
    }
    with pytest.raises(
        ZephyrError, match=r"helpful-base/test\.jsonl\.gz: .*more than 1000000 bytes"
    ):
        quiet_build(data, root, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ZephyrError, match="max_row_chars must be a positive"):
        parse_config({"max_row_chars": 0})


SMALL = {"sft": [{"source": "gsm8k"}], "pref": [{"source": "dpo_demo"}]}


def test_a_rebuild_leaves_no_stale_outputs(tmp_path):
    out = tmp_path / "out"
    quiet_build(SMALL, FIXTURES, out)
    assert (out / "pref_train.jsonl").exists()
    quiet_build({"sft": SMALL["sft"]}, FIXTURES, out)  # the recipe no longer builds preferences
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "sft_train.jsonl",
        "sft_val.jsonl",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp or old folder left


def test_a_failed_build_keeps_the_previous_one(tmp_path):
    out = tmp_path / "out"
    first = quiet_build(SMALL, FIXTURES, out)
    with pytest.raises(ZephyrError, match="invalid JSON"):
        build(
            parse_config({**SMALL, "strict": True, "decontam": {"against": []}}), FIXTURES, out, 0
        )
    assert json.loads((out / "manifest.json").read_text())["outputs"] == first["outputs"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_folder_that_is_not_a_build_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ZephyrError, match=r"not a data build \(notes\.txt\)"):
        quiet_build(SMALL, FIXTURES, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_atomic_dir_survives_a_kill_between_the_renames(tmp_path, monkeypatch):
    target = tmp_path / "d"
    with atomic_dir(target) as d:
        (d / "v").write_text("1")
    real = os.replace

    def killed(src, dst):
        if ".tmp-" in Path(src).name:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as d:
        (d / "v").write_text("2")
    monkeypatch.setattr(os, "replace", real)
    assert not target.exists()  # moved aside, the new one never arrived
    recover_dir(target)
    assert (target / "v").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["d"]
