"""A tokenizer made ready for Zephyr: pad != EOS and a chat template.

A leaf module: `zephyr.models` (which resolves model specs) and `zephyr.quantize.artifact` (which
loads a tokenizer saved beside quantized weights) both use it without importing each other.
"""

from __future__ import annotations

import os
from typing import Any

from zephyr import chat_template as templates


def fix_pad_token(tokenizer: Any) -> Any:
    """Make pad a different token from EOS.

    With pad == EOS, collators mask every pad id out of the labels, and the real EOS with them,
    so the model never learns to stop (trl#3091). SmolLM2 ships pad == eos == <|im_end|>, so we
    reuse its <|endoftext|> (a real vocabulary entry: no embedding resize needed).
    """
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        if tokenizer.pad_token in tokenizer.get_vocab():
            return tokenizer
    vocab = tokenizer.get_vocab()
    for candidate in ("<|endoftext|>", "<pad>", "<|pad|>", "<|finetune_right_pad_id|>", "<unk>"):
        if candidate in vocab and vocab[candidate] != tokenizer.eos_token_id:
            tokenizer.pad_token = candidate
            break
    else:  # no spare token in the vocabulary: add one (load_model resizes the embeddings)
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    return tokenizer


def prepare(tokenizer: Any, chat_template: str | None = None) -> Any:
    """pad != EOS, and a chat template (zephyr.chat_template.apply: `chat_template`, else the
    running stage's recipe key, else its own, else ChatML)."""
    return templates.apply(fix_pad_token(tokenizer), chat_template)


def load_dir_tokenizer(path: str | os.PathLike, chat_template: str | None = None) -> Any:
    """The tokenizer saved in a local model directory, made ready with `prepare`."""
    from transformers import AutoTokenizer

    return prepare(AutoTokenizer.from_pretrained(str(path)), chat_template)
