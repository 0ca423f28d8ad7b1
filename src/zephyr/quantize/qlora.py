"""QLoRA (Dettmers et al. 2023): LoRA trained on a frozen 4-bit NF4 base (bitsandbytes + peft).

The output is a PEFT adapter dir whose base is the *unquantized* model: `load_model` merges it
into fp weights, and any method here can then quantize the merged model (never merge into a
quantized base). On this CPU it runs but buys nothing at 135M parameters (measured in the notes:
4.0 s/step against 3.8 on the fp32 base, and more memory); it is here for larger bases.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress

from zephyr import provenance
from zephyr.errors import ZephyrError
from zephyr.io import append_jsonl, atomic_dir, write_json

TARGETS = (
    "all-linear"  # PEFT: every linear of the decoder blocks (4-bit ones included), never the head
)


@dataclass
class QLoRAConfig:
    steps: int = 20
    rank: int = 16
    alpha: int = 32
    lr: float = 2e-4
    batch_size: int = 4
    seqlen: int = 256
    calib: str | None = None  # training text: JSONL rows or plain text (default: gsm8k train)
    seed: int = 0

    # calibration_ids reads these names
    @property
    def calib_samples(self) -> int:
        return self.steps * self.batch_size

    @property
    def calib_seqlen(self) -> int:
        return self.seqlen


def nf4_base(path: str):
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ZephyrError(
            "qlora needs bitsandbytes; run `pip install 'zephyr-tutor[qlora]' 'torch==2.13.0'`"
        ) from None
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    bnb = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    return AutoModelForCausalLM.from_pretrained(path, quantization_config=bnb, dtype=torch.float32)


def train(
    spec: str,
    out: str | Path,
    cfg: QLoRAConfig,
    data_root: Path | None = None,
    console: Console | None = None,
) -> Path:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from zephyr.models import load_tokenizer, resolve
    from zephyr.quantize.calib import calibration_ids
    from zephyr.quantize.methods import source_hash

    console = console or Console(stderr=True)
    src = Path(resolve(spec))
    if not (src / "config.json").exists():
        raise ZephyrError(
            f"qlora needs a full model directory, not {spec}; merge the adapter first (`zephyr quantize` takes merged models)"
        )
    torch.manual_seed(cfg.seed)
    tok = load_tokenizer(str(src))
    model = prepare_model_for_kbit_training(nf4_base(str(src)), use_gradient_checkpointing=False)
    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        target_modules=TARGETS,
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    ids = calibration_ids(tok, cfg, data_root)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    out = Path(out)
    losses = []
    t0 = time.time()
    with atomic_dir(out) as tmp:
        model.train()
        with Progress(console=console) as bar:
            task = bar.add_task("qlora", total=cfg.steps)
            for step in range(cfg.steps):
                batch = ids[(step * cfg.batch_size) % len(ids) :][: cfg.batch_size]
                loss = model(input_ids=batch, labels=batch).loss
                loss.backward()
                opt.step()
                opt.zero_grad()
                losses.append(loss.item())
                append_jsonl(
                    tmp / "metrics.jsonl", {"step": step + 1, "loss": losses[-1], "lr": cfg.lr}
                )
                bar.advance(task)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(
            tmp / "qlora.json",
            {
                "base": str(src),
                "base_sha256": source_hash(src),
                "quant": "bitsandbytes nf4 (frozen base)",
                "losses": losses,
                "seconds": round(time.time() - t0, 2),
                "provenance": provenance.record(dataclasses.asdict(cfg)),
            },
        )
    console.print(
        f"qlora: {cfg.steps} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}, adapter -> {out}"
    )
    return out
