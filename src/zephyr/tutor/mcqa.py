"""MCQA mode: answer with the letter alone, chosen by restricting the next token to the letters.

The eval task `mcqa_letter` calls `answer_mcq_batch`; the chat's /mcq mode and the server's
POST /v1/mcqa call `answer_mcq`. One forward pass per question: no generation, no parsing.
"""

from __future__ import annotations

import math
from typing import Any

from zephyr.data.schema import LETTERS, render_mc
from zephyr.errors import ZephyrError

INSTRUCTION = "Answer with the letter of the correct choice alone."


def mcq_messages(question: str, choices: list[str], system: str | None = None) -> list[dict]:
    """The chat turns of one question: an optional system turn, then the lettered question."""
    user = f"{render_mc(question, choices)}\n\n{INSTRUCTION}"
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}
    ]


def letter_ids(tokenizer: Any, n: int) -> list[int]:
    """Token ids of the first `n` letters, without a leading space.

    The chat template ends with "<|im_start|>assistant\\n": after a newline the model writes the
    letter with no space before it, and " A" is a different token from "A".
    """
    ids = []
    for letter in LETTERS[:n]:
        toks = tokenizer.encode(letter, add_special_tokens=False)
        if len(toks) != 1:
            raise ZephyrError(f"the tokenizer splits the letter '{letter}' into {len(toks)} tokens")
        ids.append(toks[0])
    return ids


def _check(question: Any, choices: Any) -> None:
    if not isinstance(question, str) or not question.strip():
        raise ZephyrError("the MCQA question is empty; pass the question text")
    if not isinstance(choices, list) or not 2 <= len(choices) <= len(LETTERS):
        raise ZephyrError(f"an MCQA question needs 2 to {len(LETTERS)} choices (a list of strings)")
    if not all(isinstance(c, str) for c in choices):
        raise ZephyrError("every MCQA choice must be a string")


def _encode(tokenizer: Any, messages: list[dict]) -> list[int]:
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def answer_mcq_batch(
    model: Any,
    tokenizer: Any,
    items: list[dict],
    system: str | None = None,
    batch_size: int = 8,
) -> list[dict]:
    """Answer each item ({"question", "choices"}) with {"letter", "index", "probs"}.

    Batches are left-padded so every row's last position is the token before the answer; the
    position ids follow the attention mask so padding does not shift the real tokens.
    """
    for item in items:
        _check(item.get("question"), item.get("choices"))
    encoded = [
        _encode(tokenizer, mcq_messages(it["question"], it["choices"], system)) for it in items
    ]
    letters = [letter_ids(tokenizer, len(it["choices"])) for it in items]
    if getattr(model, "is_llamacpp", False):  # the llama.cpp engine: all questions in one batch
        return [_answer(row) for row in model.next_token_logits(encoded, letters)]
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    results: list[dict] = []
    for start in range(0, len(items), batch_size):
        chunk = encoded[start : start + batch_size]
        width = max(len(ids) for ids in chunk)
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, ids in enumerate(chunk):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            mask[row, width - len(ids) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = model(
                input_ids=input_ids.to(model.device),
                attention_mask=mask.to(model.device),
                position_ids=positions.to(model.device),
                logits_to_keep=1,
            ).logits[:, -1, :]
        for row in range(len(chunk)):
            results.append(_answer(logits[row, letters[start + row]].float().tolist()))
    return results


def _answer(letter_logits: list[float]) -> dict:
    """{"letter", "index", "probs"} from the logits of the letters (softmax over them alone)."""
    top = max(letter_logits)
    weights = [math.exp(x - top) for x in letter_logits]
    probs = [w / sum(weights) for w in weights]
    index = int(max(range(len(probs)), key=lambda i: probs[i]))
    return {
        "letter": LETTERS[index],
        "index": index,
        "probs": {LETTERS[i]: float(p) for i, p in enumerate(probs)},
    }


def answer_mcq(
    model: Any,
    tokenizer: Any,
    question: str,
    choices: list[str],
    system: str | None = None,
    debias: str = "none",
    min_confidence: float = 0.0,
) -> dict:
    """Answer one question: {"letter": "B", "index": 1, "probs": {"A": 0.2, "B": 0.7, ...}}.

    `debias="cyclic"` scores the n cyclic shifts of the choices and averages each choice's
    probability (tutor/debias.py): `probs` are then per choice, free of the letter prior, and
    `raw_probs` the single pass. Below `min_confidence` the answer is marked `unsure`.
    """
    item = {"question": question, "choices": choices}
    raw = answer_mcq_batch(model, tokenizer, [item], system)[0]
    if debias == "none":
        probs = [raw["probs"][LETTERS[i]] for i in range(len(choices))]
    elif debias == "cyclic":
        from zephyr.tutor.debias import cyclic, letter_probs

        probs = cyclic(letter_probs(model, tokenizer, system, len(choices)), [item])[0][0]
    else:
        raise ZephyrError(f"mcqa debias {debias!r} is unknown; use 'cyclic' or 'none'")
    index = max(range(len(choices)), key=lambda i: probs[i])
    confidence = float(probs[index])
    return {
        "letter": LETTERS[index],
        "index": index,
        "probs": {LETTERS[i]: float(p) for i, p in enumerate(probs)},
        "raw_probs": raw["probs"],
        "debias": debias,
        "confidence": confidence,
        "unsure": confidence < min_confidence,
    }


def say(answer: dict, choices: list[str]) -> str:
    """What the tutor tells the student: the letter, or that it is unsure below the threshold."""
    best = f"{answer['letter']}. {choices[answer['index']]} ({answer['confidence']:.0%})"
    if answer.get("unsure"):
        return f"I'm not sure about this one; my best guess would be {best}, but don't rely on it."
    return best
