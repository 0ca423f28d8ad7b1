"""Zephyr vs TRL on SmolLM2-135M, side by side in one run: SFT tokens/s, DPO pairs/s, peak RSS,
first-batch DPO loss, and SFT MFU against this machine's own GEMM peak in the dtype training used.

    python bench/bench_train.py                 # a few steps each after one warm-up step
    python bench/bench_train.py --steps 6 --batch 8 --seq 256
    python bench/bench_train.py --no-trl        # Zephyr SFT, GEMM peak and MFU only
    python bench/bench_train.py --fp32          # fp32 even on bf16 hardware (the AVX2 path)

Same data for both (GSM8K train for SFT, HH-RLHF helpful-base for DPO, real mixed-length rows from
../shared/data), same LoRA config (r 8, alpha 16, dropout 0.05, all linear projections), same
max length, batch and learning rate, bf16 autocast for both only where the CPU has bf16 hardware
(AMX / AVX512-BF16; fp32 elsewhere, as Zephyr decides); TRL otherwise at its defaults. Each trainer
runs in its own subprocess so peak RSS is its own. The peak is the best F.linear GFLOP/s over the
model's own GEMM shapes (q/o, k/v, gate/up, down, a head chunk) at one micro-batch of tokens, with
the threads torch uses here; MFU counts the useful FLOPs of LoRA SFT (no padding, frozen weights
without weight gradients: `sft_flops`). Last line:
`sft_speedup=X dpo_speedup=Y sft_mfu=Z sft_tok_s=T mfu=Z peak_gflops=P dtype=D`.
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


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def model_shapes(config) -> dict:
    """Dimensions of the model's GEMMs (a Llama-style decoder)."""
    d, heads = config.hidden_size, config.num_attention_heads
    hd = getattr(config, "head_dim", None) or d // heads
    kv = config.num_key_value_heads * hd
    return {"d": d, "att": heads * hd, "kv": kv, "i": config.intermediate_size,
            "layers": config.num_hidden_layers, "vocab": config.vocab_size}  # fmt: skip


