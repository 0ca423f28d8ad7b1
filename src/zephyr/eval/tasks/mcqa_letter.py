"""The tutor's MCQA mode as an eval task: lettered choices, answer = most likely letter token.

The prompt is `zephyr.tutor.mcqa.mcq_messages` (schema.render_mc: question, blank line, `A. ...`
lines, then the instruction to answer with the letter alone) through the chat template with the
assistant header. The answer is read from one forward pass by restricting the next-token logits to
the choice letters (`tutor.mcqa.answer_mcq_batch`). The header ends with a newline, so the model's
next token is "A" with no leading space; " A" is a different token and is not what it would write.

Items: option `file` (MCQA rows: question, choices, answer index), else `mcqa_val.jsonl` in
`--data-dir` (a data stage output), else ARC-Challenge test from the shared data layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zephyr.data.schema import LETTERS
from zephyr.errors import ZephyrError
from zephyr.eval.task import EvalConfig, TaskResult
from zephyr.eval.tasks import gen

ARC_FILES = {
    "arc_challenge": "arc/ARC-Challenge/ARC-Challenge-Test.jsonl",
    "arc_easy": "arc/ARC-Easy/ARC-Easy-Test.jsonl",
}


def arc_rows(path: Path) -> list[dict]:
    """ARC JSONL (question.stem, question.choices[label,text], answerKey) as MCQA rows."""
    rows = []
    for r in gen.read_rows(path, "ARC test set"):
        labels = [c["label"] for c in r["question"]["choices"]]
        if r["answerKey"] not in labels:
            continue
        rows.append(
            {
                "id": r["id"],
                "question": r["question"]["stem"],
                "choices": [c["text"] for c in r["question"]["choices"]],
                "answer": labels.index(r["answerKey"]),
                "subject": "arc",
            }
        )
    return rows


def load_rows(cfg: EvalConfig) -> tuple[list[dict], str]:
    file = cfg.options.get("file")
    if file:
        return gen.read_rows(Path(file), "MCQA set (option `file`)"), str(file)
    local = Path(cfg.data_dir) / "mcqa_val.jsonl"
    if local.is_file() and "source" not in cfg.options:
        return gen.read_rows(local, "MCQA validation set"), str(local)
    source = cfg.options.get("source", "arc_challenge")
    if source not in ARC_FILES:
        raise ZephyrError(
            f"mcqa_letter option source='{source}' is unknown; use one of {', '.join(ARC_FILES)}"
        )
    path = Path(cfg.data_dir) / ARC_FILES[source]
    return arc_rows(path), str(path)


def _debiased(scorer: Any, cfg: EvalConfig, items: list[dict], golds: list[int]) -> dict:
    """Cyclic-permutation and PriDe scores (tutor/debias.py): metrics, per-item, extras."""
    from zephyr.tutor import debias

    score = debias.letter_probs(
        scorer.model, scorer.tokenizer, cfg.options.get("system"), cfg.batch_size
    )
    probs, shifted = debias.cyclic(score, items)
    n = max(len(it["choices"]) for it in items)
    sizes = [len(it["choices"]) for it in items]
    common = max(set(sizes), key=sizes.count)  # the prior is per choice count: the usual one
    k = max(2, int(cfg.options.get("pride_share", 0.1) * len(items)))  # unlabelled estimate set
    prior = debias.prior_from(
        [s for s, m in zip(shifted, sizes, strict=True) if m == common][:k], common
    )
    pride = [debias.apply_prior(per_shift[0], prior) for per_shift in shifted]
    cyc_pred = [debias.argmax(p) for p in probs]
    pride_pred = [debias.argmax(p) for p in pride]
    acc_c = [float(p == g) for p, g in zip(cyc_pred, golds, strict=True)]
    acc_p = [float(p == g) for p, g in zip(pride_pred, golds, strict=True)]
    p_gold = [float(p[g]) for p, g in zip(probs, golds, strict=True)]
    return {
        "metrics": {"acc_cyclic": gen.mean(acc_c), "p_gold_cyclic": gen.mean(p_gold)}
        | {"acc_pride": gen.mean(acc_p)},
        "per_item": {"acc_cyclic": acc_c, "p_gold_cyclic": p_gold, "acc_pride": acc_p},
        "extra": {
            "letters_cyclic": debias.letter_table(cyc_pred, golds, n),
            "letters_pride": debias.letter_table(pride_pred, golds, n),
            "pride_prior": {LETTERS[d]: q for d, q in enumerate(prior)},
            "pride_choices": common,
            "pride_estimate_items": k,
        },
        "log": [
            {"probs_cyclic": p, "pred_cyclic": LETTERS[c]}
            for p, c in zip(probs, cyc_pred, strict=True)
        ],
    }


def run(scorer: Any, cfg: EvalConfig) -> TaskResult:
    from zephyr.tutor.debias import letter_table
    from zephyr.tutor.mcqa import answer_mcq_batch, mcq_messages

    rows, source = load_rows(cfg)
    picked = gen.subset(rows, cfg.limit, cfg.seed)
    items = [{"question": r["question"], "choices": list(r["choices"])} for _, r in picked]
    system = cfg.options.get("system")
    answers = answer_mcq_batch(
        scorer.model, scorer.tokenizer, items, system=system, batch_size=cfg.batch_size
    )
    acc, p_gold = [], []
    golds = [int(r["answer"]) for _, r in picked]
    for gold, a in zip(golds, answers, strict=True):
        acc.append(float(a["index"] == gold))
        p_gold.append(float(a["probs"][LETTERS[gold]]))
    n_letters = max(len(it["choices"]) for it in items)
    extra: dict[str, Any] = {
        "source": source,
        "letters": letter_table([a["index"] for a in answers], golds, n_letters),
    }
    metrics, per_item = {"acc": gen.mean(acc), "p_gold": gen.mean(p_gold)}, {}
    logs: list[dict] = [{} for _ in items]
    if cfg.options.get("debias", "cyclic") == "cyclic":  # n passes per item; `none` skips it
        deb = _debiased(scorer, cfg, items, golds)
        metrics |= deb["metrics"]
        per_item, logs = deb["per_item"], deb["log"]
        extra |= deb["extra"]
    gen.write_log(
        cfg,
        "mcqa_letter",
        [
            {
                "index": i,
                "id": r.get("id"),
                "prompt": gen.chat_prompt(
                    scorer.tokenizer, mcq_messages(r["question"], list(r["choices"]), system)
                ),
                "choices": r["choices"],
                "subject": r.get("subject"),  # the report's per-cohort table
                "probs": a["probs"],
                "pred": a["letter"],
                "gold": int(r["answer"]),
                "acc": s,
                **log,
            }
            for (i, r), a, s, log in zip(picked, answers, acc, logs, strict=True)
        ],
    )
    return TaskResult(
        "mcqa_letter",
        metrics,
        "0-shot chat template, lettered choices (schema.render_mc) + 'answer with the letter'; "
        "prediction = argmax of next-token logits restricted to the letters 'A','B',... (no leading "
        "space); p_gold = softmax probability of the gold letter among the letters; *_cyclic = "
        "each choice's probability averaged over the n cyclic shifts of the choices; acc_pride = "
        "one pass with the letter prior (estimated from the shifts of the first 10% of items "
        "with the usual number of choices, no labels) divided out (Zheng et al. 2024); extra.letters* = predicted vs gold letter "
        "shares with 95% Wilson intervals",
        len(acc),
        {"acc": acc, "p_gold": p_gold, **per_item},
        extra,
    )
