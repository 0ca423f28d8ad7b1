"""Reward accuracy on held-out preference pairs: the DPO implicit reward of a model vs its reference.

r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)), with y tokenised exactly as the DPO trainer does
(zephyr.train.encode.encode_pair: the prompt through the chat template with the assistant header,
the completion = reply + <|im_end|>, prompt left-truncated to max_prompt_len, completion
right-truncated to max_len). A pair is won when r(chosen) > r(rejected).

Ties (|margin| <= 1e-6, e.g. every pair when the model is its own reference) count 0.5: a tie is
a coin flip, so an unchanged model scores 0.5, not 0.0 as TRL's strict `chosen > rejected` gives
at step 0. `ties` reports their share; `margin` = mean of r(chosen) - r(rejected).

Options: `reference` (model spec; required), `beta` (0.1), `file` (pairs JSONL; default
pref_heldout.jsonl in --data-dir when the data stage wrote it, else pref_val.jsonl; the result's
`pairs` says which: heldout / validation / file), `max_prompt_len` (256), `max_len` (512): the train stage defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zephyr.errors import ZephyrError
from zephyr.eval.task import EvalConfig, TaskResult
from zephyr.eval.tasks import gen

TIE = 1e-6
# (reference spec, dtype, file, max_prompt_len, max_len) -> {row index: (logp chosen, logp rejected)}
_REF_CACHE: dict[tuple, dict[int, tuple[float, float]]] = {}


HELDOUT, VALIDATION = "pref_heldout.jsonl", "pref_val.jsonl"


def pair_set(path: Path) -> str:
    """Which pairs a file holds: the data stage's held-out pairs, its validation split, or other."""
    return {HELDOUT: "heldout", VALIDATION: "validation"}.get(path.name, "file")


def load_pairs(cfg: EvalConfig) -> tuple[list[dict], str]:
    """Option `file`, else the data stage's held-out pairs when it wrote them, else pref_val."""
    file = cfg.options.get("file")
    heldout = Path(cfg.data_dir) / HELDOUT
    path = Path(file) if file else heldout if heldout.is_file() else Path(cfg.data_dir) / VALIDATION
    if not path.is_file():
        raise ZephyrError(
            f"preference pairs not found at {path}; pass the data stage's output as --data-dir "
            "or set the reward_accuracy option `file` to a JSONL of prompt/chosen/rejected rows"
        )
    return gen.read_rows(path, "preference pairs"), str(path)


def encode(tokenizer: Any, rows: list[dict], max_prompt_len: int, max_len: int) -> list:
    """Training's tokenisation of each pair (None for a pair with nothing left to score)."""
    from zephyr.train.encode import encode_pair

    for r in rows:
        if not all(k in r for k in ("prompt", "chosen", "rejected")):
            raise ZephyrError(f"preference row {r.get('id', '?')} lacks prompt/chosen/rejected")
    return [encode_pair(tokenizer, r, max_prompt_len, max_len) for r in rows]


def pair_logps(scorer: Any, pairs: list) -> list[tuple[float, float]]:
    """(log p(chosen|prompt), log p(rejected|prompt)) per encoded pair; the prompt runs once."""
    requests = []
    for p in pairs:
        requests += [(p.prompt, p.chosen), (p.prompt, p.rejected)]
    lls = [lp for lp, _ in scorer.loglikelihood_tokens(requests, desc="pair log-probs")]
    return [(lls[2 * i], lls[2 * i + 1]) for i in range(len(pairs))]


def rewards(
    policy: list[tuple[float, float]], reference: list[tuple[float, float]], beta: float
) -> dict[str, list[float]]:
    """Per-pair accuracy (ties 0.5), margin and tie flag from policy and reference log-probs."""
    out: dict[str, list[float]] = {"accuracy": [], "margin": [], "ties": []}
    for (pc, pr), (rc, rr) in zip(policy, reference, strict=True):
        margin = beta * (pc - rc) - beta * (pr - rr)
        tie = abs(margin) <= TIE
        out["accuracy"].append(0.5 if tie else float(margin > 0))
        out["margin"].append(margin)
        out["ties"].append(float(tie))
    return out


def reference_logps(
    cfg: EvalConfig, spec: str, rows: list[tuple[int, dict]], source: str, lens: tuple[int, int]
) -> dict:
    """Reference log-probs of the picked rows, computed once per process and reference."""
    from zephyr.eval.engine import Scorer
    from zephyr.models import load_model

    key = (str(spec), str(cfg.options.get("reference_dtype", "float32")), source, *lens)
    cache = _REF_CACHE.setdefault(key, {})
    todo = [(i, r) for i, r in rows if i not in cache]
    if todo:
        model, tok = load_model(spec, dtype=key[1])
        ref = Scorer(model, tok, batch_size=cfg.batch_size)
        pairs = encode(tok, [r for _, r in todo], *lens)
        kept = [(i, p) for (i, _), p in zip(todo, pairs, strict=True) if p is not None]
        for (i, _), lp in zip(kept, pair_logps(ref, [p for _, p in kept]), strict=True):
            cache[i] = lp
        for i, _ in todo:  # pairs with nothing left to score: remembered as None
            cache.setdefault(i, None)
        del model, ref
    return cache


def run(scorer: Any, cfg: EvalConfig) -> TaskResult:
    opts = cfg.options
    spec = opts.get("reference")
    if not spec:
        raise ZephyrError(
            "reward_accuracy needs the option `reference` (the model the policy was trained from)"
        )
    beta = float(opts.get("beta", 0.1))
    lens = (int(opts.get("max_prompt_len", 256)), int(opts.get("max_len", 512)))
    rows, source = load_pairs(cfg)
    picked = gen.subset(rows, cfg.limit, cfg.seed)
    ref = reference_logps(cfg, str(spec), picked, source, lens)
    pairs = encode(scorer.tokenizer, [r for _, r in picked], *lens)
    kept = [(i, p) for (i, _), p in zip(picked, pairs, strict=True) if p is not None and ref.get(i)]
    if not kept:
        raise ZephyrError(f"no pair of {source} keeps a completion token within max_len={lens[1]}")
    policy = pair_logps(scorer, [p for _, p in kept])
    per_item = rewards(policy, [ref[i] for i, _ in kept], beta)
    gen.write_log(
        cfg,
        "reward_accuracy",
        [
            {
                "index": i,
                "logp_chosen": pc,
                "logp_rejected": pr,
                "ref_chosen": ref[i][0],
                "ref_rejected": ref[i][1],
                **{k: per_item[k][j] for k in per_item},
            }
            for j, ((i, _), (pc, pr)) in enumerate(zip(kept, policy, strict=True))
        ],
    )
    return TaskResult(
        "reward_accuracy",
        {k: gen.mean(v) for k, v in per_item.items()},
        f"DPO implicit reward beta={beta} * (log pi - log pi_ref), pi_ref = {spec}; chat template "
        f"prompt (max {lens[0]} tok) + reply<|im_end|> (max {lens[1]} tok total), as in DPO "
        "training; accuracy = share of pairs with r(chosen) > r(rejected), ties (|margin| <= 1e-6) "
        "count 0.5; margin = mean r(chosen) - r(rejected)",
        len(kept),
        per_item,
        {
            "source": source,
            "pairs": pair_set(Path(source)),
            "reference": str(spec),
            "beta": beta,
            "dropped": len(picked) - len(kept),
        },
    )
