"""Streamed generation: the chat template, sampling settings, stop strings and cancellation.

One function, `generate`, used by the terminal chat, the server's worker thread and the bench.
Text arrives through a callback as transformers' TextStreamer finalises it (whole words), and a
StoppingCriteria watches a cancel flag, so a closed stream stops the model within one token.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zephyr.errors import ZephyrError
from zephyr.tutor.calculator import AnnotationFilter, CalculatorProcessor, strip_annotations

TUTOR_SYSTEM = (
    "You are Zephyr, a patient STEM tutor. Explain step by step: state what is given and what is "
    "asked, show each worked step with its reasoning, keep track of units and check them at the "
    "end, and say when something is uncertain. Prefer guiding questions and hints when the student "
    "is practising. When there is a final result, end with a line 'Answer: <value with units>'."
)


@dataclass
class GenParams:
    """Sampling settings. temperature 0 means greedy decoding."""

    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    min_tokens: int = 0
    seed: int | None = None
    calculator: bool = False  # complete `<<expr=` with the exact result (tutor/calculator.py)
    show_calc: bool = False  # keep the `<<expr=result>>` annotations in the text shown


@dataclass
class GenResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length" | "cancelled"
    first_token_s: float | None = None  # seconds from call to the first emitted text
    total_s: float = 0.0
    calc_steps: int = 0  # annotations the calculator completed


def with_system(messages: list[dict], system: str | None) -> list[dict]:
    """Prepend `system` unless the conversation already has a system turn."""
    if system and not any(m.get("role") == "system" for m in messages):
        return [{"role": "system", "content": system}] + list(messages)
    return list(messages)


def encode_chat(tokenizer: Any, messages: list[dict]) -> list[int]:
    """Token ids of the conversation through the model's own chat template, ready for the reply."""
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(out, dict) or hasattr(out, "keys"):  # transformers 5 returns a BatchEncoding
        out = out["input_ids"]
    return list(out)


def stop_ids(tokenizer: Any) -> list[int]:
    """End-of-turn ids: EOS (<|im_end|> for ChatML models) plus <|endoftext|> when present."""
    ids = {tokenizer.eos_token_id}
    for tok in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


class StopText:
    """Streamed text with stop strings cut out: what both engines emit through `on_text`.

    Stop strings are never emitted: the tail that could still become one is held back until it
    cannot. `feed` returns True once a stop string is found (the caller stops the model).
    """

    def __init__(self, stop: list[str], on_text: Callable[[str], None] | None, t0: float):
        self.stops = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.on_text, self.t0 = on_text, t0
        self.buf, self.emitted, self.stopped = "", 0, False
        self.first: float | None = None  # seconds from t0 to the first emitted text

    def _emit(self, upto: int) -> None:
        piece = self.buf[self.emitted : upto]
        if piece:
            if self.first is None:
                self.first = time.perf_counter() - self.t0
            self.emitted = upto
            if self.on_text is not None:
                self.on_text(piece)

    def feed(self, text: str, stream_end: bool = False) -> bool:
        if self.stopped:
            return True
        self.buf += text
        start = max(0, self.emitted - self.hold)
        hits = [i for i in (self.buf.find(s, start) for s in self.stops) if i >= 0]
        if hits:
            self.buf = self.buf[: min(hits)]
            self.stopped = True
            self._emit(len(self.buf))
            return True
        self._emit(len(self.buf) if stream_end else max(self.emitted, len(self.buf) - self.hold))
        return False

    def flush(self) -> None:
        """Emit what was held back (the stream ended without a stop string)."""
        self._emit(len(self.buf))


