"""`zephyr serve --engine llamacpp` against plain llama.cpp on the same GGUF and the HF engine.

    .venv/bin/python bench/bench_serve.py                       # SmolLM2-135M, f16 GGUF, 64 tokens
    .venv/bin/python bench/bench_serve.py --quant q8_0 --rounds 1 --tokens 32 --threads 2

Measured in one run, rounds interleaved so load from other processes hits every side alike
(medians reported):
- plain llama.cpp: the C API through llama-cpp-python in this process, one sequence, the
  prompt in one llama_decode and then one token per llama_decode with greedy sampling, nothing
  else (the floor any server on llama.cpp pays);
- `zephyr serve --engine llamacpp` (a subprocess, audit log and default policy on, as deployed)
  over loopback, streamed: 1 client, then 4 and 8 concurrent clients;
- `zephyr serve --engine hf` with one client (transformers `generate`, `--dtype`);
- the engine alone (`LlamaCppEngine.generate` from 1, 4, 8 threads of this process, no HTTP):
  what batching gives before the server's Python and HTTP share the CPU with it.
Every side decodes greedily exactly `--tokens` tokens (min = max) after the same chat-template
ids. Decode tok/s = (tokens - 1) / (last token time - first token time); TTFT = request start to
first token; aggregate tok/s = all clients' tokens / wall time. Both llama.cpp sides use
`--threads` (default: $OMP_NUM_THREADS, else all cores); the HF server gets the same through
OMP_NUM_THREADS. The last line holds key=value pairs, ratios first.
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
    "What is the kinetic energy of a 2 kg ball moving at 3 m/s?",
    "Why does ice float on water?",
    "Factor x^2 - 5x + 6.",
    "What is Ohm's law?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chat_ids(tok, prompt: str) -> list[int]:
    from zephyr.tutor.generate import TUTOR_SYSTEM, encode_chat, with_system

    return encode_chat(tok, with_system([{"role": "user", "content": prompt}], TUTOR_SYSTEM))


class PlainLlama:
    """The minimal llama.cpp decode loop: what the engine is measured against."""

    def __init__(self, gguf: Path, threads: int, stop: list[int]):
        import llama_cpp
        from llama_cpp import _logger

        from zephyr.tutor.engine_llamacpp import model_params

        _logger.set_verbose(False)
        self.ll, self.stop = llama_cpp, stop
        self.model = llama_cpp.llama_model_load_from_file(
            str(gguf).encode(), model_params(llama_cpp)
        )
        p = llama_cpp.llama_context_default_params()
        p.n_ctx, p.n_batch, p.n_ubatch = 2048, 512, 512
        p.n_threads = p.n_threads_batch = threads
        self.ctx = llama_cpp.llama_init_from_model(self.model, p)
        self.batch = llama_cpp.llama_batch_init(512, 0, 1)
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        self.sampler = chain

    def _decode(self, toks: list[int], pos0: int) -> None:
        b = self.batch
        for i, t in enumerate(toks):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, pos0 + i, 1, 0
            b.seq_id[i][0] = 0
        b.logits[len(toks) - 1] = 1
        b.n_tokens = len(toks)
        assert self.ll.llama_decode(self.ctx, b) == 0

    def _next(self) -> int:
        logits = self.ll.llama_get_logits_ith(self.ctx, -1)
        for t in self.stop:  # min = max tokens, as the server's min_tokens
            logits[t] = float("-inf")
        return self.ll.llama_sampler_sample(self.sampler, self.ctx, -1)

    def run(self, ids: list[int], tokens: int) -> dict:
        self.ll.llama_memory_clear(self.ll.llama_get_memory(self.ctx), True)
        t0 = time.perf_counter()
        self._decode(ids, 0)
        tok = self._next()
        first = time.perf_counter()
        for k in range(1, tokens):
            self._decode([tok], len(ids) + k - 1)
            tok = self._next()
        end = time.perf_counter()
        return {"ttft": first - t0, "decode_tps": (tokens - 1) / (end - first), "tokens": tokens}


def stream_one(url: str, prompt: str, tokens: int) -> dict:
    """One streamed request: TTFT, decode rate between first and last token, tokens."""
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "min_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    first = last = None
    used = 0
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=900) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            msg = json.loads(line[6:])
            if msg.get("usage"):
                used = msg["usage"]["completion_tokens"]
            elif msg["choices"] and msg["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
    rate = (used - 1) / (last - first) if last and last > first else float("nan")
    return {"ttft": first - t0, "decode_tps": rate, "tokens": used, "end": time.perf_counter()}


def crowd(url: str, n: int, tokens: int) -> dict:
    """`n` concurrent streamed clients: aggregate tok/s over the wall time, mean TTFT."""
    rows: list[dict] = [{}] * n
    t0 = time.perf_counter()

    def go(i: int) -> None:
        rows[i] = stream_one(url, PROMPTS[i % len(PROMPTS)], tokens)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = max(r["end"] for r in rows) - t0
    return {
        "tps": sum(r["tokens"] for r in rows) / wall,
        "ttft": statistics.mean(r["ttft"] for r in rows),
    }


def engine_crowd(engine, tok, n: int, tokens: int) -> dict:
    """`n` concurrent callers of LlamaCppEngine.generate in this process: no HTTP, no server."""
    from zephyr.tutor.generate import GenParams, stop_ids

    params = GenParams(max_tokens=tokens, min_tokens=tokens, temperature=0)
    ids = [chat_ids(tok, PROMPTS[i % len(PROMPTS)]) for i in range(n)]
    done = [0] * n
    t0 = time.perf_counter()

    def go(i: int) -> None:
        done[i] = engine.generate(ids[i], params, stop_ids=stop_ids(tok)).completion_tokens

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"tps": sum(done) / (time.perf_counter() - t0)}


def start_server(model: str, extra: list[str], env: dict, tmp: Path, name: str):
    port = free_port()
    cmd = [sys.executable, "-c", "from zephyr.cli import main; main()", "serve", model]
    cmd += ["--port", str(port), "--audit", str(tmp / f"{name}.sqlite")]
    cmd += ["--queue-timeout", "3600", "--max-tokens-limit", "4096", *extra]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the {name} server did not start:\n{proc.stderr.read()[-2000:]}")
        time.sleep(0.5)


def med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--quant", default="f16", help="GGUF type for both llama.cpp sides")
    ap.add_argument("--dtype", default="float32", help="the HF server's dtype")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-hf", action="store_true", help="skip the HF server")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run `finally`: stop the servers
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from zephyr.export.gguf import gguf_for
    from zephyr.tutor.engine_llamacpp import default_threads
    from zephyr.tutor.engines import tokenizer_for
    from zephyr.tutor.generate import stop_ids

    threads = args.threads or default_threads()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    gguf = gguf_for(args.model, args.quant)
    tok = tokenizer_for(args.model)
    plain = PlainLlama(gguf, threads, stop_ids(tok))
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    engine = ["--engine", "llamacpp", "--quant", args.quant, "--parallel", "8"]
    engine += ["--threads", str(threads)]
    servers = {"llamacpp": start_server(args.model, engine, env, tmp, "llamacpp")}
    if not args.no_hf:
        hf = ["--engine", "hf", "--dtype", args.dtype]
        servers["hf"] = start_server(args.model, hf, env, tmp, "hf")
    from zephyr.tutor.engine_llamacpp import LlamaCppEngine

    inproc = LlamaCppEngine(gguf, parallel=8, ctx=2048, threads=threads)
    keys = ("plain", "served", "hf", "c1", "c4", "c8", "e1", "e4", "e8")
    runs: dict[str, list[dict]] = {k: [] for k in keys}
    try:
        plain.run(chat_ids(tok, PROMPTS[0]), 8)  # warm-up every side
        for _, url in servers.values():
            stream_one(url, PROMPTS[0], 8)
        url = servers["llamacpp"][1]
        for r in range(args.rounds):
            for p in PROMPTS[:4]:
                runs["plain"].append(plain.run(chat_ids(tok, p), args.tokens))
                runs["served"].append(stream_one(url, p, args.tokens))
                if "hf" in servers:
                    runs["hf"].append(stream_one(servers["hf"][1], p, args.tokens))
            runs["c1"].append(crowd(url, 1, args.tokens))
            runs["c4"].append(crowd(url, 4, args.tokens))
            runs["c8"].append(crowd(url, 8, args.tokens))
            for n in (1, 4, 8):
                runs[f"e{n}"].append(engine_crowd(inproc, tok, n, args.tokens))
            print(f"round {r + 1}/{args.rounds}: " + "  ".join(
                f"{k} {v[-1].get('decode_tps', v[-1].get('tps')):.1f}" for k, v in runs.items() if v
            ), flush=True)  # fmt: skip
    finally:
        inproc.close()
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)

    res = {
        "vs_llamacpp_ratio": med(runs["served"], "decode_tps") / med(runs["plain"], "decode_tps"),
        "aggregate4_ratio": med(runs["c4"], "tps") / med(runs["c1"], "tps"),
        "aggregate8_ratio": med(runs["c8"], "tps") / med(runs["c1"], "tps"),
        "engine_aggregate4_ratio": med(runs["e4"], "tps") / med(runs["e1"], "tps"),
        "engine_aggregate8_ratio": med(runs["e8"], "tps") / med(runs["e1"], "tps"),
        "plain_tps": med(runs["plain"], "decode_tps"),
        "served_tps": med(runs["served"], "decode_tps"),
        "aggregate1_tps": med(runs["c1"], "tps"),
        "aggregate4_tps": med(runs["c4"], "tps"),
        "aggregate8_tps": med(runs["c8"], "tps"),
        "engine_aggregate1_tps": med(runs["e1"], "tps"),
        "engine_aggregate4_tps": med(runs["e4"], "tps"),
        "plain_ttft_ms": med(runs["plain"], "ttft") * 1000,
        "served_ttft_ms": med(runs["served"], "ttft") * 1000,
        "ttft4_ms": med(runs["c4"], "ttft") * 1000,
        "ttft8_ms": med(runs["c8"], "ttft") * 1000,
    }
    if runs["hf"]:
        res["hf_tps"] = med(runs["hf"], "decode_tps")
        res["vs_hf_ratio"] = res["served_tps"] / res["hf_tps"]
        res["hf_ttft_ms"] = med(runs["hf"], "ttft") * 1000
    print(
        f"\n{args.model} {args.quant} GGUF ({gguf.stat().st_size / 2**20:.0f} MiB), "
        f"{args.tokens} tokens greedy, {args.rounds} rounds, llama.cpp threads {threads}"
    )
    for k, v in res.items():
        print(f"  {k:18s} {v:10.2f}")
    if args.out:
        from zephyr.io import write_json
        from zephyr.provenance import record

        write_json(args.out, {"results": res, "runs": runs, **record(vars(args))})
    print(" ".join(f"{k}={v:.3f}" for k, v in res.items()) + f" threads={threads}")


if __name__ == "__main__":
    main()
