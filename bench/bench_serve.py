"""Server overhead: tokens/s and time to first token through `zephyr serve`, next to plain
`model.generate` on the same model in the same run.

    .venv/bin/python bench/bench_serve.py                # SmolLM2-135M, bf16, 64 tokens, 3 rounds
    .venv/bin/python bench/bench_serve.py --rounds 1 --tokens 32

The server runs as a subprocess (`zephyr serve`, audit log and default policy on, as deployed)
and is driven over loopback with streamed requests; the reference is `model.generate` with a
streamer in this process while the server is idle. Both decode greedily and exactly `--tokens`
tokens (min = max), so the rates compare like for like. Rounds interleave the four
measurements (plain/server x 1 client/4 concurrent clients) so load from other processes hits
all of them alike; medians are reported. One worker serves requests in turn, so for 4 clients
the reference is the same 4 prompts generated back to back. Server TTFT counts to the first
streamed word (TextStreamer sends whole words), plain TTFT to the first token.
The last line holds key=value pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

PROMPTS = [
    "A car travels 150 km in 2.5 hours. What is its average speed in m/s?",
    "Explain why the sky is blue in two sentences.",
    "Solve for x: 3x + 7 = 22. Show each step.",
    "What is the difference between mass and weight?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plain_one(model, tok, prompt: str, tokens: int, t0: float | None = None) -> dict:
    """model.generate on one prompt; times from `t0` (default: now) to the first and last token."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    from zephyr.tutor.generate import TUTOR_SYSTEM, encode_chat, stop_ids, with_system

    class FirstToken(BaseStreamer):
        def __init__(self):
            self.calls, self.first = 0, None

        def put(self, value):
            self.calls += 1
            if self.calls == 2 and self.first is None:  # call 1 is the prompt
                self.first = time.perf_counter()

        def end(self):
            pass

    start = t0 if t0 is not None else time.perf_counter()
    ids = encode_chat(tok, with_system([{"role": "user", "content": prompt}], TUTOR_SYSTEM))
    inputs = torch.tensor([ids])
    streamer = FirstToken()
    with torch.inference_mode():
        out = model.generate(
            input_ids=inputs,
            attention_mask=torch.ones_like(inputs),
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=stop_ids(tok),
            pad_token_id=tok.pad_token_id,
            streamer=streamer,
        )
    end = time.perf_counter()
    return {"ttft": streamer.first - start, "total": end - start, "tokens": out.shape[1] - len(ids)}


def server_one(url: str, prompt: str, tokens: int, t0: float | None = None) -> dict:
    """One streamed request; times from `t0` (default: now) to the first content and to [DONE]."""
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "min_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = t0 if t0 is not None else time.perf_counter()
    first, used = None, None
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            msg = json.loads(line[6:])
            if msg.get("usage"):
                used = msg["usage"]["completion_tokens"]
            elif first is None and msg["choices"][0]["delta"].get("content"):
                first = time.perf_counter()
    end = time.perf_counter()
    return {"ttft": first - start, "total": end - start, "tokens": used}


def one_client(run, tokens: int) -> dict:
    rows = [run(p, tokens) for p in PROMPTS]
    n = sum(r["tokens"] for r in rows)
    return {
        "tps": n / sum(r["total"] for r in rows),
        "ttft": statistics.mean(r["ttft"] for r in rows),
    }


def four_clients(run, tokens: int, concurrent: bool) -> dict:
    t0 = time.perf_counter()
    rows: list[dict] = [{}] * len(PROMPTS)
    if concurrent:

        def go(i: int) -> None:
            rows[i] = run(PROMPTS[i], tokens, t0)

        threads = [threading.Thread(target=go, args=(i,)) for i in range(len(PROMPTS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        rows = [run(p, tokens, t0) for p in PROMPTS]
    wall = time.perf_counter() - t0
    return {
        "tps": sum(r["tokens"] for r in rows) / wall,
        "ttft": statistics.mean(r["ttft"] for r in rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads on both sides (default: torch's)"
    )
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run `finally`: stop the server too
    env = dict(os.environ)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        env["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from zephyr.models import load_model
    from zephyr.provenance import record

    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    zephyr = [sys.executable, "-c", "from zephyr.cli import main; main()"]
    cmd = [*zephyr, "serve", args.model, "--dtype", args.dtype, "--port", str(port)]
    cmd += ["--audit", str(tmp / "audit.sqlite"), "--max-tokens-limit", str(max(1024, args.tokens))]
    cmd += ["--queue-timeout", "3600"]  # measure queueing, do not refuse it
    server = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        model, tok = load_model(args.model, dtype=args.dtype)
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start:\n{server.stderr.read()[-2000:]}")
            time.sleep(0.5)

        def plain(p, n, t0=None):
            return plain_one(model, tok, p, n, t0)

        def served(p, n, t0=None):
            return server_one(url, p, n, t0)

        plain(PROMPTS[0], 8)  # warm-up both sides
        served(PROMPTS[0], 8)
        runs: dict[str, list[dict]] = {
            k: [] for k in ("plain_1", "server_1", "plain_4", "server_4")
        }
        for r in range(args.rounds):
            runs["plain_1"].append(one_client(plain, args.tokens))
            runs["server_1"].append(one_client(served, args.tokens))
            runs["plain_4"].append(four_clients(plain, args.tokens, concurrent=False))
            runs["server_4"].append(four_clients(served, args.tokens, concurrent=True))
            print(
                f"round {r + 1}/{args.rounds}: "
                + "  ".join(f"{k} {v[-1]['tps']:.1f} tok/s" for k, v in runs.items()),
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(timeout=30)

    med = {
        k: {m: statistics.median(x[m] for x in v) for m in ("tps", "ttft")} for k, v in runs.items()
    }
    threads = args.threads or "default"
    print(
        f"\n{args.model} {args.dtype}, {args.tokens} tokens greedy, {len(PROMPTS)} prompts, "
        f"{args.rounds} rounds (medians), torch threads {threads}"
    )
    print(
        f"{'':10s} {'plain tok/s':>12s} {'server tok/s':>13s} {'overhead':>9s} {'plain TTFT':>11s} {'server TTFT':>12s}"
    )
    result = {}
    for n in ("1", "4"):
        p, s = med[f"plain_{n}"], med[f"server_{n}"]
        overhead = 1 - s["tps"] / p["tps"]
        label = "1 client" if n == "1" else "4 clients"
        print(
            f"{label:10s} {p['tps']:12.1f} {s['tps']:13.1f} {overhead:9.1%} {p['ttft'] * 1000:9.0f}ms {s['ttft'] * 1000:10.0f}ms"
        )
        result.update({
            f"plain_tps_{n}": round(p["tps"], 2), f"server_tps_{n}": round(s["tps"], 2),
            f"overhead_{n}": round(overhead, 4), f"plain_ttft_ms_{n}": round(p["ttft"] * 1000, 1),
            f"server_ttft_ms_{n}": round(s["ttft"] * 1000, 1),
        })  # fmt: skip
    if args.out:
        from zephyr.io import write_json

        write_json(args.out, {"results": result, "runs": runs, **record(vars(args))})
    print(" ".join(f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
