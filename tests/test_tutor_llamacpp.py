"""The llama.cpp engine behind `zephyr chat` / `zephyr serve`: same answers as the HF path,
chat, stream, MCQA, cancel, and 8 concurrent clients decoded together with one audit row each.

llama_cpp is imported at the top on purpose: without it this module fails, it never skips.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import llama_cpp  # noqa: F401  (fail, never skip, when the llama.cpp bindings are missing)
import pytest

from conftest import ScriptedLogits
from zephyr.errors import ZephyrError
from zephyr.tutor.audit import Audit
from zephyr.tutor.engine_llamacpp import LlamaCppEngine
from zephyr.tutor.generate import GenParams, generate
from zephyr.tutor.mcqa import answer_mcq, answer_mcq_batch
from zephyr.tutor.policy import Policy
from zephyr.tutor.server import ServeConfig, create_app, running

QUESTIONS = [
    ("Which is a prime number?", ["4", "7", "9"]),
    ("What is the unit of force?", ["joule", "newton", "watt", "pascal"]),
    ("Water boils at sea level at", ["50 C", "100 C", "150 C"]),
    ("Which planet is largest?", ["Mars", "Earth", "Jupiter", "Venus", "Mercury"]),
    ("2 + 2 =", ["3", "4"]),
    ("The derivative of x^2 is", ["x", "2x", "x^2", "2"]),
]


@pytest.fixture(scope="module")
def hf(peaked_model):
    import torch

    from zephyr.models import load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model(str(peaked_model))
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def engine(peaked_gguf):
    eng = LlamaCppEngine(peaked_gguf, parallel=8, ctx=512, threads=1)
    yield eng
    eng.close()


def test_generate_same_contract_as_hf(hf, engine):
    model, tok = hf
    msgs = [{"role": "user", "content": "Explain photosynthesis."}]
    greedy = GenParams(max_tokens=20, temperature=0)
    ref, got = generate(model, tok, msgs, greedy), generate(engine, tok, msgs, greedy)
    assert got.text == ref.text and got.finish_reason == ref.finish_reason == "length"
    assert got.prompt_tokens == ref.prompt_tokens and got.completion_tokens == 20
    pieces: list[str] = []
    streamed = generate(engine, tok, msgs, greedy, on_text=pieces.append)
    assert "".join(pieces) == streamed.text == ref.text and len(pieces) > 1
    # a stop string is cut and never emitted, as on the HF path
    stop = ref.text[8:11]
    cut = GenParams(max_tokens=20, temperature=0, stop=[stop])
    ref_cut, got_cut = generate(model, tok, msgs, cut), generate(engine, tok, msgs, cut)
    assert got_cut.text == ref_cut.text == ref.text[: ref.text.find(stop)]
    assert got_cut.finish_reason == "stop"
    # min_tokens holds EOS back; a seed makes sampling repeatable
    sampled = GenParams(max_tokens=12, min_tokens=12, temperature=1.0, seed=3)
    a, b = generate(engine, tok, msgs, sampled), generate(engine, tok, msgs, sampled)
    assert a.text == b.text and a.completion_tokens == 12


class ScriptedSampler:
    """llama_cpp with `llama_sampler_sample` answering a fixed token sequence first (a model that
    'writes' `So <<2+3=`); everything else is the real module."""

    def __init__(self, real, ids: list[int]):
        self.real, self.ids = real, list(ids)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def llama_sampler_sample(self, sampler, ctx, i):
        return self.ids.pop(0) if self.ids else self.real.llama_sampler_sample(sampler, ctx, i)


def test_calculator_runs_in_the_engine_as_on_hf(hf, engine, monkeypatch):
    """The <<expr= hook in the llama.cpp scheduler: the exact result is fed, not sampled, and the
    greedy text after it equals the HF path's (the forced tokens sit at the right positions)."""
    from zephyr.tutor.generate import encode_chat

    model, tok = hf
    msgs = [{"role": "user", "content": "What is 123456 times 789?"}]
    ids = encode_chat(tok, msgs)
    script = tok.encode("So <<123456*789=", add_special_tokens=False)
    real_generate = model.generate

    def scripted(**kw):
        kw["logits_processor"] = [ScriptedLogits(script, len(ids)), *kw.get("logits_processor", [])]
        return real_generate(**kw)

    monkeypatch.setattr(model, "generate", scripted)
    shown = GenParams(max_tokens=24, temperature=0, calculator=True, show_calc=True)
    ref = generate(model, tok, msgs, shown, input_ids=ids)
    monkeypatch.setattr(engine, "ll", ScriptedSampler(engine.ll, script))
    got = generate(engine, tok, msgs, shown, input_ids=ids)
    assert ref.text.startswith("So <<123456*789=97406784>>"), ref.text
    assert got.text == ref.text and got.calc_steps == ref.calc_steps == 1
    assert got.completion_tokens == ref.completion_tokens == 24
    monkeypatch.setattr(engine, "ll", ScriptedSampler(engine.ll.real, script))
    pieces: list[str] = []
    hidden = GenParams(max_tokens=24, temperature=0, calculator=True)
    plain = generate(engine, tok, msgs, hidden, on_text=pieces.append, input_ids=ids)
    assert (
        plain.text.startswith("So ") and "<<" not in plain.text and "97406784>>" not in plain.text
    )
    assert "".join(pieces) == plain.text


