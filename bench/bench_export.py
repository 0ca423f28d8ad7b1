"""GGUF exports of one model: size, perplexity and decode tok/s of each quant vs the HF fp32 model.

    .venv/bin/python bench/bench_export.py                                  # SmolLM2-135M
    .venv/bin/python bench/bench_export.py --model runs/demo/dpo/model --windows 16

Each quant is written by `zephyr export` (llama.cpp's converter, then `llama_model_quantize`)
into `--out`. Perplexity: the same WikiText-2 test token ids for every side (the HF tokenizer,
`--windows` windows of `--width` tokens, every token after the first of a window scored),
exp(mean NLL). Decode tok/s: greedy, exactly `--tokens` new tokens after a chat prompt, one
sequence; llama.cpp through its C API (bench_serve.PlainLlama), HF through `model.generate`.
The last line holds key=value pairs: each quant's size and perplexity ratio to fp32 and its
speed ratio to HF fp32.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from bench_serve import PROMPTS, PlainLlama, chat_ids

QUANTS = ("f16", "q8_0", "q4_0", "q4_k_m")


def hf_decode_tps(model, tok, prompts: list[str], tokens: int) -> float:
    """Median decode rate of `model.generate` over the prompts (prefill excluded)."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    from zephyr.tutor.generate import stop_ids

    class Stamps(BaseStreamer):
        def __init__(self):
            self.times: list[float] = []

        def put(self, value):
            self.times.append(time.perf_counter())

        def end(self):
            pass

    rates = []
    for p in prompts:
        ids = torch.tensor([chat_ids(tok, p)])
        s = Stamps()
        with torch.inference_mode():
            model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                min_new_tokens=tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                eos_token_id=stop_ids(tok), pad_token_id=tok.pad_token_id, streamer=s,
            )  # fmt: skip
        # put #1 is the prompt, #2 the first new token, the last one the last new token
        rates.append((tokens - 1) / (s.times[-1] - s.times[1]))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--quants", default=",".join(QUANTS))
    ap.add_argument("--out", type=Path, default=Path("runs/bench-export"))
    ap.add_argument("--data", type=Path, default=Path("../shared/data/wikitext-2/test.txt"))
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from zephyr.export.gguf import export_gguf, model_label
    from zephyr.export.parity import gguf_logprobs, hf_logprobs, perplexity, windows_of
    from zephyr.models import load_model
    from zephyr.tutor.engine_llamacpp import default_threads
    from zephyr.tutor.generate import stop_ids

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    model, tok = load_model(args.model)
    ids = tok.encode(args.data.read_text(encoding="utf-8"), add_special_tokens=False)
    windows = windows_of(ids, args.width, args.windows)
    prompts = PROMPTS[:4]
    rows = {"hf-fp32": {"bytes": sum(p.numel() * 4 for p in model.parameters())}}
    rows["hf-fp32"]["ppl"] = perplexity(hf_logprobs(model, windows))
    rows["hf-fp32"]["tps"] = hf_decode_tps(model, tok, prompts, args.tokens)
    for quant in args.quants.split(","):
        t0 = time.perf_counter()
        out = args.out / f"{model_label(args.model)}-{quant}.gguf"
        done = export_gguf(args.model, quant, out=out, threads=threads)
        secs = time.perf_counter() - t0
        ppl = perplexity(gguf_logprobs(done.gguf, windows, threads=threads))
        plain = PlainLlama(done.gguf, threads, stop_ids(tok))
        plain.run(chat_ids(tok, prompts[0]), 8)  # warm-up
        tps = statistics.median(
            plain.run(chat_ids(tok, p), args.tokens)["decode_tps"] for p in prompts
        )
        rows[quant] = {"bytes": done.bytes, "ppl": ppl, "tps": tps, "export_s": secs}
        print(f"{quant}: {done.bytes / 2**20:.1f} MiB, ppl {ppl:.3f}, {tps:.1f} tok/s", flush=True)

    ref = rows["hf-fp32"]
    n_tok = len(windows) * (args.width - 1)
    print(
        f"\n{args.model}: WikiText-2 test, {len(windows)} windows x {args.width} tokens "
        f"({n_tok} scored), decode {args.tokens} tokens greedy, {threads} threads"
    )
    print(f"{'':8s} {'MiB':>8s} {'ppl':>9s} {'ppl/fp32':>9s} {'tok/s':>7s} {'x HF':>6s}")
    for name, r in rows.items():
        print(
            f"{name:8s} {r['bytes'] / 2**20:8.1f} {r['ppl']:9.3f} {r['ppl'] / ref['ppl']:9.4f} "
            f"{r['tps']:7.1f} {r['tps'] / ref['tps']:6.2f}"
        )
    pairs = [f"hf_fp32_ppl={ref['ppl']:.3f}", f"hf_fp32_tps={ref['tps']:.2f}"]
    for name, r in rows.items():
        if name != "hf-fp32":
            pairs += [
                f"{name}_mib={r['bytes'] / 2**20:.1f}",
                f"{name}_ppl_ratio={r['ppl'] / ref['ppl']:.4f}",
                f"{name}_speed_ratio={r['tps'] / ref['tps']:.2f}",
            ]
    print(" ".join(pairs) + f" threads={threads}")


if __name__ == "__main__":
    main()
