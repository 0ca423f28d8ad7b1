"""Synthetic STEM data: row shapes, determinism, the held-out split, preference and MCQA rules, CLI."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections import Counter

import pytest
import typer
from typer.testing import CliRunner

from zephyr.data.schema import LETTERS, answers_match, extract_answer, normalize_answer
from zephyr.data.synth import FAMILIES, KINDS, _stream, generate, is_test_key, problems
from zephyr.data.synth.cli import register_synth
from zephyr.data.synth.problem import fmt
from zephyr.errors import ZephyrError
from zephyr.io import read_json, read_jsonl, sha256_file

N = 60


@pytest.fixture(scope="module")
def rows() -> dict[str, list[dict]]:
    return {kind: generate(kind, N, seed=3) for kind in KINDS}


def test_counts_fields_and_ids(rows):
    assert len(FAMILIES) >= 6
    fields = {
        "sft": {"instruction", "input", "output"},
        "pref": {"prompt", "chosen", "rejected", "error"},
        "mcqa": {"question", "choices", "answer", "subject"},
        "test": {"instruction", "input", "output", "answer_text"},
    }
    for kind, kind_rows in rows.items():
        assert Counter(r["family"] for r in kind_rows) == {f: N for f in FAMILIES}, kind
        for r in kind_rows:
            assert fields[kind] | {"id", "source", "family"} <= set(r), (kind, r)
            assert r["source"] == "synth"
        assert len({r["id"] for r in kind_rows}) == len(kind_rows), f"duplicate ids in {kind}"


def test_same_seed_same_rows_other_seed_other_rows(rows):
    _stream.cache_clear()  # regenerate for real, not from the cache
    for kind in KINDS:
        assert generate(kind, N, seed=3) == rows[kind]
        other = generate(kind, N, seed=4)
        assert other != rows[kind]
        text = (
            "instruction"
            if kind in ("sft", "test")
            else ("prompt" if kind == "pref" else "question")
        )
        overlap = {r[text] for r in other} & {r[text] for r in rows[kind]}
        assert len(overlap) < len(other) // 4, kind


def test_rows_do_not_depend_on_the_process_hash_seed():
    code = (
        "import hashlib, json; from zephyr.data.synth import generate; "
        "rows = [generate(k, 8, 5) for k in ('sft', 'pref', 'mcqa', 'test')]; "
        "print(hashlib.sha256(json.dumps(rows).encode()).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(digests) == 1


def test_generation_leaves_the_global_rng_alone():
    random.seed(123)
    state = random.getstate()
    generate("pref", 5, seed=9)
    assert random.getstate() == state


def test_families_subset_and_order():
    got = generate("sft", 4, seed=1, families=["probability", "arithmetic"])
    assert [r["family"] for r in got] == ["probability"] * 4 + ["arithmetic"] * 4
    assert got[4:] == generate("sft", 4, seed=1, families=["arithmetic"])


def test_sft_and_test_end_with_a_matching_answer_line(rows):
    for r in rows["sft"] + rows["test"]:
        last = r["output"].strip().splitlines()[-1]
        assert last.startswith("Answer: ") and last == f"Answer: {extract_answer(r['output'])}"
        assert len(r["output"]) < 400, r["output"]  # short solutions a 135M model can learn
        assert len(r["output"].splitlines()) >= 2, "a worked solution has steps"
    for r in rows["test"]:
        assert answers_match(r["output"], r["answer_text"])


def test_no_test_question_appears_in_training():
    # the training side uses a bigger n than the test side: the key split still holds
    for family in FAMILIES:
        train = {
            p.key: p.question for k in ("sft", "pref", "mcqa") for p in problems(family, 300, 5, k)
        }
        test = problems(family, 60, 5, "test")
        assert len(test) == 60
        assert not {p.key for p in test} & set(train), family
        assert not {p.question for p in test} & set(train.values()), family
        assert all(is_test_key(family, p.key) for p in test)
        assert not any(is_test_key(family, k) for k in train)


def test_test_stream_drops_excluded_questions_and_keeps_its_count():
    first = problems("arithmetic", 10, 7, "test")
    exclude = {p.question for p in first[:3]}
    kept = problems("arithmetic", 10, 7, "test", exclude)
    assert len(kept) == 10 and not {p.question for p in kept} & exclude
    assert kept[:7] == first[3:]


def test_pref_rejected_is_a_real_mistake(rows):
    errors = Counter()
    for r in rows["pref"]:
        gold = extract_answer(r["chosen"])
        assert answers_match(r["chosen"], gold)
        assert r["rejected"] != r["chosen"]
        if r["error"] == "bare":
            assert r["rejected"] == f"Answer: {gold}"  # right answer, no explanation
        else:
            assert not answers_match(r["rejected"], gold), r
            assert len(r["rejected"].splitlines()) >= 2, "a wrong worked solution, not bare"
        errors[(r["family"], r["error"])] += 1
    kinds = Counter(k for _, k in errors.elements())
    assert {"arithmetic", "unit", "sign", "bare"} <= set(kinds), kinds
    for family in FAMILIES:  # every family varies its error kind
        assert len({k for f, k in errors if f == family}) >= 3, family
    assert max(kinds.values()) < 0.5 * len(rows["pref"])


def test_mcqa_choices_and_uniform_key(rows):
    for r in rows["mcqa"]:
        assert len(r["choices"]) == 4 and r["subject"] == r["family"]
        assert len({normalize_answer(c) for c in r["choices"]}) == 4, r["choices"]
        assert 0 <= r["answer"] < 4 and LETTERS[r["answer"]] in "ABCD"
    # the right answer is the sft-style answer of the same problem
    for family in FAMILIES:
        p = problems(family, N, 3, "mcqa")
        got = [r for r in rows["mcqa"] if r["family"] == family]
        assert [r["choices"][r["answer"]] for r in got] == [q.answer for q in p]
    positions = Counter(r["answer"] for r in rows["mcqa"])
    expected = len(rows["mcqa"]) / 4  # 420 rows: each position 105 ± ~9 (1 sd)
    assert all(abs(c - expected) < 0.3 * expected for c in positions.values()), positions


def test_bad_arguments_are_user_errors():
    with pytest.raises(ZephyrError, match="kind"):
        generate("essay", 1, 0)
    with pytest.raises(ZephyrError, match="family 'alchemy'"):
        generate("sft", 1, 0, families=["alchemy"])
    with pytest.raises(ZephyrError, match="n_per_family"):
        generate("sft", -1, 0)
    assert generate("sft", 0, 0) == []


def test_fmt_rounds_half_away_from_zero_exactly():
    from decimal import Decimal
    from fractions import Fraction

    assert fmt(Decimal("98.085"), 2) == "98.09"
    assert fmt(Fraction(-1, 8), 2) == "-0.13"
    assert fmt(Fraction(2, 3), 2) == "0.67"
    assert fmt(Decimal("3500.0")) == "3500"
    assert fmt(Fraction(7, 40)) == "0.175"
    with pytest.raises(ValueError):
        fmt(Fraction(1, 3))


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """A stand-in for the `zephyr data` group."""

    register_synth(app)
    return app


def test_cli_writes_kinds_and_manifest(tmp_path):
    out = tmp_path / "synth"
    args = ["synth", "--out", str(out), "--n-per-family", "5", "--seed", "2"]
    res = CliRunner().invoke(_app(), [*args, "--families", "arithmetic,probability"])
    assert res.exit_code == 0, res.output
    manifest = read_json(out / "manifest.json")
    for kind in KINDS:
        path = out / f"{kind}.jsonl"
        assert read_jsonl(path) == generate(kind, 5, 2, ["arithmetic", "probability"])
        assert manifest["sha256"][path.name] == sha256_file(path)
        assert manifest["counts"][kind] == {"arithmetic": 5, "probability": 5}
    assert manifest["seed"] == 2 and "versions" in manifest["provenance"]
    assert not list(out.glob(".*.tmp")), "atomic writes leave no temp files"

    res = CliRunner().invoke(_app(), [*args, "--kinds", "mcqa"])
    assert res.exit_code == 0 and len(read_jsonl(out / "mcqa.jsonl")) == 5 * len(FAMILIES)


def test_cli_rejects_unknown_kind(tmp_path):
    res = CliRunner().invoke(_app(), ["synth", "--out", str(tmp_path), "--kinds", "sft,poems"])
    assert isinstance(res.exception, ZephyrError) and "poems" in str(res.exception)
    assert not (tmp_path / "sft.jsonl").exists()
