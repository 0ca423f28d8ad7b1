"""A Hugging Face hub dataset (`path:` is the hub id, `subset:` the config, `split:`), mapped with the
generic reader's `columns`. Real code, but not testable on this machine: the hub is unreachable here,
so it raises a clear ZephyrError offline (HF_HUB_OFFLINE=1) or when the download fails."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from zephyr.data.config import Source
from zephyr.data.readers.generic import canonical
from zephyr.data.schema import KINDS
from zephyr.data.stats import Stats
from zephyr.errors import ZephyrError

GIVES = KINDS  # every record kind


def files(spec: Source, root: Path) -> list[Path]:
    if not spec.path:
        raise ZephyrError(
            f"{spec.label}: a `hub` source needs `path:` set to the dataset id, e.g. openai/gsm8k"
        )
    return []  # nothing local to hash; the id, subset and split are in the recipe


def rows(spec: Source, paths: list[Path], stats: Stats, kind: str) -> Iterator[dict]:
    where = f"hub dataset {spec.path}" + (f" ({spec.subset})" if spec.subset else "")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise ZephyrError(
            f"cannot load {where}: HF_HUB_OFFLINE is set; download it elsewhere and use a `file` source"
        )
    import datasets

    try:
        ds = datasets.load_dataset(spec.path, spec.subset, split=spec.split or "train")
    except Exception as e:  # network, auth, missing split: all one sentence for the user
        raise ZephyrError(
            f"cannot load {where}: {type(e).__name__}: {str(e).splitlines()[0][:200]}; "
            "check the id or use a local `file` source"
        ) from None
    stats.files = [f"hf://{spec.path}"]
    yield from canonical(
        ((i, rec) for i, rec in enumerate(ds, 1)), spec, f"hf://{spec.path}", stats, kind
    )
