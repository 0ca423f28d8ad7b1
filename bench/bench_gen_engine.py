"""Generation tasks on the HF path vs `--engine llamacpp`: same items, same metrics, wall time.

    .venv/bin/python bench/bench_gen_engine.py --model smollm2-135m --task gsm8k --limit 200

Runs `zephyr.eval.run.evaluate` twice on the same seeded items (HF transformers `generate`,
batch 8, fp32; then llama.cpp on the model's f16 GGUF, 8 sequences per batch) and prints each
metric with its 95% bootstrap interval, the share of identical greedy outputs, and the wall
times. Last line: key=value pairs, the speed ratio first.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="gsm8k")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    ap.add_argument("--max-new-tokens", type=int, default=256)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from zephyr.eval.bootstrap import task_cis
    from zephyr.eval.run import evaluate
    from zephyr.export.gguf import gguf_for
    from zephyr.io import read_jsonl

    gguf_for(args.model, "f16")  # export once, outside the timed run
    tmp = Path(tempfile.mkdtemp(prefix="bench-gen-"))
    res, secs, outs = {}, {}, {}
    for engine in ("hf", "llamacpp"):
        t0 = time.perf_counter()
        res[engine] = evaluate(
            args.model, [args.task], data_dir=args.data_dir, limit=args.limit,
            log_dir=tmp / engine, engine=engine,
            options={args.task: {"max_new_tokens": args.max_new_tokens}},
        )["tasks"][args.task]  # fmt: skip
        secs[engine] = time.perf_counter() - t0
        outs[engine] = [r["output"] for r in read_jsonl(tmp / engine / f"{args.task}.jsonl")]
        print(f"{engine}: {secs[engine]:.0f} s", flush=True)
    same = sum(a == b for a, b in zip(outs["hf"], outs["llamacpp"], strict=True))
    print(f"\n{args.model} {args.task}, {res['hf']['n']} items, {args.max_new_tokens} new tokens")
    print(f"{'metric':12s} {'hf [95% CI]':>26s} {'llamacpp [95% CI]':>26s}")
    cis = {e: task_cis(res[e]) for e in res}
    for m in res["hf"]["metrics"]:
        cells = []
        for e in ("hf", "llamacpp"):
            lo, hi = cis[e].get(m, (float("nan"), float("nan")))
            cells.append(f"{res[e]['metrics'][m]:.4g} [{lo:.3g}, {hi:.3g}]")
        print(f"{m:12s} {cells[0]:>26s} {cells[1]:>26s}")
    share = same / len(outs["hf"])
    print(f"identical greedy outputs: {same}/{len(outs['hf'])} ({share:.0%})")
    print(f"wall: hf {secs['hf']:.0f} s, llamacpp {secs['llamacpp']:.0f} s")
    pairs = [f"speed_ratio={secs['hf'] / secs['llamacpp']:.2f}", f"identical_share={share:.3f}"]
    for m in res["hf"]["metrics"]:
        pairs += [f"{m}_hf={res['hf']['metrics'][m]:.4f}"]
        pairs += [f"{m}_llamacpp={res['llamacpp']['metrics'][m]:.4f}"]
    print(" ".join(pairs))


if __name__ == "__main__":
    main()
