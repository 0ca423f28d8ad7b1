"""Reference log-probs: computed once with the LoRA adapter disabled (no second copy of the
weights), cached on disk under zephyr_home()/ref_logps/<data hash>-<model hash>.pt.

A rerun of the same data on the same start model loads the file instead of a full forward pass
over the data set, and during training the reference costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from zephyr.io import atomic_write, sha256_file, sha256_json
from zephyr.models import resolve, zephyr_home


def model_hash(spec: str) -> str:
    """Hash of the start model's weights and config (not its path: a copied model hits the cache)."""
    path = Path(resolve(spec))
    if not path.is_dir():
        return sha256_json({"hub": str(spec)})[:16]
    files = sorted(
        p
        for p in path.iterdir()
        if p.suffix in (".safetensors", ".bin", ".json") and "token" not in p.name
    )
    return sha256_json([(p.name, sha256_file(p)) for p in files])[:16]


def cache_path(data_digest: str, model_digest: str) -> Path:
    return zephyr_home() / "ref_logps" / f"{data_digest}-{model_digest}.pt"


def cached(
    path: Path, compute: Callable[[], dict[str, torch.Tensor]], enabled: bool = True
) -> tuple[dict, bool]:
    """Load the tensors at `path` if present (hit=True), else compute and store them."""
    if enabled and path.exists():
        return torch.load(path, weights_only=True), True
    out = compute()
    if enabled:
        with atomic_write(path, "wb") as f:
            torch.save(out, f)
    return out, False


@torch.no_grad()
def seq_logps_all(
    net: Any, items: list, collate: Callable[[list], dict], batches: list[list[int]], device
) -> torch.Tensor:
    """Per-segment log-probs of every item, in item order, computed batch by batch as given.

    Callers pass the very micro-batches training will use first, so the reference forward sees the
    same padding and shapes as the policy's first forward: at step 0 policy == reference holds to
    the last bit (loss exactly log 2, as TRL's in-batch reference gives), even under bf16.
    """
    from zephyr.train.common import to_device
    from zephyr.train.logprobs import seq_logps

    per_item: dict[int, torch.Tensor] = {}
    for idx in batches:
        out = seq_logps(net, to_device(collate([items[i] for i in idx]), device)).float().cpu()
        for j, row in enumerate(out.view(len(idx), -1)):
            per_item[idx[j]] = row
    return torch.stack([per_item[i] for i in range(len(items))]) if items else torch.zeros(0, 2)


def cover(batches: list[list[int]], n: int, lengths: list[int], size: int) -> list[list[int]]:
    """`batches` plus longest-first batches of the items they miss (rows a plan drops)."""
    seen = {i for b in batches for i in b}
    rest = sorted((i for i in range(n) if i not in seen), key=lambda i: -lengths[i])
    return batches + [rest[k : k + size] for k in range(0, len(rest), size)]
