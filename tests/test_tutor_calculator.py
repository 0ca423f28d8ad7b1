"""The calculator: exact safe arithmetic, annotations, and the generation hook on a tiny model."""

from __future__ import annotations

from fractions import Fraction

import pytest

from conftest import ScriptedLogits
from zephyr.errors import ZephyrError
from zephyr.tutor.calculator import (
    AnnotationFilter,
    CalculatorProcessor,
    annotate,
    evaluate,
    forced_continuation,
    format_value,
    strip_annotations,
    trained_with,
    training_marker,
    write_marker,
)


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("48/2", 24),
        ("0.1 + 0.2", Fraction(3, 10)),  # exact: no float noise
        ("150 ÷ 2.5", 60),
        ("12 + 3 × 4", 24),
        ("-(2 - 5) ** 2", -9),
        ("2^10", 1024),
        ("3²", 9),
        ("1,000 * 3", 3000),
        ("10/4", Fraction(5, 2)),
        ("2 ** -2", Fraction(1, 4)),
    ],
)
def test_exact_arithmetic(expr, value):
    assert evaluate(expr) == value


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('true')",
        "open('/etc/passwd')",
        "x + 1",
        "().__class__",
        "lambda: 1",
        "[1, 2]",
        "'a' * 3",
        "1 if 1 else 2",
        "2 ** 1000",  # exponent too large
        "9 ** 9 ** 9",  # the classic CPU bomb
        "10 ** 60 * 10 ** 60",  # result too large to write
        "2 ** 0.5",  # irrational: refused, not approximated
        "1 / 0",
        "0 ** -1",
        "1 +",
        "",
        "1" + "+1" * 200,  # too long
        "True + 1",
        "1 // 2",
        "7 % 3",
    ],
)
def test_hostile_or_non_arithmetic_input_is_refused(expr):
    with pytest.raises(ZephyrError):
        evaluate(expr)


def test_format_value():
    assert format_value(Fraction(24)) == "24"
    assert format_value(Fraction(1, 8)) == "0.125"
    assert format_value(Fraction(10, 3)) == "3.3333"
    assert format_value(Fraction(-5, 2)) == "-2.5"


def test_forced_continuation_only_for_an_open_annotation():
    assert forced_continuation("so 2 + 3 = <<2+3=") == "5>>"
    assert forced_continuation("speed = 150 ÷ 2.5 = <<150 ÷ 2.5=") == "60>>"
    assert forced_continuation("<<2+3=5>> and x =") is None  # no open annotation
    assert forced_continuation("<<2+3") is None
    assert forced_continuation("<<x+3=") is None  # not arithmetic: the model goes on alone
    assert forced_continuation("<<2+3=5>>5, then <<5*4=") == "20>>"


def test_annotate_marks_right_steps_only():
    chain = "v = 12 + 3 × 4 = 12 + 12 = 24\nAnswer: 24 m/s"
    assert annotate(chain) == "v = 12 + 3 × 4 = <<12 + 3 × 4=24>>24\nAnswer: 24 m/s"
    assert annotate("speed = 150 ÷ 2.5 = 61") == "speed = 150 ÷ 2.5 = 61"  # a slip: untouched
    lines = "Split: 347 + 285 = (300 + 200) + (40 + 80) + (7 + 5)\n= 500 + 120 + 12\n= 632"
    assert annotate(lines).endswith("= <<347 + 285=632>>632")
    rounded = "n = 364 ÷ 44.02 ≈ 8.27"
    assert "<<364 ÷ 44.02=8.269>>8.27" in annotate(rounded)
    assert annotate("There are 8 + 29 + 1 = 38 marbles") == (
        "There are 8 + 29 + 1 = <<8 + 29 + 1=38>>38 marbles"
    )
    assert annotate("x2 + 3 = 5") == "x2 + 3 = 5"  # symbolic: not arithmetic
    assert strip_annotations(annotate(chain)) == "v = 12 + 3 × 4 = 24\nAnswer: 24 m/s"


def test_filter_hides_annotations_across_pieces():
    f = AnnotationFilter()
    text = "a = <<2+3=5>>5, b < c, d <<"
    assert "".join(f.feed(c) for c in text) + f.flush() == "a = 5, b < c, d <<"
    code = "x << 2 >> 1\ny <<= 3\n"  # C shifts are not annotations: nothing is lost
    f = AnnotationFilter()
    assert "".join(f.feed(c) for c in code) + f.flush() == code
    assert strip_annotations(code) == code
    assert AnnotationFilter(show=True).feed("<<1+1=2>>2") == "<<1+1=2>>2"


def test_marker(tmp_path):
    rows = tmp_path / "sft_train.jsonl"
    rows.write_text('{"output": "2 + 2 = <<2 + 2=4>>4"}\n{"output": "plain"}\n')
    marker = training_marker([rows])
    assert marker["annotated_rows"] == 1
    model = tmp_path / "model"
    model.mkdir()
    assert not trained_with(model)
    write_marker(model, marker)
    assert trained_with(model)
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"output": "plain"}\n')
    assert training_marker([plain]) is None
    assert training_marker([plain], base=model) is not None  # DPO from a calculator SFT model