def gemm_peak(dtype: str, m: int, dims: dict) -> dict[str, float]:
    """GFLOP/s of F.linear at the model's own GEMM shapes, `m` rows (one micro-batch's tokens)."""
    import torch
    import torch.nn.functional as F

    d, i = dims["d"], dims["i"]
    shapes = {
        f"{m}x{d}->{dims['att']} (q,o)": (m, d, dims["att"]),
        f"{m}x{d}->{dims['kv']} (k,v)": (m, d, dims["kv"]),
        f"{m}x{d}->{i} (gate,up)": (m, d, i),
        f"{m}x{i}->{d} (down)": (m, i, d),
        f"512x{d}->{dims['vocab']} (head chunk)": (512, d, dims["vocab"]),
    }
    out = {}
    for name, (rows, k, n) in shapes.items():
        x = torch.randn(rows, k, dtype=getattr(torch, dtype))
        w = torch.randn(n, k, dtype=getattr(torch, dtype))
        reps = max(1, int(2e9 // (2 * rows * k * n)))  # about 2 GFLOP per timing
        for _ in range(2):
            F.linear(x, w)
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(reps):
                F.linear(x, w)
            best = min(best, (time.perf_counter() - t) / reps)
        out[name] = 2 * rows * k * n / best / 1e9
    return out


def sft_flops(dims: dict, rows: list[tuple[int, int]], r: int) -> float:
    """Useful FLOPs of one LoRA SFT pass over `rows` (tokens, target tokens), padding excluded.

    Frozen weights need no weight gradient: forward 2P + input gradient 2P per token on every
    projection; LoRA factors 6 r (in + out) (forward, input and weight gradients); causal attention
    3 x 4 x context x width per layer (backward twice the forward); the 49k-vocabulary head only on
    target tokens, forward + the gradient matmul (Zephyr's TokenLogps): 4 d V each.
    """
    d, att, kv, i, L = dims["d"], dims["att"], dims["kv"], dims["i"], dims["layers"]
    proj = [(d, att), (d, kv), (d, kv), (att, d), (d, i), (d, i), (i, d)]
    per_token = L * sum(4 * a * b + 6 * r * (a + b) for a, b in proj)
    total = 0.0
    for n, targets in rows:
        total += n * per_token + L * 12 * att * n * (n + 1) / 2 + targets * 4 * d * dims["vocab"]
    return total


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
        bf16=not args.fp32,  # resolved per CPU: bf16 autocast only with bf16 hardware
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
    from zephyr.train.logprobs import bf16_supported

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
        bf16=bf16_supported() and not args.fp32,  # what Zephyr's `bf16: true` resolves to here
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
    ] + (["--fp32"] if args.fp32 else [])
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
    ap.add_argument("--no-trl", action="store_true", help="Zephyr SFT, peak and MFU only")
    ap.add_argument(
        "--fp32", action="store_true", help="fp32 even on bf16 hardware (what AVX2 CPUs run)"
    )
    ap.add_argument("--part", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        framework, kind = args.part.split("-")
        print(json.dumps((zephyr if framework == "zephyr" else trl)(kind, args)))
        return

    from transformers import AutoConfig

    from zephyr.models import load_tokenizer, resolve
    from zephyr.train.encode import encode_sft
    from zephyr.train.logprobs import bf16_supported

    bf16 = bf16_supported() and not args.fp32
    dtype = "bfloat16" if bf16 else "float32"
    dims = model_shapes(AutoConfig.from_pretrained(resolve("smollm2-135m")))
    tok = load_tokenizer("smollm2-135m")
    enc = [encode_sft(tok, r, args.seq) for r in sft_rows(args.rows)]
    rows = [(len(e.ids), sum(e.labels[1:])) for e in enc]
    m = args.batch * sum(n for n, _ in rows) // len(rows)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} CPUs, torch threads {torch_threads()}")
    peaks = {}
    for dt in ("float32", "bfloat16") if bf16_supported() else ("float32",):
        table = gemm_peak(dt, m, dims)
        peaks[dt] = max(table.values())
        print(f"{dt} GEMM GFLOP/s at the model's shapes: " + ", ".join(
            f"{k} {v:.0f}" for k, v in table.items()))  # fmt: skip
    print(
        f"bf16 autocast: {'yes (AMX/AVX512-BF16)' if bf16 else 'no: fp32'} for both; "
        f"batch {args.batch}, max length {args.seq}, {args.steps} timed steps after 1 warm-up"
    )
    parts = ["zephyr-sft"] + ([] if args.no_trl else ["trl-sft", "zephyr-dpo", "trl-dpo"])
    parts += ["zephyr-dpo2rows"] if args.ablate and not args.no_trl else []
    res = {}
    for p in parts:  # printed as each finishes
        r = res[p] = run_part(p, args)
        print(
            f"{p:11s} tokens/s {r['tokens_per_s']:8.1f}  rows/s {r['rows_per_s']:6.2f}  "
            f"first loss {r['first_loss']:.6f}  peak RSS {r['peak_rss_mb']:7.0f} MB  wall {r['wall_s']:.0f}s",
            flush=True,
        )
    flops_per_token = sft_flops(dims, rows, LORA["r"]) / sum(n for n, _ in rows)
    sft_tok_s = res["zephyr-sft"]["tokens_per_s"]
    mfu = flops_per_token * sft_tok_s / (peaks[dtype] * 1e9)
    print(
        f"SFT MFU {mfu:.3f}: {flops_per_token / 1e6:.0f} MFLOP per token (padding excluded) x "
        f"{sft_tok_s:.1f} tokens/s against the {dtype} GEMM peak {peaks[dtype]:.0f} GFLOP/s"
    )
    last = f"sft_tok_s={sft_tok_s:.1f} mfu={mfu:.3f} peak_gflops={peaks[dtype]:.0f} dtype={dtype}"
    if args.no_trl:
        print(last)
        return
    sft_speed = sft_tok_s / res["trl-sft"]["tokens_per_s"]
    dpo_speed = res["zephyr-dpo"]["rows_per_s"] / res["trl-dpo"]["rows_per_s"]
    loss_gap = abs(res["zephyr-dpo"]["first_loss"] - res["trl-dpo"]["first_loss"])
    rss = res["zephyr-dpo"]["peak_rss_mb"] <= res["trl-dpo"]["peak_rss_mb"]
    print(
        f"SFT tokens/s ratio {sft_speed:.2f}x (target >= 1.3); DPO pairs/s ratio {dpo_speed:.2f}x (target >= 1.5); "
        f"DPO peak RSS {'<=' if rss else '>'} TRL's; first-batch DPO loss gap {loss_gap:.2e} (target <= 1e-4)"
    )
    if "zephyr-dpo2rows" in res:
        share = res["zephyr-dpo"]["rows_per_s"] / res["zephyr-dpo2rows"]["rows_per_s"]
        print(f"prefix sharing: {share:.2f}x pairs/s vs chosen and rejected on separate rows")
    print(f"sft_speedup={sft_speed:.2f} dpo_speedup={dpo_speed:.2f} sft_mfu={mfu:.3f} {last}")


if __name__ == "__main__":
    main()