def _streamer_class():
    from transformers import StoppingCriteria, TextStreamer

    class CallbackStreamer(TextStreamer):
        """TextStreamer that hands text to a callback instead of printing it.

        TextStreamer holds each word until the next token shows where it ends, which costs a
        token of time to first text. With a byte-level tokenizer that does not clean up spaces,
        decoding more tokens only appends, so we send every token's text at once and hold back
        only an incomplete UTF-8 character (decoded as U+FFFD until its last byte arrives).
        """

        def __init__(self, tokenizer, on_text):
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.on_text = on_text
            self.eager = not getattr(tokenizer, "clean_up_tokenization_spaces", False)

        def put(self, value) -> None:
            if not self.eager:
                return super().put(value)
            if self.skip_prompt and self.next_tokens_are_prompt:
                self.next_tokens_are_prompt = False
                return
            self.token_cache.extend(value.reshape(-1).tolist())
            text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
            if not text.endswith("\ufffd") and len(text) > self.print_len:
                self.on_finalized_text(text[self.print_len :])
                self.print_len = len(text)

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            self.on_text(text, stream_end)

    class FlagStop(StoppingCriteria):
        """Stops generation as soon as any of the given threading.Events is set."""

        def __init__(self, *flags: threading.Event):
            self.flags = [f for f in flags if f is not None]

        def __call__(self, input_ids, scores, **kwargs):
            import torch

            stop = any(f.is_set() for f in self.flags)
            return torch.full(
                (input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device
            )

    return CallbackStreamer, FlagStop


def generate(
    model: Any,
    tokenizer: Any,
    messages: list[dict],
    params: GenParams | None = None,
    on_text: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
    input_ids: list[int] | None = None,
) -> GenResult:
    """Generate the assistant's reply to `messages`, calling `on_text` with each new piece.

    Stop strings are cut from the text and never emitted: the tail that could still become a stop
    string is held back until it cannot. Setting `cancel` stops generation at the next token.
    """
    import torch

    params = params or GenParams()
    shown = AnnotationFilter(show=params.show_calc)  # hidden even when only the model wrote them
    if on_text is not None:  # the student reads the text without the annotations
        on_text = _filtered(on_text, shown)
    t0 = time.perf_counter()
    ids = input_ids if input_ids is not None else encode_chat(tokenizer, messages)
    if params.max_tokens < 1:
        raise ZephyrError(f"max_tokens must be at least 1, got {params.max_tokens}")
    if getattr(model, "is_llamacpp", False):  # the llama.cpp engine (tutor/engine_llamacpp.py)
        result = model.generate(ids, params, on_text, cancel, stop_ids(tokenizer), t0=t0)
        if on_text is not None:
            on_text(None)
        shown_text = result.text if shown.show else strip_annotations(result.text)
        return dataclasses.replace(result, text=shown_text)
    CallbackStreamer, FlagStop = _streamer_class()
    text = StopText(params.stop, on_text, t0)
    stopped = threading.Event()

    def take(piece: str, stream_end: bool) -> None:
        if text.feed(piece, stream_end):
            stopped.set()

    gen_kwargs: dict[str, Any] = {
        "max_new_tokens": params.max_tokens,
        "do_sample": params.temperature > 0,
        "eos_token_id": stop_ids(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
    }
    if params.temperature > 0:
        gen_kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
    else:  # greedy: unset the model's sampling defaults so transformers does not warn
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    if params.min_tokens:
        gen_kwargs["min_new_tokens"] = min(params.min_tokens, params.max_tokens)
    if params.seed is not None:
        torch.manual_seed(params.seed)

    calc = CalculatorProcessor(tokenizer, len(ids)) if params.calculator else None
    if calc is not None:
        gen_kwargs["logits_processor"] = [calc]
    inputs = torch.tensor([ids], device=model.device)
    with torch.inference_mode():
        out = model.generate(
            input_ids=inputs,
            attention_mask=torch.ones_like(inputs),
            streamer=CallbackStreamer(tokenizer, take),
            stopping_criteria=[FlagStop(cancel, stopped)],
            **gen_kwargs,
        )
    new = out[0, len(ids) :].tolist()
    if (new and new[-1] in gen_kwargs["eos_token_id"]) or text.stopped:
        finish = "stop"
    elif cancel is not None and cancel.is_set():
        finish = "cancelled"
    else:
        finish = "length"
    text.flush()
    if on_text is not None:
        on_text(None)  # flush a held `<` that never became an annotation
    return GenResult(
        text=text.buf if shown.show else strip_annotations(text.buf),
        prompt_tokens=len(ids),
        completion_tokens=len(new),
        finish_reason=finish,
        first_token_s=text.first,
        total_s=time.perf_counter() - t0,
        calc_steps=calc.forced if calc is not None else 0,
    )


def _filtered(on_text: Callable[[str], None], shown: AnnotationFilter) -> Callable:
    """on_text behind the annotation filter; called with None at the end to flush."""

    def call(piece: str | None) -> None:
        text = shown.flush() if piece is None else shown.feed(piece)
        if text:
            on_text(text)

    return call