def _run(model, tok, script_text: str, calculator: bool, max_new: int = 12) -> str:
    import torch

    prompt = tok("Compute:", return_tensors="pt")["input_ids"]
    n = prompt.shape[1]
    procs = [ScriptedLogits(tok.encode(script_text, add_special_tokens=False), n)]
    if calculator:
        procs.append(CalculatorProcessor(tok, n))
    out = model.generate(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=max_new,
        do_sample=False,
        logits_processor=procs,
        pad_token_id=tok.pad_token_id,
    )
    return tok.decode(out[0, n:], skip_special_tokens=True)


def test_hook_writes_the_result_on_a_tiny_model(tiny):
    model, tok = tiny
    with_calc = _run(model, tok, "<<2+3=", calculator=True)
    assert with_calc.startswith("<<2+3=5>>"), with_calc
    without = _run(model, tok, "<<2+3=", calculator=False)
    assert not without.startswith("<<2+3=5>>")  # a random model does not write 5>> itself
    big = _run(model, tok, "<<123456*789=", calculator=True, max_new=24)
    assert "<<123456*789=97406784>>" in big


def test_tutor_generate_uses_the_hook_and_hides_annotations(tiny, monkeypatch):
    from zephyr.tutor.generate import GenParams, encode_chat, generate

    model, tok = tiny
    msgs = [{"role": "user", "content": "2+3?"}]
    ids = encode_chat(tok, msgs)
    script = tok.encode("So <<2+3=", add_special_tokens=False)
    real = model.generate

    def scripted(**kw):  # the model "chooses" to write `So <<2+3=`
        kw["logits_processor"] = [ScriptedLogits(script, len(ids)), *kw.get("logits_processor", [])]
        return real(**kw)

    monkeypatch.setattr(model, "generate", scripted)
    pieces: list[str] = []
    params = GenParams(max_tokens=10, temperature=0, calculator=True)
    res = generate(model, tok, msgs, params, on_text=pieces.append, input_ids=ids)
    assert res.calc_steps == 1
    assert res.text.startswith("So ") and "<<" not in res.text and "5>>" not in res.text
    assert "".join(pieces) == res.text
    shown = GenParams(max_tokens=10, temperature=0, calculator=True, show_calc=True)
    raw = generate(model, tok, msgs, shown, input_ids=ids)
    assert raw.text.startswith("So <<2+3=5>>")


def test_data_keeps_and_writes_annotations():
    from zephyr.data.build import SynthRows
    from zephyr.data.config import SynthConfig
    from zephyr.data.readers.gsm8k import solution

    answer = "She has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"
    assert solution(answer) == "She has 3 + 4 = 7 apples.\nAnswer: 7"
    assert solution(answer, keep_calc=True) == "She has 3 + 4 = <<3+4=7>>7 apples.\nAnswer: 7"
    cfg = SynthConfig(n_per_family=5, families=["kinematics"])
    plain = SynthRows(cfg).rows("sft")
    calc = SynthRows(cfg, calculator=True).rows("sft")
    assert all("<<" not in r["output"] for r in plain)
    assert all("<<" in r["output"] for r in calc)
    last = [r["output"].splitlines()[-1] for r in plain]  # chains may collapse; answers do not
    assert [strip_annotations(r["output"]).splitlines()[-1] for r in calc] == last
    for r in calc:  # every annotation in the training data is right
        for expr, value in __import__("re").findall(r"<<([^=<>]+)=([^<>]+)>>", r["output"]):
            assert format_value(evaluate(expr)) == value


def test_stepwise_loop_for_other_engines():
    """An engine that produces text piece by piece (as llama.cpp does) gets the same hook."""
    from zephyr.tutor.calculator import with_calculator

    script = iter(["speed = ", "150 ÷ 2.5", " = <<", "150 ÷ 2.5", "=", "60", " km/h", None])
    asked: list[str] = []

    def engine(text: str) -> str | None:
        asked.append(text)
        return next(script)

    out = with_calculator(engine)
    assert out == "speed = 150 ÷ 2.5 = <<150 ÷ 2.5=60>>60 km/h"
    assert all(not a.endswith("<<150 ÷ 2.5=") for a in asked)  # never asked for the result


def test_scorer_generate_with_calculator(tiny, monkeypatch):
    from zephyr.eval.engine import Scorer

    model, tok = tiny
    scorer = Scorer(model, tok, batch_size=2, progress=False)
    prompts = ["Compute:", "A longer prompt to pad the batch:"]
    real = model.generate

    def scripted(**kw):
        width = kw["input_ids"].shape[1]
        ids = tok.encode("<<7*6=", add_special_tokens=False)
        kw["logits_processor"] = [ScriptedLogits(ids, width), *(kw.get("logits_processor") or [])]
        return real(**kw)

    monkeypatch.setattr(model, "generate", scripted)
    on = scorer.generate(prompts, max_new_tokens=10, calculator=True)
    off = scorer.generate(prompts, max_new_tokens=10)
    assert all(o.startswith("<<7*6=42>>") for o in on), on
    assert not any(o.startswith("<<7*6=42>>") for o in off)


def test_a_quantized_artifact_follows_its_source_models_marker(tmp_path):
    """Quantizing a calculator-trained model keeps the calculator on (quantization.json source)."""
    import json

    model, artifact = tmp_path / "dpo/model", tmp_path / "quantize/int8"
    model.mkdir(parents=True)
    artifact.mkdir(parents=True)
    (artifact / "quantization.json").write_text(json.dumps({"source": {"path": str(model)}}))
    assert not trained_with(artifact)
    write_marker(model, {"annotated_rows": 1})
    assert trained_with(artifact)
