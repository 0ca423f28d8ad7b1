"""Recipe sections of the train stage (`sft:`, `dpo:`, `kto:`), typed with zephyr.config.from_dict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# PEFT's name for every nn.Linear of the decoder blocks, whatever the architecture calls them
# (q_proj.. in Llama/Qwen2/Gemma, query_key_value.. in Bloom); the LM head and embeddings stay frozen
ALL_LINEAR = "all-linear"


@dataclass
class LoraSection:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: str | list[str] = ALL_LINEAR  # "all-linear" or module names, e.g. [q_proj, v_proj]


@dataclass
class TrainConfig:
    """What every trainer shares: optimisation, batching, logging, checkpoints."""

    lora: LoraSection = field(default_factory=LoraSection)
    lr: float = 5e-5
    weight_decay: float = 0.0
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0  # used when warmup_steps is 0
    micro_batch: int = 4  # rows per process per forward
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int = 0  # > 0 overrides epochs
    max_seq_len: int = 512
    max_grad_norm: float = 1.0
    seed: int | None = None  # None: the recipe's seed
    bf16: bool = True  # bf16 autocast when the CPU supports it (fp32 master weights)
    eval_every: int = 0  # 0: only at the start and the end
    log_every: int = 1
    save_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 2
    max_train: int = 0  # cap on training rows (0: all), first rows after a seeded shuffle
    max_val: int = 200  # cap on validation rows
    merge: bool = True  # also save the merged full model to model/ (later stages load it)
    # recompute each decoder layer in the backward instead of storing its activations: less peak
    # memory for one more forward pass per step
    gradient_checkpointing: bool = False
    # experiment trackers through accelerate: tensorboard, trackio, wandb, mlflow (train/tracking.py)
    report_to: list[str] = field(default_factory=list)


@dataclass
class SFTConfig(TrainConfig):
    pass


@dataclass
class PrefConfig(TrainConfig):
    """DPO/IPO (paired) and KTO (unpaired); `from` picks the start model when both stages exist."""

    loss: Literal["sigmoid", "ipo", "kto"] = "sigmoid"
    beta: float = 0.1
    max_prompt_len: int = 256
    prefix_sharing: bool = True  # prompt computed once per pair (one sequence, shared-prefix mask)
    desirable_weight: float = 1.0  # KTO only
    undesirable_weight: float = 1.0  # KTO only
    start: Literal["auto", "base", "sft"] = "auto"  # YAML key `from`: see stage.py
    ref_cache: bool = True
