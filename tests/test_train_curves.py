"""Loss-curve replay (torchtune's manner): a tiny SFT and a tiny DPO recipe run a few steps on the
tiny random model with a fixed seed, and their per-step losses must match the stored curves in
tests/fixtures/train/loss_curves.json to 1e-4 relative. Any change to the data order, batching,
loss, optimizer, schedule or LoRA init moves the curve and fails here.

Regenerate the file (only when a change of the curve is intended, and say why in the commit):

    PYTHONPATH=src OMP_NUM_THREADS=1 python tests/test_train_curves.py --write
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "train"
CURVES = FIXTURES / "loss_curves.json"
REL = 1e-4
# fp32 on the CPU (bf16 and a GPU would give other curves); LoRA dropout on: the RNG streams count
SFT = dict(
    lr=1e-2,
    micro_batch=4,
    grad_accum=2,
    max_steps=6,
    warmup_steps=1,
    bf16=False,
    max_seq_len=128,
    max_val=8,
    eval_every=3,
    merge=False,
)
DPO = dict(
    lr=1e-2,
    micro_batch=4,
    grad_accum=1,
    max_steps=6,
    warmup_steps=0,
    bf16=False,
    beta=0.5,
    max_seq_len=160,
    max_val=8,
    eval_every=3,
    merge=False,
)


def run_recipe(kind: str, model: Path, out: Path) -> dict[str, list]:
    """Train one tiny recipe; its curves: [step, loss] per step and [step, val_loss] per eval."""
    from zephyr.train.config import PrefConfig, SFTConfig
    from zephyr.train.pref import train_pref
    from zephyr.train.sft import train_sft

    if kind == "sft":
        train_sft(SFTConfig(**SFT), str(model), FIXTURES, out, 0, device="cpu")
    else:
        train_pref(PrefConfig(**DPO), str(model), FIXTURES, out, 0, device="cpu")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "loss": [[r["step"], r["loss"]] for r in rows if "loss" in r],
        "val_loss": [[r["step"], r["val_loss"]] for r in rows if "val_loss" in r],
    }


@pytest.fixture
def one_thread():
    """The stored curves were made on one thread; more threads only add rounding noise."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_loss_curve_matches_the_stored_one(kind, tiny_model, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("ZEPHYR_HOME", str(tmp_path / "home"))  # DPO's reference cache: fresh
    stored = json.loads(CURVES.read_text())[kind]
    losses = [v for _, v in stored["loss"]]
    assert max(losses) - min(losses) > 1e-2  # the stored curve moves: a flat one would prove little
    got = run_recipe(kind, tiny_model, tmp_path / kind)
    for key in ("loss", "val_loss"):
        assert [s for s, _ in got[key]] == [s for s, _ in stored[key]], key
        for (step, a), (_, b) in zip(got[key], stored[key], strict=True):
            assert a == pytest.approx(b, rel=REL), (kind, key, step, a, b)


def write_curves() -> None:
    """Make the tiny model (as the tiny_model fixture does), run both recipes, store the curves."""
    import os
    import tempfile

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import make_tiny_model

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = make_tiny_model(tmp / "tiny-model")
        os.environ["ZEPHYR_HOME"] = str(tmp / "home")  # DPO's reference cache: fresh
        curves = {k: run_recipe(k, model, tmp / k) for k in ("sft", "dpo")}
    curves["how"] = "PYTHONPATH=src OMP_NUM_THREADS=1 python tests/test_train_curves.py --write"
    curves["torch"] = torch.__version__
    CURVES.write_text(json.dumps(curves, indent=1) + "\n")
    print(f"wrote {CURVES}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    write_curves()
