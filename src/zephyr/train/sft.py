"""Supervised fine-tuning with LoRA: chat template, assistant-only loss (EOS trained), one loop.

    zephyr train sft recipes/demo.yaml
    accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml -m zephyr.cli train sft ...

The loss of a step is the sum of target-token negative log-likelihoods over all its micro-batches
(and processes) divided by the step's total number of target tokens, so gradient accumulation and
data parallelism give the same loss and gradients as one big batch (not a mean of means).
"""

from __future__ import annotations

from pathlib import Path

import torch

from zephyr.errors import ZephyrError
from zephyr.train.batching import collate_sft
from zephyr.train.common import accelerator as make_accelerator
from zephyr.train.common import capped_rows, load_policy, to_device, train_precision
from zephyr.train.config import SFTConfig
from zephyr.train.encode import encode_sft
from zephyr.train.logprobs import TokenLogps
from zephyr.train.loop import Run, Task, fit_and_save


def encode_all(tok, rows: list[dict], max_len: int) -> tuple[list, int]:
    """Encoded examples with at least one target token, and how many were dropped."""
    out = [encode_sft(tok, r, max_len) for r in rows]
    kept = [e for e in out if sum(e.labels[1:]) > 0]
    return kept, len(out) - len(kept)


def sft_task(examples: list, val: list, pad_id: int, micro: int, accelerator) -> Task:
    device, world, rank = accelerator.device, accelerator.num_processes, accelerator.process_index

    def loss(net, mb: list[int]):
        batch = to_device(collate_sft([examples[i] for i in mb], pad_id), device)
        logps = net(
            batch["input_ids"],
            batch["attention_mask"],
            batch["position_ids"],
            batch["src"],
            batch["tgt"],
        )
        return -logps.sum(), {}

    def evaluate(net) -> dict:
        order = sorted(range(len(val)), key=lambda i: -len(val[i].ids))[rank::world]
        nll = torch.zeros(2, dtype=torch.float64)
        for k in range(0, len(order), 2 * micro):
            batch = to_device(
                collate_sft([val[i] for i in order[k : k + 2 * micro]], pad_id), device
            )
            logps = net(
                batch["input_ids"],
                batch["attention_mask"],
                batch["position_ids"],
                batch["src"],
                batch["tgt"],
            )
            nll += torch.tensor([-float(logps.sum()), logps.numel()], dtype=torch.float64)
        if world > 1:
            nll = accelerator.reduce(nll, "sum")
        return {"val_loss": float(nll[0] / nll[1].clamp(min=1))}

    return Task(
        lengths=[len(e.ids) for e in examples],
        norm=lambda rows: float(sum(sum(examples[i].labels[1:]) for i in rows)),
        loss=loss,
        evaluate=evaluate,
    )


def train_sft(
    cfg: SFTConfig,
    model: str,
    data_dir: Path,
    out_dir: Path,
    seed: int,
    console=None,
    halt_after: int | None = None,
    device: str = "auto",
) -> dict:
    """Train a LoRA adapter on data_dir/sft_train.jsonl; write adapter/, model/, metrics, plots."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    train_path, val_path = data_dir / "sft_train.jsonl", data_dir / "sft_val.jsonl"
    if not train_path.exists():
        raise ZephyrError(
            f"{train_path} not found; run the data stage first or pass --data DIR with sft_train.jsonl"
        )
    precision = train_precision(cfg, device)
    acc = make_accelerator(precision, cfg, out_dir)
    lm, tok = load_policy(model, cfg, seed, precision, acc)
    examples, dropped = encode_all(
        tok, capped_rows(train_path, cfg.max_train, seed), cfg.max_seq_len
    )
    val_rows = capped_rows(val_path, cfg.max_val, seed) if val_path.exists() else []
    val, _ = encode_all(tok, val_rows, cfg.max_seq_len)
    if acc.is_main_process and console:
        console.print(
            f"sft: {len(examples)} train rows ({dropped} dropped: no target token after truncation), "
            f"{len(val)} val rows, {acc.num_processes} process(es), "
            f"{precision.label}"
        )
    task = sft_task(examples, val, tok.pad_token_id, cfg.micro_batch, acc)
    run = Run(
        cfg=cfg,
        task=task,
        lm=lm,
        tok=tok,
        accelerator=acc,
        precision=precision,
        out_dir=out_dir,
        seed=seed,
        inputs=[train_path, val_path],
        console=console,
        halt_after=halt_after,
        extra={
            "kind": "sft",
            "base": model,
            "rows": {"train": len(examples), "val": len(val), "dropped": dropped},
        },
    )
    return fit_and_save(run)


__all__ = ["train_sft", "TokenLogps"]
