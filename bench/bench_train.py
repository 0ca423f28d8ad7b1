"""Zephyr vs TRL on SmolLM2-135M, side by side in one run: SFT tokens/s, DPO pairs/s, peak RSS,
first-batch DPO loss, and MFU against this machine's measured bf16 matmul peak.

    python bench/bench_train.py                 # a few steps each after one warm-up step
    python bench/bench_train.py --steps 6 --batch 8 --seq 256

Same data for both (GSM8K train for SFT, HH-RLHF helpful-base for DPO, real mixed-length rows from
../shared/data), same LoRA config (r 8, alpha 16, dropout 0.05, all linear projections), same
max length, batch and learning rate; TRL otherwise at its defaults. Each trainer runs in its own
subprocess so peak RSS is its own. Last line: `sft_speedup=X dpo_speedup=Y sft_mfu=Z`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ZEPHYR_SHARED_DATA", REPO.parent / "shared" / "data"))
LORA = dict(r=8, alpha=16, dropout=0.05)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def sft_rows(n: int) -> list[dict]:
    rows = [json.loads(x) for x in (DATA / "gsm8k" / "train.jsonl").read_text().splitlines()[:n]]
    return [
        {"id": str(i), "instruction": r["question"], "input": "", "output": r["answer"]}
        for i, r in enumerate(rows)
    ]


def pref_rows(n: int) -> list[dict]:
    """HH-RLHF dialogues split at the last assistant turn into prompt / chosen / rejected."""
    out = []
    with gzip.open(DATA / "hh-rlhf" / "helpful-base" / "test.jsonl.gz", "rt") as f:
        for line in f:
            r = json.loads(line)
            cut = r["chosen"].rfind("\n\nAssistant:")
            prompt = r["chosen"][:cut].strip()
            if not r["rejected"].startswith(r["chosen"][:cut]):
                continue
            chosen = r["chosen"][cut + 12 :].strip()
            rejected = r["rejected"][cut + 12 :].strip()
            if chosen and rejected and chosen != rejected:
                out.append(
                    {"id": str(len(out)), "prompt": prompt, "chosen": chosen, "rejected": rejected}
                )
            if len(out) == n:
                break
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_peak() -> float:
    """bf16 FLOP/s of a large square matmul on this machine (the MFU denominator)."""
    import torch

    a = torch.randn(2048, 2048, dtype=torch.bfloat16)
    b = torch.randn(2048, 2048, dtype=torch.bfloat16)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        best = min(best, (time.perf_counter() - t) / 4)
    return 2 * 2048**3 / best


# ---------------------------------------------------------------- zephyr
def zephyr(kind: str, args) -> dict:
    from zephyr.train.config import LoraSection, PrefConfig, SFTConfig

    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    os.environ["ZEPHYR_HOME"] = str(tmp / "home")  # cold reference cache: its cost is timed too
    common = dict(
        lora=LoraSection(**LORA),
        lr=args.lr,
        micro_batch=args.batch,
        grad_accum=1,
        max_steps=args.steps + 1,
        max_seq_len=args.seq,
        bf16=True,
        merge=False,
        max_val=1,
        schedule="constant",
    )
    data = tmp / "data"
    data.mkdir()
    t0 = time.perf_counter()
    if kind == "sft":
        from zephyr.train.sft import train_sft

        (data / "sft_train.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in sft_rows(args.rows))
        )
        train_sft(SFTConfig(**common), "smollm2-135m", data, tmp / "out", 0)
    else:
        from zephyr.train.pref import train_pref

        (data / "pref_train.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in pref_rows(args.rows))
        )
        train_pref(
            PrefConfig(
                **common, beta=0.1, max_prompt_len=args.seq // 2, prefix_sharing=kind == "dpo"
            ),
            "smollm2-135m",
            data,
            tmp / "out",
            0,
        )
    total = time.perf_counter() - t0
    rows = [json.loads(x) for x in (tmp / "out" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["step"] >= 2 and "tok_s" in r]  # step 1 is the warm-up
    secs = sum(r["tokens"] / r["tok_s"] for r in steps)
    return {
        "tokens_per_s": sum(r["tokens"] for r in steps) / secs,
        "rows_per_s": len(steps) * args.batch / secs,
        "first_loss": rows[1]["loss"],
        "peak_rss_mb": peak_rss_mb(),
        "wall_s": total,
    }


# ---------------------------------------------------------------- trl
def trl(kind: str, args) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback

    from zephyr.models import load_model

    model, tok = load_model("smollm2-135m")
    model.train()
    peft = LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules=TARGETS,
        task_type="CAUSAL_LM",
    )
    tokens = [0]

    def count(_module, _args, kwargs):
        if torch.is_grad_enabled() and kwargs.get("attention_mask") is not None:
            tokens[0] += int(kwargs["attention_mask"].sum())

    model.register_forward_pre_hook(count, with_kwargs=True)

    class Clock(TrainerCallback):
        def __init__(self):
            self.times, self.toks, self.losses = [], [], []

        def on_step_begin(self, *a, **k):
            self.t, self.k = time.perf_counter(), tokens[0]

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self.t)
            self.toks.append(tokens[0] - self.k)

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "loss" in logs:
                self.losses.append(logs["loss"])

    clock = Clock()
    out = tempfile.mkdtemp(prefix=f"bench-trl-{kind}-")
    common = dict(
        output_dir=out,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        max_steps=args.steps + 1,
        learning_rate=args.lr,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        bf16=True,
        use_cpu=True,
        lr_scheduler_type="constant",
        seed=0,
        dataloader_num_workers=0,
    )
    t0 = time.perf_counter()
    if kind == "sft":
        from trl import SFTConfig, SFTTrainer

        rows = sft_rows(args.rows)
        ds = Dataset.from_list(
            [
                {
                    "prompt": [{"role": "user", "content": r["instruction"]}],
                    "completion": [{"role": "assistant", "content": r["output"]}],
                }
                for r in rows
            ]
        )
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**common, max_length=args.seq),
            train_dataset=ds,
            processing_class=tok,
            peft_config=peft,
            callbacks=[clock],
        )
    else:
        from trl import DPOConfig, DPOTrainer

        rows = pref_rows(args.rows)
        ds = Dataset.from_list(
            [
                {
                    "prompt": [{"role": "user", "content": r["prompt"]}],
                    "chosen": [{"role": "assistant", "content": r["chosen"]}],
                    "rejected": [{"role": "assistant", "content": r["rejected"]}],
                }
                for r in rows
            ]
        )
        trainer = DPOTrainer(
            model=model,
            args=DPOConfig(**common, beta=0.1, max_length=args.seq),
            train_dataset=ds,
            processing_class=tok,
            peft_config=peft,
            callbacks=[clock],
        )
    trainer.train()
    total = time.perf_counter() - t0
    secs = sum(clock.times[1:])
    return {
        "tokens_per_s": sum(clock.toks[1:]) / secs,
        "rows_per_s": (len(clock.times) - 1) * args.batch / secs,
        "first_loss": clock.losses[0],
        "peak_rss_mb": peak_rss_mb(),
        "wall_s": total,
    }


def run_part(part: str, args) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--part",
        part,
        "--steps",
        str(args.steps),
        "--batch",
        str(args.batch),
        "--seq",
        str(args.seq),
        "--rows",
        str(args.rows),
        "--lr",
        str(args.lr),
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    if done.returncode != 0:
        sys.exit(f"{part} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=4, help="timed steps (after one warm-up step)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument(
        "--ablate", action="store_true", help="also DPO without prefix sharing (2B rows)"
    )
    ap.add_argument("--part", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        framework, kind = args.part.split("-")
        print(json.dumps((zephyr if framework == "zephyr" else trl)(kind, args)))
        return

    from zephyr.train.policy import bf16_supported

    peak = matmul_peak()
    print(
        f"bf16 autocast: {'yes (AMX/AVX512-BF16)' if bf16_supported() else 'no CPU support; fp32'} for both; "
        f"measured bf16 matmul peak {peak / 1e12:.2f} TFLOP/s; batch {args.batch}, max length {args.seq}, "
        f"{args.steps} timed steps after 1 warm-up"
    )
    parts = ["zephyr-sft", "trl-sft", "zephyr-dpo", "trl-dpo"] + (
        ["zephyr-dpo2rows"] if args.ablate else []
    )
    res = {}
    for p in parts:  # printed as each finishes
        r = res[p] = run_part(p, args)
        print(
            f"{p:11s} tokens/s {r['tokens_per_s']:8.1f}  rows/s {r['rows_per_s']:6.2f}  "
            f"first loss {r['first_loss']:.6f}  peak RSS {r['peak_rss_mb']:7.0f} MB  wall {r['wall_s']:.0f}s",
            flush=True,
        )
    # MFU: LoRA training ~ 6 * N_params FLOPs/token counted on the trainable path is misleading (frozen
    # weights need no weight-gradient), so count forward 2N + input-gradient 2N = 4N per token.
    n_params = 134.5e6
    sft_speed = res["zephyr-sft"]["tokens_per_s"] / res["trl-sft"]["tokens_per_s"]
    dpo_speed = res["zephyr-dpo"]["rows_per_s"] / res["trl-dpo"]["rows_per_s"]
    mfu = 4 * n_params * res["zephyr-sft"]["tokens_per_s"] / peak
    loss_gap = abs(res["zephyr-dpo"]["first_loss"] - res["trl-dpo"]["first_loss"])
    rss = res["zephyr-dpo"]["peak_rss_mb"] <= res["trl-dpo"]["peak_rss_mb"]
    print(
        f"SFT tokens/s ratio {sft_speed:.2f}x (target >= 1.3); DPO pairs/s ratio {dpo_speed:.2f}x (target >= 1.5); "
        f"DPO peak RSS {'<=' if rss else '>'} TRL's; first-batch DPO loss gap {loss_gap:.2e} (target <= 1e-4)"
    )
    if "zephyr-dpo2rows" in res:
        share = res["zephyr-dpo"]["rows_per_s"] / res["zephyr-dpo2rows"]["rows_per_s"]
        print(f"prefix sharing: {share:.2f}x pairs/s vs chosen and rejected on separate rows")
    print(f"sft_speedup={sft_speed:.2f} dpo_speedup={dpo_speed:.2f} sft_mfu={mfu:.3f}")


if __name__ == "__main__":
    main()
