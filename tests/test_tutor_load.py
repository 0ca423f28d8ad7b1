"""50 concurrent clients on loopback: each answered or cleanly refused, the server healthy after,
and exactly one audit row per request (answered: `ok`; turned away: `error` with its status)."""

from __future__ import annotations

import asyncio
import json

import httpx

from zephyr.tutor.audit import Audit
from zephyr.tutor.server import ServeConfig, create_app, running

CLIENTS = 50


async def one_client(c: httpx.AsyncClient, i: int) -> tuple[int, str]:
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": f"Client {i}: what is {i} + {i}?"}],
        "max_tokens": 24,
        "min_tokens": 24,  # every answer costs the same: the queue fills for sure
        "temperature": 1.0,
        "stream": i % 2 == 0,
    }
    if not body["stream"]:
        r = await c.post("/v1/chat/completions", json=body)
        if r.status_code == 200:
            assert r.json()["usage"]["completion_tokens"] == 24
            return 200, r.json()["choices"][0]["finish_reason"]
        return r.status_code, r.headers.get("Retry-After", "")
    async with c.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            await r.aread()
            return r.status_code, r.headers.get("Retry-After", "")
        finish = None
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                choice = json.loads(line[6:])["choices"][0]
                finish = choice["finish_reason"] or finish
        return 200, finish


def test_fifty_concurrent_clients(tiny, tmp_path):
    model, tok = tiny
    audit = Audit(tmp_path / "audit.sqlite")
    cfg = ServeConfig(max_queue=8, queue_timeout_s=60)
    with running(create_app(model, tok, "tiny", cfg, audit)) as url:

        async def crowd():
            limits = httpx.Limits(max_connections=CLIENTS)
            async with httpx.AsyncClient(base_url=url, timeout=90, limits=limits) as c:
                return await asyncio.wait_for(
                    asyncio.gather(*(one_client(c, i) for i in range(CLIENTS))), timeout=240
                )

        results = asyncio.run(crowd())
        health = httpx.get(f"{url}/health").json()

    answered = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] in (429, 503)]
    assert len(answered) + len(refused) == CLIENTS, results  # nothing else: no 500, no hang
    assert all(finish == "length" for _, finish in answered)
    assert all(retry.isdigit() for _, retry in refused)  # every refusal says when to come back
    assert answered and refused  # 50 clients on a queue of 8: some wait, some are turned away
    assert health["status"] == "ok" and health["inflight"] == 0
    rows = audit.rows()
    assert sum(r["status"] == "ok" for r in rows) == len(answered)
    assert sorted(r["http_status"] for r in rows if r["status"] == "error") == sorted(
        status for status, _ in refused
    )
    assert len(rows) == CLIENTS
