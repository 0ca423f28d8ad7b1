"""`zephyr eval --engine llamacpp`: generation tasks (gsm8k, synthetic, bertscore) through llama.cpp.

The scorer is the HF `Scorer` (log-likelihood tasks and mcqa_letter stay on transformers, so
their numbers do not move) whose `generate` runs on the model's GGUF in `LlamaCppEngine`: every
prompt is a sequence of the engine's continuous batch, greedy, with the HF path's tokenisation,
left truncation, EOS and stop strings (lm-eval's `generate_until` post-processing), and the
calculator hook when the model was trained with `<<expr=result>>` annotations.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tqdm.auto import tqdm

from zephyr.eval.engine import Scorer
from zephyr.tutor.generate import GenParams


class LlamaCppScorer(Scorer):
    """A Scorer whose greedy generation runs in a llama.cpp engine."""

    def __init__(self, model: Any, tokenizer: Any, engine: Any, **kwargs: Any) -> None:
        super().__init__(model, tokenizer, **kwargs)
        self.engine = engine
        self.memo_key = engine  # tasks memoise generations per engine, not per HF model

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        calculator: bool = False,
    ) -> list[str]:
        tok = self.tokenizer
        eos_text = tok.decode([tok.eos_token_id], skip_special_tokens=False)
        until = [s for s in stop if s] + ([eos_text] if eos_text not in stop else [])
        window = min(self.max_length, self.engine.ctx_len)
        max_ctx = max(1, window - max_new_tokens)
        params = GenParams(
            max_tokens=max_new_tokens, temperature=0.0, stop=until, calculator=calculator
        )
        bar = tqdm(total=len(prompts), disable=not self.progress, leave=False, desc="llama.cpp")

        def one(prompt: str) -> str:
            ids = self.tok_encode(prompt)[-max_ctx:]
            out = self.engine.generate(ids, params, stop_ids=[tok.eos_token_id])
            bar.update(1)
            return out.text

        # one caller thread per sequence slot: the engine decodes them in one batch
        with ThreadPoolExecutor(max_workers=self.engine.parallel) as pool:
            texts = list(pool.map(one, prompts))
        bar.close()
        return texts


def make_llamacpp_scorer(spec: str, batch_size: int = 8, parallel: int = 8, quant: str = "f16"):
    """HF model + tokenizer for scoring, and the spec's GGUF engine for generation."""
    from zephyr.models import load_model
    from zephyr.tutor.engines import EngineOptions, load_llamacpp

    engine, _ = load_llamacpp(spec, EngineOptions("llamacpp", quant, parallel=parallel))
    model, tok = load_model(spec)
    return LlamaCppScorer(model, tok, engine, batch_size=batch_size)