def test_prompt_cache_reuses_the_shared_prefix(hf, engine):
    model, tok = hf
    system = {"role": "system", "content": "You are a careful tutor. " * 8}
    greedy = GenParams(max_tokens=8, temperature=0)
    first = [system, {"role": "user", "content": "What is a vector?"}]
    second = [system, {"role": "user", "content": "What is a scalar?"}]
    generate(engine, tok, first, greedy)
    before = engine.reused
    got = generate(engine, tok, second, greedy)
    assert engine.reused - before >= 60  # the system turn came from the cache
    assert got.text == generate(model, tok, second, greedy).text


def test_mcqa_same_answers_as_hf(hf, engine):
    model, tok = hf
    items = [{"question": q, "choices": c} for q, c in QUESTIONS]
    ref = answer_mcq_batch(model, tok, items)
    got = answer_mcq_batch(engine, tok, items)
    assert [r["letter"] for r in got] == [r["letter"] for r in ref]
    for r, g in zip(ref, got, strict=True):
        assert max(abs(r["probs"][k] - g["probs"][k]) for k in r["probs"]) < 0.01
    assert len({r["letter"] for r in ref}) > 1  # not one letter for everything
    assert answer_mcq(engine, tok, *QUESTIONS[0])["letter"] == ref[0]["letter"]


def test_cancel_frees_the_sequence(hf, engine):
    _, tok = hf
    cancel = threading.Event()
    seen: list[str] = []

    def on_text(piece: str) -> None:
        seen.append(piece)
        if len(seen) == 3:
            cancel.set()

    params = GenParams(max_tokens=400, min_tokens=400, temperature=1.0, seed=0)
    msgs = [{"role": "user", "content": "Talk."}]
    result = generate(engine, tok, msgs, params, on_text, cancel=cancel)
    assert result.finish_reason == "cancelled" and result.completion_tokens < 50
    assert (
        generate(engine, tok, msgs, GenParams(max_tokens=4, temperature=0)).completion_tokens == 4
    )
    with pytest.raises(ZephyrError, match="context is 512"):
        engine.generate(list(range(600)), GenParams(max_tokens=4))


@pytest.fixture(scope="module")
def server(hf, engine, tmp_path_factory):
    _, tok = hf
    audit = Audit(tmp_path_factory.mktemp("audit") / "audit.sqlite")
    cfg = ServeConfig(max_queue=16, queue_timeout_s=120)
    with running(create_app(engine, tok, "tiny", cfg, audit)) as url:
        yield url, audit


def test_server_chat_stream_mcqa(server, hf):
    model, tok = hf
    url, audit = server
    before = audit.count()
    msgs = [{"role": "user", "content": "What is 12 * 3?"}]
    body = {"messages": msgs, "max_tokens": 16, "temperature": 0}
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).json()
    ref = generate(model, tok, [{"role": "system", "content": ServeConfig().system}, *msgs],
                   GenParams(max_tokens=16, temperature=0))  # fmt: skip
    assert r["choices"][0]["message"]["content"] == ref.text
    assert r["usage"]["completion_tokens"] == 16
    text = ""
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}) as s:
        for line in s.iter_lines():
            if line.startswith("data: {"):
                text += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
    assert text == ref.text
    q, choices = QUESTIONS[1]
    m = httpx.post(f"{url}/v1/mcqa", json={"question": q, "choices": choices}, timeout=60).json()
    debias = Policy.empty().mcqa.debias  # the server answers under its policy's debiasing
    ref = answer_mcq(model, tok, q, choices, ServeConfig().system, debias)
    assert m["letter"] == ref["letter"]
    assert audit.count() == before + 3


def test_server_cancel_on_disconnect(server, engine):
    url, audit = server
    body = {
        "messages": [{"role": "user", "content": "Go on forever."}],
        "max_tokens": 1000,
        "min_tokens": 1000,
        "temperature": 1.0,
        "stream": True,
    }
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as s:
        for n, _line in enumerate(s.iter_lines()):
            if n > 6:
                break  # the client goes away mid-answer
    deadline = time.monotonic() + 30
    while httpx.get(f"{url}/health").json()["inflight"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert httpx.get(f"{url}/health").json()["inflight"] == 0
    row = audit.rows(limit=1)[0]
    assert row["status"] == "cancelled" and row["completion_tokens"] < 1000


def test_eight_concurrent_clients_share_batches(server, engine):
    url, audit = server
    before, engine.peak_seqs = audit.count(), 0

    async def client(c: httpx.AsyncClient, i: int) -> tuple[int, str | None]:
        body = {
            "messages": [{"role": "user", "content": f"Client {i}: what is {i} + {i}?"}],
            "max_tokens": 48,
            "min_tokens": 48,
            "temperature": 1.0,
            "stream": i % 2 == 0,
        }
        if not body["stream"]:
            r = await c.post("/v1/chat/completions", json=body)
            return r.status_code, r.json()["choices"][0]["finish_reason"]
        finish = None
        async with c.stream("POST", "/v1/chat/completions", json=body) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    finish = json.loads(line[6:])["choices"][0]["finish_reason"] or finish
        return r.status_code, finish

    async def crowd():
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            return await asyncio.gather(*(client(c, i) for i in range(8)))

    results = asyncio.run(crowd())
    assert results == [(200, "length")] * 8
    assert engine.peak_seqs >= 4  # decoded together, not one after another
    assert audit.count() == before + 8
    rows = audit.rows(limit=8)
    assert {r["status"] for r in rows} == {"ok"} and {r["completion_tokens"] for r in rows} == {48}
