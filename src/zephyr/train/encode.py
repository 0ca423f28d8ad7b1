"""Rows -> token ids: the chat template applied, labels on assistant tokens only (EOS included).

Each text segment is tokenized on its own and the ids are concatenated, so the label boundary is
exact (no guessing where a BPE merge crossed the prompt/answer join). The newline the template puts
after `<|im_end|>` is context, not a label: the model stops at EOS and never generates it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zephyr.data.schema import prompt_messages, sft_messages
from zephyr.errors import ZephyrError


@dataclass
class SFTExample:
    ids: list[int]
    labels: list[bool]  # True where the token is a training target

    @property
    def n_labels(self) -> int:
        return sum(self.labels)


@dataclass
class PairExample:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


def _render(tok: Any, messages: list[dict], gen: bool) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)


def _ids(tok: Any, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"] if text else []


def _split_eos(tok: Any, text: str) -> tuple[str, str]:
    """'answer<|im_end|>\\n' -> ('answer<|im_end|>', '\\n'): train up to and including EOS."""
    eos = tok.eos_token
    cut = text.rfind(eos)
    return (text, "") if cut < 0 else (text[: cut + len(eos)], text[cut + len(eos) :])


def encode_sft(tok: Any, row: dict, max_len: int) -> SFTExample:
    """Chat-templated ids with assistant-only labels, right-truncated to max_len."""
    messages = sft_messages(row)
    ids: list[int] = []
    labels: list[bool] = []
    done = ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = _render(tok, messages[:i], gen=True)
        full = _render(tok, messages[: i + 1], gen=False)
        if not prefix.startswith(done) or not full.startswith(prefix):
            raise ZephyrError(
                f"row {row.get('id', '?')}: the chat template does not render turns as prefixes of "
                "each other; use a model whose template appends turns (ChatML-style)"
            )
        answer, tail = _split_eos(tok, full[len(prefix) :])
        for text, train in ((prefix[len(done) :], False), (answer, True), (tail, False)):
            seg = _ids(tok, text)
            ids += seg
            labels += [train] * len(seg)
        done = full
    return SFTExample(ids[:max_len], labels[:max_len])


def _completion(tok: Any, prompt_text: str, prompt: list[dict], reply: str | list) -> list[int]:
    if isinstance(reply, list):  # TRL's conversational form: [{"role": "assistant", ...}]
        reply = "".join(m["content"] for m in reply if m.get("role") == "assistant")
    full = _render(tok, prompt + [{"role": "assistant", "content": reply}], gen=False)
    if not full.startswith(prompt_text):
        raise ZephyrError(
            "the chat template does not render the reply after the prompt; use a ChatML-style model"
        )
    answer, _ = _split_eos(tok, full[len(prompt_text) :])
    return _ids(tok, answer)


def encode_pair(tok: Any, row: dict, max_prompt_len: int, max_len: int) -> PairExample | None:
    """Prompt (left-truncated to max_prompt_len) and both completions (right-truncated so that
    prompt + completion fits max_len). None when a completion would be truncated away entirely:
    such a pair has no label token and would train nothing (DPO loss stuck at log 2)."""
    prompt = prompt_messages(row)
    prompt_text = _render(tok, prompt, gen=True)
    p = _ids(tok, prompt_text)[-max_prompt_len:] if max_prompt_len > 0 else _ids(tok, prompt_text)
    room = max_len - len(p)
    c = _completion(tok, prompt_text, prompt, row["chosen"])[: max(room, 0)]
    r = _completion(tok, prompt_text, prompt, row["rejected"])[: max(room, 0)]
    if not c or not r:
        return None
    return PairExample(p, c, r)
