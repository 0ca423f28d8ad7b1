"""Exact match of greedy generations on the synthetic held-out set, before and after training.

    python bench/quality_train.py --data runs/demo/data-XXXX --models smollm2-135m runs/demo/sft-XXXX/model
Prints one line per model and, last, `key=value` pairs (em_<i>=...). The eval stage has the full
protocol (zephyr eval); this is the train stage's quick check of the demo's effect.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from zephyr.data.schema import answers_match, sft_messages
from zephyr.io import read_jsonl
from zephyr.models import load_model


def exact_match(spec: str, rows: list[dict], max_new_tokens: int, batch: int) -> float:
    model, tok = load_model(spec)
    tok.padding_side = "left"
    prompts = [
        tok.apply_chat_template(sft_messages(r)[:-1], tokenize=False, add_generation_prompt=True)
        for r in rows
    ]
    hits = 0
    order = sorted(range(len(rows)), key=lambda i: len(prompts[i]))
    for k in range(0, len(order), batch):
        idx = order[k : k + batch]
        enc = tok(
            [prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False
        )
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
        for j, i in enumerate(idx):
            text = tok.decode(out[j, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            hits += answers_match(text, rows[i]["answer_text"])
    return hits / len(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="data stage output dir (synth_test.jsonl)")
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--batch", type=int, default=20)
    args = ap.parse_args()
    rows = read_jsonl(Path(args.data) / "synth_test.jsonl")
    rows = rows[:: max(1, len(rows) // args.n)][
        : args.n
    ]  # every k-th row: all families represented
    scores = []
    for spec in args.models:
        t0 = time.time()
        em = exact_match(spec, rows, args.max_new_tokens, args.batch)
        scores.append(em)
        print(
            f"{spec}: exact match {em:.3f} on {len(rows)} items (greedy, {args.max_new_tokens} new tokens, {time.time() - t0:.0f}s)"
        )
    print(" ".join(f"em_{i}={s:.3f}" for i, s in enumerate(scores)))


if __name__ == "__main__":
    main()
