"""SFT on the tiny model: labels, grad accumulation, the real stage, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from zephyr.train.batching import collate_sft, micro_batches, plan_epoch
from zephyr.train.config import LoraSection, SFTConfig
from zephyr.train.encode import encode_sft

FIXTURES = Path(__file__).parent / "fixtures" / "train"
ROW = {
    "id": "x",
    "instruction": "What is 2 + 3?",
    "input": "",
    "output": "2 + 3 = 5\nAnswer: 5",
    "system": "Be brief.",
}


def quick(**kw) -> SFTConfig:
    base = dict(
        lr=1e-2,
        micro_batch=4,
        grad_accum=2,
        max_steps=6,
        warmup_steps=1,
        bf16=False,
        max_seq_len=128,
        merge=False,
        max_val=8,
    )
    return SFTConfig(**{**base, **kw})


def losses(out: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_labels_cover_assistant_tokens_and_eos_only(tiny_model):
    from zephyr.models import load_tokenizer

    tok = load_tokenizer(tiny_model)
    ex = encode_sft(tok, ROW, 512)
    trained = [t for t, lab in zip(ex.ids, ex.labels, strict=False) if lab]
    assert tok.decode(trained) == ROW["output"] + "<|im_end|>"
    assert trained[-1] == tok.eos_token_id == 2
    assert tok.pad_token_id == 0 != tok.eos_token_id
    # the prompt (system + user + assistant header) carries no label
    assert tok.decode([t for t, lab in zip(ex.ids, ex.labels, strict=False) if not lab]).endswith(
        "<|im_start|>assistant\n\n"
    )
    batch = collate_sft([ex, encode_sft(tok, {**ROW, "output": "5"}, 512)], tok.pad_token_id)
    assert (batch["input_ids"][1, batch["attention_mask"][1] == 0] == tok.pad_token_id).all()
    assert batch["tgt"].tolist().count(tok.eos_token_id) == 2  # EOS is a target in both rows
    assert batch["tgt"].numel() == sum(ex.labels[1:]) + 2  # "5" + EOS


def test_truncation_keeps_labels_aligned(tiny_model):
    from zephyr.models import load_tokenizer

    tok = load_tokenizer(tiny_model)
    full = encode_sft(tok, ROW, 512)
    cut = encode_sft(tok, ROW, len(full.ids) - 3)
    assert cut.ids == full.ids[:-3] and cut.labels == full.labels[:-3]


def test_length_grouped_plan_is_deterministic_and_covers_rows():
    lengths = [(i * 37) % 101 + 5 for i in range(64)]
    a, b = plan_epoch(lengths, 8, seed=1, epoch=0), plan_epoch(lengths, 8, seed=1, epoch=0)
    assert a == b and a != plan_epoch(lengths, 8, seed=1, epoch=1)
    assert sorted(i for s in a for i in s) == list(range(64))
    # grouping: padding within micro-batches is far below that of a random split
    waste = sum(
        max(lengths[i] for i in mb) * len(mb) - sum(lengths[i] for i in mb)
        for s in a
        for mb in micro_batches(s, lengths, 2, 1, 0)
    )
    rnd = [list(range(k, k + 2)) for k in range(0, 64, 2)]
    rnd_waste = sum(max(lengths[i] for i in mb) * 2 - sum(lengths[i] for i in mb) for mb in rnd)
    assert waste < rnd_waste / 2


def test_grad_accum_equals_full_batch(tiny_model):
    """4 micro-batches of 2 == one batch of 8: loss and gradients, normalised by label tokens."""
    from accelerate import Accelerator

    from zephyr.io import read_jsonl
    from zephyr.models import load_model
    from zephyr.train.logprobs import TokenLogps, add_lora
    from zephyr.train.loop import Task, backward_step
    from zephyr.train.sft import encode_all, sft_task

    model, tok = load_model(tiny_model)
    torch.manual_seed(0)
    lm = add_lora(model, LoraSection(dropout=0.0))
    with torch.no_grad():  # make B non-zero so every LoRA parameter gets a gradient
        for n, p in lm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    lm.train()
    examples, _ = encode_all(tok, read_jsonl(FIXTURES / "sft_train.jsonl")[:8], 128)
    acc = Accelerator(cpu=True)
    task: Task = sft_task(examples, [], tok.pad_token_id, 2, acc)
    net = TokenLogps(lm)
    rows = list(range(8))
    norm = task.norm(rows)
    params = [p for p in lm.parameters() if p.requires_grad]

    def run(mbs):
        for p in params:
            p.grad = None
        loss, _ = backward_step(net, acc, task, mbs, norm)
        return loss / norm, [p.grad.clone() for p in params]

    loss_1, grads_1 = run([rows])
    loss_4, grads_4 = run(micro_batches(rows, task.lengths, 2, 1, 0))
    assert len(micro_batches(rows, task.lengths, 2, 1, 0)) == 4
    assert abs(loss_1 - loss_4) < 1e-5
    for g1, g4 in zip(grads_1, grads_4, strict=False):
        torch.testing.assert_close(g1, g4, rtol=1e-4, atol=1e-7)
    # the naive mean of per-micro-batch means differs whenever label counts differ (what we avoid)
    counts = [
        sum(sum(examples[i].labels[1:]) for i in mb)
        for mb in micro_batches(rows, task.lengths, 2, 1, 0)
    ]
    assert len(set(counts)) > 1


def test_sft_stage_trains_and_writes_outputs(tiny_model, tmp_path):
    from rich.console import Console

    from zephyr.models import load_model
    from zephyr.pipeline import Recipe, StageContext
    from zephyr.train.stage import run_sft

    recipe = Recipe(model=str(tiny_model), seed=0)
    section = {
        "lr": 1e-2,
        "micro_batch": 4,
        "grad_accum": 1,
        "max_steps": 12,
        "eval_every": 6,
        "bf16": True,
        "max_seq_len": 128,
        "max_val": 8,
        "lora": {"r": 8, "alpha": 16},
    }
    ctx = StageContext(
        "sft", recipe, section, tmp_path / "sft", {"data": FIXTURES}, tmp_path, Console(quiet=True)
    )
    ctx.out_dir.mkdir()
    run_sft(ctx)
    out = ctx.out_dir
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert rows[0]["step"] == 0 and len(vals) == 3
    assert vals[-1] < vals[0] - 0.1, vals  # it learns
    for f in (
        "adapter/adapter_config.json",
        "model/config.json",
        "plots/loss.png",
        "plots/lr.png",
        "train.json",
    ):
        assert (out / f).exists(), f
    info = json.loads((out / "train.json").read_text())
    assert info["config"]["lr"] == 1e-2 and info["seed"] == 0 and info["inputs"]
    # bf16 (where the CPU has it) trains a bf16 base; the merged model is still fp32
    merged, _ = load_model(out / "model")  # what later stages load
    assert {p.dtype for p in merged.parameters()} == {torch.float32}
    lora_b = [
        v
        for k, v in torch.load(out / "checkpoints" / "step-0000012" / "adapter.pt").items()
        if "lora_B" in k
    ]
    assert lora_b and all(
        v.abs().sum() > 0 for v in lora_b
    )  # the adapter moved away from its zero init


def test_resume_reproduces_loss_curve(tiny_model, tmp_path):
    from zephyr.train.loop import Halt
    from zephyr.train.sft import train_sft

    cfg = quick(
        save_every=2, max_steps=6, lora=LoraSection(dropout=0.1)
    )  # dropout: RNG state must resume too
    train_sft(cfg, str(tiny_model), FIXTURES, tmp_path / "full", 0)
    with pytest.raises(Halt):
        train_sft(cfg, str(tiny_model), FIXTURES, tmp_path / "crash", 0, halt_after=3)
    assert [p.name for p in sorted((tmp_path / "crash" / "checkpoints").glob("step-*"))] == [
        "step-0000002"
    ]
    train_sft(cfg, str(tiny_model), FIXTURES, tmp_path / "crash", 0)  # picks up the checkpoint
    full, resumed = losses(tmp_path / "full"), losses(tmp_path / "crash")
    assert sorted(full) == sorted(resumed) == [1, 2, 3, 4, 5, 6]
    for step in full:
        assert abs(full[step] - resumed[step]) < 1e-6, (step, full[step], resumed[step])
    shutil.rmtree(tmp_path / "full")


def test_cli_wants_resume_or_force_over_existing_checkpoints(tmp_path):
    from typer.testing import CliRunner

    from zephyr.cli import app
    from zephyr.errors import ZephyrError

    (tmp_path / "out" / "checkpoints" / "step-0000002").mkdir(parents=True)
    args = ["train", "sft", "--data", str(FIXTURES), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, ZephyrError) and "--resume" in str(result.exception)
    result = CliRunner().invoke(app, [*args, "--set", "lr"])
    assert isinstance(result.exception, ZephyrError) and "key=value" in str(result.exception)


def test_too_few_rows_for_one_step_names_the_file(tiny_model, tmp_path):
    from zephyr.errors import ZephyrError
    from zephyr.train.config import PrefConfig
    from zephyr.train.pref import train_pref
    from zephyr.train.sft import train_sft

    with pytest.raises(
        ZephyrError, match=r"sft_train\.jsonl gives \d+ usable rows, fewer than one step \(4096"
    ):
        train_sft(
            quick(micro_batch=512, grad_accum=8), str(tiny_model), FIXTURES, tmp_path / "s", 0
        )
    cfg = PrefConfig(micro_batch=512, grad_accum=8, bf16=False, max_steps=1)
    with pytest.raises(
        ZephyrError, match=r"pref_train\.jsonl gives \d+ usable rows, fewer than one step"
    ):
        train_pref(cfg, str(tiny_model), FIXTURES, tmp_path / "p", 0)
