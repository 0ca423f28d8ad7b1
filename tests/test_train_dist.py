"""Two CPU processes (accelerate, gloo) == one process on the same global batch, for SFT and DPO."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "train"
COMMON = [
    "lr=1e-2",
    "max_steps=3",
    "bf16=false",
    "lora.dropout=0.0",
    "merge=false",
    "max_val=8",
    "warmup_steps=1",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(kind: str, model: Path, out: Path, sets: list[str], home: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "recipes/accelerate/cpu_2proc.yaml"),
        "--main_process_port",
        str(free_port()),
        "-m",
        "zephyr.train.cli",
        kind,
        "--data",
        str(FIXTURES),
        "--out",
        str(out),
        "--model",
        str(model),
    ]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "ZEPHYR_HOME": str(home), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def metric_rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def adapter(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(out / "adapter" / "adapter_model.safetensors")


def compare(one: Path, two: Path, keys: tuple[str, ...]) -> None:
    a, b = metric_rows(one), metric_rows(two)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=False):
        for k in keys:
            if k in ra:
                assert abs(ra[k] - rb[k]) < 1e-4, (k, ra, rb)
    wa, wb = adapter(one), adapter(two)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=1e-5)


def test_two_processes_match_one(tiny_model, tmp_path, monkeypatch):
    """Global batch 4: one process with micro_batch 2 x grad_accum 2, two with micro_batch 2 each."""
    from zephyr.train.cli import _parse_sets
    from zephyr.train.config import PrefConfig, SFTConfig
    from zephyr.train.pref import train_pref
    from zephyr.train.sft import train_sft
    from zephyr.train.stage import section

    monkeypatch.setenv("ZEPHYR_HOME", str(tmp_path / "home"))
    torch.set_num_threads(1)
    sft_sets = COMMON + ["micro_batch=2", "max_seq_len=128"]
    launch("sft", tiny_model, tmp_path / "sft2", sft_sets + ["grad_accum=1"], tmp_path / "home")
    train_sft(
        section(SFTConfig, _parse_sets(sft_sets + ["grad_accum=2"]), "sft"),
        str(tiny_model),
        FIXTURES,
        tmp_path / "sft1",
        0,
    )
    compare(tmp_path / "sft1", tmp_path / "sft2", ("loss", "val_loss"))

    dpo_sets = COMMON + ["micro_batch=2", "max_seq_len=160", "beta=0.5"]
    launch("dpo", tiny_model, tmp_path / "dpo2", dpo_sets + ["grad_accum=1"], tmp_path / "home")
    train_pref(
        section(PrefConfig, _parse_sets(dpo_sets + ["grad_accum=2"]), "dpo"),
        str(tiny_model),
        FIXTURES,
        tmp_path / "dpo1",
        0,
    )
    compare(tmp_path / "dpo1", tmp_path / "dpo2", ("loss", "val_loss", "reward_acc", "margin"))
    assert (
        metric_rows(tmp_path / "dpo1")[-1]["loss"] != metric_rows(tmp_path / "dpo1")[1]["loss"]
    )  # it trained


def kto_by_hand(model: Path, out: Path, home: Path, sets: list[str], step: int) -> tuple:
    """KTO step `step` of a 2-process run (micro_batch 2 each) recomputed in this one process
    from the checkpoint before it and the run's cached reference: (shared KL, loss, the two
    per-process KL estimates). The shared estimate is the mean of the two, clamped at 0."""
    from zephyr.train.batching import micro_batches, plan_epoch
    from zephyr.train.cli import _parse_sets
    from zephyr.train.common import load_policy
    from zephyr.train.config import PrefConfig
    from zephyr.train.logprobs import TokenLogps, seq_logps
    from zephyr.train.losses import kto_loss
    from zephyr.train.pref import pref_data
    from zephyr.train.stage import section

    cfg = section(PrefConfig, {**_parse_sets(sets), "loss": "kto"}, "kto")
    lm, tok = load_policy(str(model), cfg, 0)
    weights = torch.load(out / "checkpoints" / f"step-{step - 1:07d}" / "adapter.pt")
    params = dict(lm.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    data = pref_data(tok, cfg, FIXTURES / "pref_train.jsonl", FIXTURES / "pref_val.jsonl", 0)
    (cache,) = (home / "ref_logps").glob("*.pt")
    ref = torch.load(cache, weights_only=True)
    net = TokenLogps(lm)
    rows = plan_epoch(data.lengths, 2 * cfg.micro_batch, 0, 0)[step - 1]
    mbs = [mb for r in (0, 1) for mb in micro_batches(rows, data.lengths, cfg.micro_batch, 2, r)]
    assert len(mbs) == 2  # one micro-batch per process
    with torch.no_grad():
        local = [
            float(
                (
                    seq_logps(net, data.unpaired([data.kl_rows[i] for i in mb])) - ref["kl"][mb]
                ).mean()
            )
            for mb in mbs
        ]
        kl = torch.tensor(max(sum(local) / 2, 0.0))
        loss = sum(
            float(
                kto_loss(
                    seq_logps(net, data.unpaired([data.rows[i] for i in mb])),
                    ref["rows"][mb],
                    torch.tensor([i % 2 == 0 for i in mb]),
                    kl,
                    cfg.beta,
                    cfg.desirable_weight,
                    cfg.undesirable_weight,
                ).sum()
            )
            for mb in mbs
        )
    return float(kl), loss / len(rows), local


def test_kto_two_processes_share_one_kl_estimate(tiny_model, tmp_path):
    """KTO's KL reference point is averaged over both processes (TRL gathers it): the logged KL
    and loss of each step equal one process's computation of that shared estimate from the
    checkpoint before the step (and differ from what per-process estimates would give)."""
    torch.set_num_threads(1)
    sets = COMMON + ["micro_batch=2", "max_seq_len=160", "grad_accum=1", "max_steps=4"]
    sets += ["save_every=1", "keep_checkpoints=0"]  # every step's start weights
    launch("kto", tiny_model, tmp_path / "kto2", sets, tmp_path / "home")
    rows = [r for r in metric_rows(tmp_path / "kto2") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(r["kl"] == r["kl"] for r in rows)  # finite
    shared = 0
    for row in rows[1:]:  # step 1 starts from the fresh adapter (no checkpoint before it)
        kl, loss, local = kto_by_hand(
            tiny_model, tmp_path / "kto2", tmp_path / "home", sets, row["step"]
        )
        assert row["kl"] == pytest.approx(kl, rel=1e-4, abs=1e-6), (row, kl, local)
        assert row["loss"] == pytest.approx(loss, rel=1e-4, abs=1e-7), (row, loss, local)
        shared += kl > 0 and abs(local[0] - local[1]) > 1e-4
    assert shared  # some step's estimate is positive and the processes' own ones differ
