"""Two CPU processes (accelerate, gloo) == one process on the same global batch, for SFT and DPO."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

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


def test_kto_two_processes_share_one_kl_estimate(tiny_model, tmp_path):
    """KTO's KL reference point is averaged over both processes (TRL gathers it): the run
    completes in lockstep and logs one finite KL per step."""
    sets = COMMON + ["micro_batch=2", "max_seq_len=160", "grad_accum=1", "max_steps=2"]
    launch("kto", tiny_model, tmp_path / "kto2", sets, tmp_path / "home")
    rows = [r for r in metric_rows(tmp_path / "kto2") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["kl"] >= 0 and r["kl"] == r["kl"] for r in rows)
