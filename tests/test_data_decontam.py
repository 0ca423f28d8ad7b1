"""Decontamination: a planted 13-gram is found, a 12-gram is not, templates and field edges ignored."""

from __future__ import annotations

from pathlib import Path

from zephyr.data.decontam import Index, file_texts

EVAL = (
    "The quick brown fox jumps over the lazy dog while seven tired cats sleep on warm red bricks "
    "near the old mill by the river."
)
WORDS = EVAL.split()


def index(n: int = 13, **eval_sets) -> Index:
    idx = Index(n)
    for name, docs in (eval_sets or {"ev": [EVAL]}).items():
        idx.add(name, docs)
    return idx.build()


def test_planted_13gram_is_found_12gram_is_not():
    idx = index()
    planted13 = "Some intro. " + " ".join(WORDS[4:17]).upper() + "!!! And an unrelated ending."
    planted12 = "Some intro. " + " ".join(WORDS[4:16]) + " and an unrelated ending."
    assert idx.find([planted13, planted12, "nothing alike", ""]) == ["ev", None, None, None]


def test_punctuation_and_case_are_normalised_on_both_sides():
    idx = index()
    messy = (
        "THE quick, brown fox -- jumps over the LAZY dog; while seven tired cats sleep on warm red"
    )
    assert idx.find([messy]) == ["ev"]


def test_ngram_size_is_configurable():
    eight = "Intro: " + " ".join(WORDS[0:8])
    assert index(13).find([eight]) == [None]
    assert index(8).find([eight]) == ["ev"]


def test_template_ngrams_shared_by_many_eval_docs_are_ignored():
    template = "For which of these two scenarios does the main character do something clearly wrong"
    docs = [f"{template} scenario number {i} differs here" for i in range(20)]
    idx = index(**{"ev": docs})
    assert idx.templates["ev"] > 0
    assert idx.find([template + " in my training row"]) == [None]
    assert idx.find([docs[3]]) == ["ev"]  # the item-specific tail still matches


def test_fields_are_not_joined_and_first_eval_set_wins():
    idx = index(
        **{
            "a": [EVAL],
            "b": [EVAL, "another eval text that is long enough to have a few grams in it"],
        }
    )
    split = [" ".join(WORDS[:7]), " ".join(WORDS[7:14])]  # 13 words, but across two fields
    assert idx.find([split, [" ".join(WORDS[:14])]]) == [None, "a"]
    assert idx.docs == {"a": 1, "b": 2}


def test_many_rows_in_chunks_keep_their_order():
    idx = index()
    texts = ["filler text " * 3] * 50
    texts[7] = texts[42] = EVAL
    hits = idx.find(texts, chunk=8)
    assert [i for i, h in enumerate(hits) if h] == [7, 42]


def test_extra_eval_files(tmp_path: Path):
    (tmp_path / "e.jsonl").write_text('{"q": "a b c", "a": ["x", "y"]}\n{"q": "d"}\n')
    (tmp_path / "e.txt").write_text("line one\n\nline two\n")
    assert file_texts(tmp_path / "e.jsonl") == [["a b c", "x", "y"], ["d"]]
    assert file_texts(tmp_path / "e.txt") == ["line one\n", "line two\n"]
