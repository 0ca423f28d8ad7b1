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
    if local.is_file():
        return gen.read_rows(local, "MCQA validation set"), str(local)
    source = cfg.options.get("source", "arc_challenge")
    if source not in ARC_FILES:
        raise ZephyrError(
            f"mcqa_letter option source='{source}' is unknown; use one of {', '.join(ARC_FILES)}"
        )
    path = Path(cfg.data_dir) / ARC_FILES[source]
    return arc_rows(path), str(path)


def run(scorer: Any, cfg: EvalConfig) -> TaskResult:
    from zephyr.tutor.mcqa import answer_mcq_batch, mcq_messages

    rows, source = load_rows(cfg)
    picked = gen.subset(rows, cfg.limit, cfg.seed)
    items = [{"question": r["question"], "choices": list(r["choices"])} for _, r in picked]
    system = cfg.options.get("system")
    answers = answer_mcq_batch(
        scorer.model, scorer.tokenizer, items, system=system, batch_size=cfg.batch_size
    )
    acc, p_gold = [], []
    for (_, r), a in zip(picked, answers, strict=True):
        gold = int(r["answer"])
        acc.append(float(a["index"] == gold))
        p_gold.append(float(a["probs"][LETTERS[gold]]))
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
                "probs": a["probs"],
                "pred": a["letter"],
                "gold": int(r["answer"]),
                "acc": s,
            }
            for (i, r), a, s in zip(picked, answers, acc, strict=True)
        ],
    )
    return TaskResult(
        "mcqa_letter",
        {"acc": gen.mean(acc), "p_gold": gen.mean(p_gold)},
        "0-shot chat template, lettered choices (schema.render_mc) + 'answer with the letter'; "
        "prediction = argmax of next-token logits restricted to the letters 'A','B',... (no leading "
        "space); p_gold = softmax probability of the gold letter among the letters",
        len(acc),
        {"acc": acc, "p_gold": p_gold},
        {"source": source},
    )
