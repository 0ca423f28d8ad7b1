"""Every trained model directory carries a README.md model card (hub metadata + provenance)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from zephyr.io import sha256_file
from zephyr.train.config import SFTConfig

FIXTURES = Path(__file__).parent / "fixtures" / "train"


def test_model_and_adapter_dirs_carry_a_card(tiny_model, tmp_path):
    from zephyr.train.sft import train_sft

    data = tmp_path / "data"
    shutil.copytree(FIXTURES, data)
    (data / "manifest.json").write_text(json.dumps({"seed": 0, "outputs": {}}))
    cfg = SFTConfig(lr=3e-3, micro_batch=4, max_steps=2, bf16=False, max_seq_len=96, max_val=4)
    out = tmp_path / "sft"
    train_sft(cfg, str(tiny_model), data, out, 0)
    for sub, library in (("model", "transformers"), ("adapter", "peft")):
        card = (out / sub / "README.md").read_text()
        head = card.split("---")[1]
        assert f"base_model: {tiny_model}" in head and f"library_name: {library}" in head
        assert sha256_file(data / "manifest.json") in card
        assert sha256_file(data / "sft_train.jsonl") in card
        assert "| lr | 0.003 |" in card and "| lora.r | 8 |" in card
        final = json.loads((out / "train.json").read_text())["final_eval"]["val_loss"]
        assert "| val_loss |" in card and f"{final:.4f}" in card
        assert "per target token" in card  # the protocol of the number
        assert "| grad_norm |" not in card.split("## Evaluation")[1]  # training stats are not evals
