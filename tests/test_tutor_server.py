"""The server: the `openai` package works unchanged, auth, bad input, policy, cancel, queue limits."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from zephyr.tutor.audit import Audit
from zephyr.tutor.policy import Policy
from zephyr.tutor.server import ServeConfig, create_app, running

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
USER = [{"role": "user", "content": "What is 12 * 3?"}]


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    model, tok = tiny
    audit = Audit(tmp_path_factory.mktemp("audit") / "audit.sqlite")
    cfg = ServeConfig(
        token=TOKEN,
        max_body_bytes=20_000,
        max_message_chars=2_000,
        max_messages=8,
        max_tokens_limit=300,
    )
    app = create_app(model, tok, "tiny", cfg, audit, Policy.load())
    with running(app) as url:
        yield url, audit


@pytest.fixture
def client(server):
    url, _ = server
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as c:
        yield c


def test_openai_client_unchanged(server):
    from openai import OpenAI

    url, audit = server
    before = audit.count()
    oa = OpenAI(base_url=f"{url}/v1", api_key=TOKEN)
    assert [m.id for m in oa.models.list().data] == ["tiny"]
    r = oa.chat.completions.create(
        model="tiny", messages=USER, max_tokens=12, temperature=0.8, top_p=0.9, seed=1
    )
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 12
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content
    stream = oa.chat.completions.create(
        model="tiny",
        messages=USER,
        max_tokens=12,
        temperature=0.8,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content  # same seed, same answer, streamed or not
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 12
    assert audit.count() == before + 2
    row = audit.rows(limit=1)[0]
    assert row["model"] == "tiny" and row["completion_tokens"] == 12 and row["latency_ms"] > 0
    assert row["prompt"][0]["role"] == "system" and "STEM tutor" in row["prompt"][0]["content"]


def test_stop_and_greedy_params(client):
    body = {"model": "tiny", "messages": USER, "max_tokens": 20, "temperature": 0}
    a = client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]
    b = client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]
    assert a == b  # temperature 0 is greedy
    r = client.post("/v1/chat/completions", json={**body, "temperature": 1.0, "seed": 4}).json()
    text = r["choices"][0]["message"]["content"]
    stop = text.split()[2]
    r2 = client.post(
        "/v1/chat/completions", json={**body, "temperature": 1.0, "seed": 4, "stop": stop}
    ).json()
    assert r2["choices"][0]["finish_reason"] == "stop"
    assert r2["choices"][0]["message"]["content"] == text[: text.find(stop)]


def test_mcqa_endpoint(client):
    r = client.post(
        "/v1/mcqa", json={"question": "Which is a noble gas?", "choices": ["Neon", "Iron", "Salt"]}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["letter"] in "ABC" and body["index"] == "ABC".index(body["letter"])
    assert sum(body["probs"].values()) == pytest.approx(1.0, abs=1e-5)


def _error(r: httpx.Response, status: int, param: str | None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["param"] == param
    return err


@pytest.mark.parametrize(
    "body,status,param",
    [
        (b"{not json", 400, "body"),
        (b"[1, 2]", 422, "body"),
        (json.dumps({"messages": "hello"}).encode(), 422, "messages"),
        (json.dumps({"messages": []}).encode(), 422, "messages"),
        (
            json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(),
            422,
            "messages.0.role",
        ),
        (
            json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(),
            422,
            "messages.0.content",
        ),
        (json.dumps({"messages": USER, "max_tokens": "10"}).encode(), 422, "max_tokens"),
        (json.dumps({"messages": USER, "temperature": 9}).encode(), 422, "temperature"),
        (json.dumps({"messages": USER, "max_tokens": 5000}).encode(), 422, "max_tokens"),
        (json.dumps({"messages": USER * 9}).encode(), 422, "messages"),
        (
            json.dumps({"messages": [{"role": "user", "content": "x" * 3000}]}).encode(),
            413,
            "messages[0].content",
        ),
        (
            json.dumps({"messages": [{"role": "user", "content": "x" * 30000}]}).encode(),
            413,
            "body",
        ),
        (json.dumps({"model": "gpt-4", "messages": USER}).encode(), 404, "model"),
    ],
)
def test_bad_input_is_a_clear_4xx(client, body, status, param):
    r = client.post(
        "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}
    )
    _error(r, status, param)
    assert client.get("/health").json()["status"] == "ok"


def test_bad_mcqa_and_chunked_huge_body(client):
    _error(client.post("/v1/mcqa", json={"question": "Q", "choices": ["one"]}), 422, "choices")
    _error(client.post("/v1/mcqa", json={"question": "Q", "choices": [1, 2]}), 422, "choices.0")

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(50):
            yield b" " * 1000

    r = client.post(
        "/v1/chat/completions", content=chunks(), headers={"Content-Type": "application/json"}
    )
    _error(r, 413, "body")
    assert client.get("/health").json()["status"] == "ok"


def test_auth(server):
    url, _ = server
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = httpx.post(f"{url}/v1/chat/completions", json={"messages": USER}, headers=headers)
        _error(r, 401, None)
        assert r.headers["WWW-Authenticate"] == "Bearer"
    assert httpx.get(f"{url}/v1/models").status_code == 401
    assert httpx.get(f"{url}/health").status_code == 200  # health and the page need no token
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing loaded from elsewhere
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")


def test_policy_refuses_and_logs_the_rule(client, server):
    _, audit = server
    body = {
        "messages": [{"role": "user", "content": "How do I build a pipe bomb?"}],
        "max_tokens": 10,
    }
    r = client.post("/v1/chat/completions", json=body).json()
    assert r["choices"][0]["finish_reason"] == "content_filter"
    assert "weapons" in r["choices"][0]["message"]["content"]
    row = audit.rows(limit=1)[0]
    assert row["status"] == "refused" and row["flags"] == [{"rule": "weapons", "where": "input"}]
    streamed = client.post("/v1/chat/completions", json={**body, "stream": True}).text
    assert '"finish_reason": "content_filter"' in streamed and streamed.rstrip().endswith("[DONE]")


def test_output_policy_stops_generation(tiny, tmp_path):
    """A rule that matches any output stops the model after its first words."""
    from zephyr.tutor.policy import PolicyFile, Rule

    model, tok = tiny
    audit = Audit(tmp_path / "a.sqlite")
    policy = Policy(
        PolicyFile(refusal="stopped", rules=[Rule(name="anything", pattern=r"\w", where="output")])
    )
    with running(create_app(model, tok, "tiny", ServeConfig(), audit, policy)) as url:
        r = httpx.post(
            f"{url}/v1/chat/completions",
            json={"messages": USER, "max_tokens": 200, "temperature": 1.0, "seed": 2},
            timeout=60,
        ).json()
    assert (
        r["choices"][0]["finish_reason"] == "content_filter"
        and r["choices"][0]["message"]["content"] == "stopped"
    )
    row = audit.rows()[0]
    assert (
        row["flags"] == [{"rule": "anything", "where": "output"}] and row["completion_tokens"] < 50
    )


def test_cancelled_stream_stops_generating(tiny, tmp_path):
    model, tok = tiny
    audit = Audit(tmp_path / "a.sqlite")
    with running(create_app(model, tok, "tiny", ServeConfig(max_tokens_limit=900), audit)) as url:
        body = {
            "messages": USER,
            "max_tokens": 900,
            "min_tokens": 900,
            "stream": True,
            "temperature": 1.0,
        }
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as s:
            lines = s.iter_lines()
            got = [next(lines) for _ in range(3)]  # role chunk + two pieces, then hang up
        assert all(line.startswith("data: ") or line == "" for line in got)
        deadline = time.monotonic() + 30
        while audit.count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        row = audit.rows()[0]
        assert row["status"] == "cancelled" and row["finish_reason"] == "cancelled"
        assert row["completion_tokens"] < 900
        assert httpx.get(f"{url}/health").json()["inflight"] == 0


def test_queue_timeout_gives_503_with_retry_after(tiny, tmp_path):
    """A request that cannot reach the worker in time is refused cleanly, never run, and logged."""
    import threading

    model, tok = tiny
    audit = Audit(tmp_path / "a.sqlite")
    cfg = ServeConfig(queue_timeout_s=0.2, max_tokens_limit=900)
    with running(create_app(model, tok, "tiny", cfg, audit)) as url:
        long = {"messages": USER, "max_tokens": 300, "min_tokens": 300, "temperature": 1.0}
        first = threading.Thread(
            target=lambda: httpx.post(f"{url}/v1/chat/completions", json=long, timeout=120)
        )
        first.start()
        while httpx.get(f"{url}/health").json()["inflight"] == 0:
            time.sleep(0.01)
        r = httpx.post(
            f"{url}/v1/chat/completions", json={"messages": USER, "max_tokens": 4}, timeout=60
        )
        err = _error(r, 503, None)
        assert err["code"] == "queue_timeout" and r.headers["Retry-After"].isdigit()
        first.join()
        rows = audit.rows()
        assert [r["status"] for r in rows] == [
            "ok",
            "error",
        ]  # newest first: the 503 finished first
        assert rows[1]["http_status"] == 503 and rows[1]["completion_tokens"] is None
