"""Parity with TRL: the same tiny model, LoRA init and rows through Zephyr's loop and through TRL's
SFTTrainer / DPOTrainer give the same first-step loss and LoRA gradients and the same losses for
5 optimizer steps (AdamW, cosine schedule, clipping at 1.0, every row in every step).

Both sides train on the same token ids (Zephyr's encoding: assistant tokens + EOS are targets; TRL
would also train the newline after EOS), so what is compared is the loss, the normalisation, the
reference model (adapter disabled), the clipping, the optimizer and the schedule.

Tolerances: both run fp32 on CPU but sum in different orders (TRL: padded batches, logits for every
position, cross-entropy; Zephyr: target positions only, a chunked LM head, prefix-shared DPO rows),
so results agree to float32 rounding, not bit for bit. Measured on 2026-12-02 (this test, Xeon
CPU): losses within 6e-6 relative over the 5 steps, first-step gradients within 9e-8 absolute
(1.2e-3 relative on the smallest entries). Bounds: 1e-4 relative on losses, rtol 1e-3 + atol 1e-6
on gradients, ~10x the rounding. A real difference (a mean of means, a missing EOS target, an
unclipped step, a wrong reference) moves the losses in the 2nd-3rd digit, far outside them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")

FIXTURES = Path(__file__).parent / "fixtures" / "train"
ROWS, STEPS, LR, SEED = 8, 5, 5e-3, 0
REL = 1e-4


class Grads:
    """Every optimizer step's gradients (post-clipping, in parameter-group order)."""

    def __enter__(self):
        self.steps: list[list[torch.Tensor]] = []

        def hook(opt, args, kwargs):
            self.steps.append([p.grad.clone() for g in opt.param_groups for p in g["params"]])

        from torch.optim.optimizer import register_optimizer_step_pre_hook

        self.handle = register_optimizer_step_pre_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def small_data(tmp_path: Path, name: str) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    lines = (FIXTURES / name).read_text().splitlines()[:ROWS]
    (data / name).write_text("\n".join(lines) + "\n")
    return data


def policy(tiny_model: Path, lora):
    """Zephyr's policy exactly as load_policy builds it (same seed, same LoRA init)."""
    from zephyr.models import load_model
    from zephyr.train.logprobs import add_lora

    model, tok = load_model(tiny_model)
    torch.manual_seed(SEED)
    lm = add_lora(model, lora)
    lm.train()
    return lm, tok


def trl_common(tmp_path: Path) -> dict:
    return dict(
        output_dir=str(tmp_path / "trl"),
        max_steps=STEPS,
        per_device_train_batch_size=ROWS,
        learning_rate=LR,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        seed=SEED,
        dataloader_num_workers=0,
        gradient_checkpointing=False,
    )


def zephyr_losses(out: Path) -> list[float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def trl_losses(trainer) -> list[float]:
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def assert_parity(ours: list[float], theirs: list[float], g_ours, g_theirs) -> None:
    assert len(ours) == len(theirs) == STEPS
    for a, b in zip(ours, theirs, strict=True):
        assert abs(a - b) <= REL * abs(b), (ours, theirs)
    assert ours[-1] < ours[0] - 1e-3  # it trained: the comparison is not of a flat line
    first_ours, first_theirs = g_ours.steps[0], g_theirs.steps[0]
    assert [g.shape for g in first_ours] == [g.shape for g in first_theirs]
    assert sum(float(g.abs().sum()) for g in first_ours) > 0
    for a, b in zip(first_ours, first_theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)


def test_sft_matches_trl_sfttrainer(tiny_model, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig as TRLConfig
    from trl import SFTTrainer

    from zephyr.io import read_jsonl
    from zephyr.train.config import LoraSection, SFTConfig
    from zephyr.train.sft import encode_all, train_sft

    lora = LoraSection(dropout=0.0)
    data = small_data(tmp_path, "sft_train.jsonl")
    cfg = SFTConfig(
        lora=lora,
        lr=LR,
        micro_batch=ROWS,
        max_steps=STEPS,
        bf16=False,
        max_seq_len=128,
        merge=False,
    )
    with Grads() as ours:
        train_sft(cfg, str(tiny_model), data, tmp_path / "z", SEED, device="cpu")

    lm, tok = policy(tiny_model, lora)
    examples, dropped = encode_all(tok, read_jsonl(data / "sft_train.jsonl"), 128)
    assert dropped == 0
    ds = Dataset.from_list(
        [{"input_ids": e.ids, "completion_mask": [int(x) for x in e.labels]} for e in examples]
    )
    trainer = SFTTrainer(
        model=lm,
        args=TRLConfig(**trl_common(tmp_path), completion_only_loss=True, max_length=None),
        train_dataset=ds,
        processing_class=tok,
    )
    with Grads() as theirs:
        trainer.train()
    assert_parity(zephyr_losses(tmp_path / "z"), trl_losses(trainer), ours, theirs)


def test_dpo_matches_trl_dpotrainer(tiny_model, tmp_path, monkeypatch):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from zephyr.io import read_jsonl
    from zephyr.train.config import LoraSection, PrefConfig
    from zephyr.train.pref import encode_pairs, train_pref

    monkeypatch.setenv("ZEPHYR_HOME", str(tmp_path / "home"))
    lora = LoraSection(dropout=0.0)
    data = small_data(tmp_path, "pref_train.jsonl")
    cfg = PrefConfig(
        lora=lora,
        lr=LR,
        beta=0.5,
        micro_batch=ROWS,
        max_steps=STEPS,
        bf16=False,
        max_seq_len=256,
        max_prompt_len=256,
        merge=False,
    )
    with Grads() as ours:
        train_pref(cfg, str(tiny_model), data, tmp_path / "z", SEED, device="cpu")

    lm, tok = policy(tiny_model, lora)
    pairs, dropped = encode_pairs(tok, read_jsonl(data / "pref_train.jsonl"), cfg)
    assert dropped == 0
    ds = Dataset.from_list(
        [
            {"prompt_ids": p.prompt, "chosen_ids": p.chosen, "rejected_ids": p.rejected}
            for p in pairs
        ]
    )

    class Tokenized(DPOTrainer):
        """The same token ids as Zephyr (TRL would tokenize prompt/chosen/rejected itself)."""

        def _prepare_dataset(self, dataset, *args, **kwargs):
            return dataset

    trainer = Tokenized(
        model=lm,  # a PeftModel: TRL's reference is the model with the adapter disabled, as ours
        args=DPOConfig(**trl_common(tmp_path), beta=0.5, loss_type=["sigmoid"], max_length=None),
        train_dataset=ds,
        processing_class=tok,
    )
    with Grads() as theirs:
        trainer.train()
    theirs_losses = trl_losses(trainer)
    assert abs(theirs_losses[0] - 0.6931471805599453) < 1e-6  # log 2 at step 0 on both sides
    assert_parity(zephyr_losses(tmp_path / "z"), theirs_losses, ours, theirs)
