"""Fast batched scoring with lm-eval's HFLM semantics: log-likelihood, rolling log-likelihood, generation.

Token-level semantics follow lm-eval 0.4.13 (`lm_eval/api/model.py`, `lm_eval/models/huggingface.py`):
- `(context, continuation)` is tokenised as lm-eval does: trailing spaces of the context move onto
  the continuation, the tokenizer encodes `context + continuation` and the first `len(enc(context))`
  tokens are the context; no BOS unless the tokenizer adds one by default (SmolLM2's does not);
  an empty context becomes the prefix token (BOS, else EOS);
- the log-likelihood of a continuation is the sum of its tokens' log-probs (log-softmax in fp32),
  `is_greedy` says whether every continuation token is the argmax;
- contexts longer than the model's window are truncated from the left, as lm-eval does.

What is faster than lm-eval (same numbers up to float rounding, ~1e-5 in fp32):
- requests that share a context are one group, packed into one row: the context, then every
  continuation (minus its last token) side by side, each restarting its position ids where the
  context ends, under a tree mask so it sees the context and itself only (hellaswag: ~30 context
  + 4 x ~13 ending tokens in one row, instead of lm-eval's 4 rows of ~43 tokens);
- groups whose contexts share a long token prefix (MMLU's five dev examples) form a cluster: the
  prefix is run once and its KV cache is reused by every item of the cluster;
- one-token continuations (MMLU letters) are read from the context pass alone;
- the LM head and log-softmax run only on the positions that are scored, not on every position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList

from zephyr.arch import takes_position_ids
from zephyr.padding import right_pad
from zephyr.tutor.calculator import CalculatorProcessor

DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when the config names no context length
MIN_SHARED_PREFIX = 32  # tokens: below this a shared prefix is not worth a separate pass
PACK_BUDGET = 1024  # tokens per packed row of one context's continuations (its mask is [W x W])


@dataclass
class _Group:
    """Requests that share one context: the context runs once for all their continuations."""

    ctx: tuple[int, ...]
    members: list[tuple[int, list[int]]] = field(default_factory=list)  # (request index, cont)


@dataclass
class _Row:
    """A group laid out as one input row: context, then each continuation minus its last token."""

    tokens: list[int]
    layout: tuple[list[int], list[int], list[int]]  # (tokens, positions, segment: -1 = context)
    spots: list[tuple[int, int]]  # (column whose output predicts the token, token), member order
    members: list[tuple[int, int]]  # (request index, number of its tokens in `spots`)


def _pack(group: _Group, p: int, budget: int) -> list[_Row]:
    """Lay out `group` after a shared prefix of `p` tokens (already in the cache).

    A row takes continuations while it stays within `budget` tokens (one always fits), so the
    4 endings of a hellaswag item share a row but 60 WikiText windows behind the same one-token
    context do not make a 500k-token row.
    """
    ctx = list(group.ctx[p:])
    n = len(ctx)
    rows: list[_Row] = []
    for idx, cont in group.members:
        if not rows or (len(rows[-1].tokens) + len(cont) - 1 > budget):
            rows.append(_Row(ctx[:], (ctx[:], list(range(n)), [-1] * n), [], []))
        row = rows[-1]
        tokens, positions, segment = row.layout
        start, j = len(tokens), len(row.members)
        tokens += cont[:-1]  # the last token is only a target, never an input
        positions += range(n, n + len(cont) - 1)  # each continuation starts where the context ends
        segment += [j] * (len(cont) - 1)
        # token 0 is predicted by the context's last column, token k by the continuation's k - 1
        row.spots += [(n - 1, cont[0])] + [(start + k - 1, cont[k]) for k in range(1, len(cont))]
        row.members.append((idx, len(cont)))
        row.tokens = tokens
    return rows


class _StopOnText(StoppingCriteria):
    """lm-eval's `MultiTokenEOSCriteria`, per row: stop once a stop string is in the generated tail.

    Only generated tokens are looked at (a prompt ending in a stop string does not stop), over
    the last len(tokens of the stop string) + 2 tokens, as lm-eval does.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str], start: int) -> None:
        self.tokenizer, self.stops, self.start = tokenizer, list(stops), start
        self.lookback = max(
            (len(tokenizer.encode(s, add_special_tokens=False)) + 2 for s in stops), default=0
        )

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        tail = input_ids[:, self.start :][:, -self.lookback :]
        texts = self.tokenizer.batch_decode(tail)
        done = [any(s in t for s in self.stops) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _select_cache(cache: Any, index: torch.Tensor) -> DynamicCache:
    """A new cache holding rows `index` of `cache` (the source is left untouched for reuse).

    Built without the model config, so every layer keeps every token: a sliding-window layer's
    own cache would drop old ones, and the packed row's mask applies the window instead.
    """
    out = DynamicCache()
    for i, layer in enumerate(cache.layers):
        out.update(layer.keys.index_select(0, index), layer.values.index_select(0, index), i)
    return out


def rolling_windows(
    tokens: list[int], prefix: int, window: int
) -> list[tuple[list[int], list[int]]]:
    """lm-eval's `get_rolling_token_windows(context_len=1)` + `make_disjoint_window`.

    Copied (not imported) so that lm-eval stays a dev dependency; a test checks they agree. The
    first window predicts its tokens after the prefix token; each later window predicts the next
    (up to) `window` tokens and conditions only on what fits in the window before them.
    """
    out: list[tuple[list[int], list[int]]] = []
    if not tokens:
        return out
    first = min(window, len(tokens))
    out.append(([prefix], tokens[:first]))  # disjoint: the prefix is the only context
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, window)
        end = done + n
        ctx = tokens[max(0, end - window - 1) : end - 1]
        out.append((ctx[: len(ctx) - (n - 1)], tokens[end - n : end]))
        done += n
    return out


def model_max_length(model: Any, tokenizer: Any = None) -> int:
    """The context window as lm-eval resolves it: config attributes, then the tokenizer, then 2048."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < 1_000_000_000:
        return value
    return DEFAULT_MAX_LENGTH


class Scorer:
    """Wraps (model, tokenizer) for batched scoring; `batch_size` = rows per forward pass."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 8,
        device: str | None = None,  # None: where the model already is (zephyr.device.place)
        max_length: int | None = None,
        progress: bool = True,
    ) -> None:
        self.model = (model.to(device) if device is not None else model).eval()
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device) if device is not None else model.device
        self.max_length = max_length or model_max_length(model, tokenizer)
        self.progress = progress
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        bos = tokenizer.bos_token_id
        self.prefix_token_id = bos if bos is not None else tokenizer.eos_token_id
        self.bos_text = tokenizer.bos_token
        self.head = model.get_output_embeddings()
        # ALiBi models (Bloom) take no position ids: each continuation gets its own plain row
        self.packs = takes_position_ids(model)
        decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
        softcap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
        # scoring only the needed positions needs hidden states -> head; otherwise full logits
        self.decoder = (
            decoder if (decoder is not None and self.head is not None and not softcap) else None
        )

    # ---------------------------------------------------------------- tokenisation (lm-eval)
    def tok_encode(self, text: str) -> list[int]:
        """lm-eval's `tok_encode`: tokenizer defaults, but no second BOS if the text starts with one."""
        if self.bos_text and text.startswith(self.bos_text):
            return self.tokenizer.encode(text, add_special_tokens=False)
        return self.tokenizer.encode(text)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's `_encode_pair` (+ its empty-context rule in `loglikelihood`)."""
        if context == "":
            cont = self.tokenizer.encode(continuation, add_special_tokens=False)
            if cont and cont[0] == self.prefix_token_id:
                return cont[:1], cont[1:]
            return [self.prefix_token_id], cont
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.tok_encode(context + continuation)
        ctx = self.tok_encode(context)
        return ctx, whole[len(ctx) :]

    # ---------------------------------------------------------------- model calls
    @torch.no_grad()
    def _forward(self, ids, mask, positions, past, keep: torch.Tensor | None = None):
        """One forward pass -> (features at `keep` positions or all, cache).

        Features are final hidden states (the LM head runs later, only where scored) or, for a
        model without a separable head, the logits.
        """
        ids, positions = ids.to(self.device), positions.to(self.device)
        if isinstance(mask, dict):  # one mask per attention layer type
            mask = {kind: m.to(self.device) for kind, m in mask.items()}
        else:
            mask = mask.to(self.device)
        kwargs = dict(input_ids=ids, attention_mask=mask, past_key_values=past, use_cache=True)
        if self.packs:
            kwargs["position_ids"] = positions
        out = (self.decoder or self.model)(**kwargs)
        feats = out.last_hidden_state if self.decoder is not None else out.logits
        if keep is not None:
            feats = feats[:, keep.to(self.device)]
        return feats, out.past_key_values

    def _logits(self, feats: torch.Tensor) -> torch.Tensor:
        return (self.head(feats) if self.decoder is not None else feats).float()

    def _token_scores(
        self, feats: torch.Tensor, where: torch.Tensor, targets: torch.Tensor, chunk: int = 512
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per scored token: log-prob of `targets[i]` at feature row `where[i]`, and is it the argmax.

        The head and log-softmax run once per distinct row (four MMLU letters share one) and in
        chunks, so a long window never holds [tokens x vocab] logits at once.
        """
        rows, inv = torch.unique(where, return_inverse=True)
        target_logit = torch.empty(len(where))
        lse = torch.empty(len(rows))
        top = torch.empty(len(rows), dtype=torch.long)
        for i in range(0, len(rows), chunk):
            logits = self._logits(feats[rows[i : i + chunk].to(feats.device)]).cpu()
            lse[i : i + chunk], top[i : i + chunk] = logits.logsumexp(-1), logits.argmax(-1)
            here = (inv >= i) & (inv < i + chunk)
            target_logit[here] = logits[inv[here] - i, targets[here]]
        return target_logit - lse[inv], top[inv] == targets

    # ---------------------------------------------------------------- log-likelihood
    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """(context, continuation) -> (sum of continuation log-probs, continuation is greedy)."""
        return self.loglikelihood_tokens([self.encode_pair(c, x) for c, x in requests])

    def loglikelihood_tokens(
        self, requests: Sequence[tuple[list[int], list[int]]], desc: str = "scoring"
    ) -> list[tuple[float, bool]]:
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        groups: dict[tuple[int, ...], _Group] = {}
        for i, (ctx, cont) in enumerate(requests):
            if not ctx or not cont:
                raise ValueError("both context and continuation must have at least one token")
            if len(cont) > self.max_length:
                raise ValueError(
                    f"continuation of {len(cont)} tokens exceeds the window {self.max_length}"
                )
            # lm-eval: (ctx + cont)[-(max_length + 1):][:-1] is the input -> truncate ctx on the left
            room = self.max_length + 1 - len(cont)
            ctx = tuple(ctx[-room:]) if len(ctx) > room else tuple(ctx)
            groups.setdefault(ctx, _Group(ctx)).members.append((i, list(cont)))
        bar = tqdm(total=len(requests), desc=desc, disable=not self.progress, leave=False)
        for prefix, cluster in self._clusters(list(groups.values())):
            self._score_cluster(prefix, cluster, results, bar)
        bar.close()
        return results  # type: ignore[return-value]

    def _clusters(self, groups: list[_Group]) -> list[tuple[tuple[int, ...], list[_Group]]]:
        """Split groups into clusters sharing a long token prefix; the rest share none.

        Sorted lexicographically, groups with a common prefix are neighbours; a run keeps its
        running common prefix while it stays >= MIN_SHARED_PREFIX tokens.
        """
        ordered = sorted(groups, key=lambda g: g.ctx)
        runs: list[tuple[int, list[_Group]]] = []
        for g in ordered:
            if runs:
                p, run = runs[-1]
                common = _lcp(run[0].ctx, g.ctx)  # sorted: the run's prefix is LCP(first, last)
                if common >= MIN_SHARED_PREFIX:
                    runs[-1] = (common, run + [g])
                    continue
            runs.append((0, [g]))
        out, loose = [], []
        for p, run in runs:
            if len(run) < 2:
                loose.extend(run)
                continue
            p = min(p, min(len(g.ctx) for g in run) - 1)  # each group keeps >= 1 own context token
            if p >= MIN_SHARED_PREFIX:
                out.append((run[0].ctx[:p], run))
            else:
                loose.extend(run)
        if loose:
            out.append(((), loose))
        return out

    @torch.no_grad()
    def _score_cluster(self, prefix, groups: list[_Group], results, bar) -> None:
        """Score every request of `groups`; each group is one row: its context, then each
        continuation (minus its last token) side by side under a tree mask."""
        p = len(prefix)
        prefix_cache = None
        if p:
            ids = torch.tensor([prefix], dtype=torch.long)
            _, prefix_cache = self._forward(
                ids,
                torch.ones_like(ids),
                torch.arange(p)[None],
                DynamicCache(),
                torch.tensor([p - 1]),
            )
        budget = min(self.max_length, PACK_BUDGET)
        if not self.packs:  # one (context, continuation) per row: a plain causal row
            groups = [_Group(g.ctx, [m]) for g in groups for m in g.members]
        rows = [row for g in groups for row in _pack(g, p, budget)]
        # longest first, like lm-eval: the first batch sets the padded length, OOMs surface early
        rows.sort(key=lambda r: (-len(r.tokens), r.tokens))
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            width = max(len(r.tokens) for r in chunk)
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            pos = torch.zeros((len(chunk), width), dtype=torch.long)
            seg = torch.full((len(chunk), width), -2, dtype=torch.long)  # -2 pad, -1 context
            for b, r in enumerate(chunk):
                n = len(r.tokens)
                ids[b, :n], pos[b, :n], seg[b, :n] = (torch.tensor(x) for x in r.layout)
            past = None
            if p:
                past = _select_cache(prefix_cache, torch.zeros(len(chunk), dtype=torch.long))
            if all(len(r.members) == 1 for r in chunk):
                # plain causal rows (perplexity windows): a padding mask, and the model's own
                # causal (and sliding-window) masking, with no [W x W] tensor built here
                mask = torch.cat(
                    [torch.ones(len(chunk), p, dtype=torch.long), (seg != -2).long()], 1
                )
            else:
                # a token sees the context and the earlier tokens of its own continuation
                sk, sq = seg[:, None, :], seg[:, :, None]
                mask = ((sk == -1) | (sk == sq)) & (sk != -2)
                mask &= torch.ones(width, width, dtype=torch.bool).tril()
                mask |= torch.eye(width, dtype=torch.bool)  # pad rows see themselves: no NaN
                if p:
                    mask = torch.cat([torch.ones(len(chunk), width, p, dtype=torch.bool), mask], -1)
                mask = self._mask_for_model(mask[:, None], pos + p, p)
            feats, _ = self._forward(ids, mask, pos + p, past)
            # every scored token: (row, column that predicts it, target)
            spots = [(b, c, t) for b, r in enumerate(chunk) for c, t in r.spots]
            flat = torch.tensor([b * width + c for b, c, _ in spots])
            targets = torch.tensor([t for _, _, t in spots])
            lp, ok = self._token_scores(feats.reshape(-1, feats.shape[-1]), flat, targets)
            k = 0
            for r in chunk:
                for idx, n in r.members:
                    results[idx] = (float(lp[k : k + n].sum()), bool(ok[k : k + n].all()))
                    k += n
                    bar.update(1)

    def _mask_for_model(self, mask: torch.Tensor, positions: torch.Tensor, p: int):
        """The boolean [B, 1, Q, K] mask in the form the model's attention layers take.

        A 4D mask is used as given, so a sliding-window model gets the window applied here:
        for all layers when every layer slides, per layer type (a dict) when only some do.
        """
        config = getattr(self.model, "config", None)
        config = getattr(config, "text_config", None) or config
        window = getattr(config, "sliding_window", None)
        kinds = set(getattr(config, "layer_types", None) or [])
        if not window or (kinds and "sliding_attention" not in kinds):
            return mask
        kpos = torch.cat([torch.arange(p).expand(len(positions), -1), positions], 1)
        near = (positions[:, :, None] - kpos[:, None, :]) < window
        sliding = mask & near[:, None]
        if kinds == {"sliding_attention"} or not kinds:
            return sliding
        return {"full_attention": mask, "sliding_attention": sliding}

    # ---------------------------------------------------------------- rolling (perplexity)
    def rolling_windows(self, text: str) -> list[tuple[list[int], list[int]]]:
        """lm-eval's disjoint rolling windows (context_len=1) over the text's tokens."""
        return rolling_windows(self.tok_encode(text), self.prefix_token_id, self.max_length)

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        """Total log-likelihood of each text, scored in lm-eval's rolling windows."""
        windows, owner = [], []
        for i, text in enumerate(texts):
            for w in self.rolling_windows(text):
                windows.append(w)
                owner.append(i)
        totals = [0.0] * len(texts)
        for i, (lp, _) in zip(
            owner, self.loglikelihood_tokens(windows, desc="rolling"), strict=True
        ):
            totals[i] += lp
        return totals

    @torch.no_grad()
    def token_perplexity(
        self, text: str, window: int = 1024, stride: int = 512
    ) -> dict[str, float]:
        """Token perplexity with a sliding window (the transformers perplexity recipe).

        Each window of `window` tokens scores only the tokens not scored by the previous one, so
        every token after the first gets `window - stride` tokens of context (fewer at the start).
        A tokenizer that adds BOS by default (Gemma) gets BOS before every window, as the model
        saw in training (Gemma 3 270M: WikiText ppl 158 without, 63 with); then token 0 is scored.
        """
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) < 2:
            raise ValueError("text too short for perplexity (needs at least 2 tokens)")
        bos = self.tokenizer.bos_token_id
        lead = [bos] if bos is not None and self.tokenizer.encode("a")[:1] == [bos] else []
        window = min(window, self.max_length - len(lead))
        stride = max(1, min(stride, window))
        spans, prev_end = [], 0
        for begin in range(0, len(ids), stride):
            end = min(begin + window, len(ids))
            spans.append((begin, end, end - prev_end))  # score the last `trg` tokens of the span
            prev_end = end
            if end == len(ids):
                break
        nll, count = 0.0, 0
        for s0 in tqdm(
            range(0, len(spans), self.batch_size), disable=not self.progress, leave=False
        ):
            chunk = spans[s0 : s0 + self.batch_size]
            x, mask = right_pad([lead + ids[b:e] for b, e, _ in chunk], self.pad_id)
            positions = torch.arange(x.shape[1])[None].expand(len(chunk), -1)
            feats, _ = self._forward(x, mask, positions, None)
            rix, pix, targets = [], [], []
            for j, (b, e, trg) in enumerate(chunk):
                n = e - b
                first = max(n - trg, 0 if lead else 1)  # without BOS, token 0 has no context
                rix += [j] * (n - first)
                pix += range(first - 1 + len(lead), n - 1 + len(lead))
                targets += ids[b + first : e]
            where = torch.tensor(rix) * feats.shape[1] + torch.tensor(pix, dtype=torch.long)
            flat = feats.reshape(-1, feats.shape[-1])
            lp, _ = self._token_scores(flat, where, torch.tensor(targets, dtype=torch.long))
            nll -= float(lp.double().sum())
            count += len(targets)
        return {"token_perplexity": float(torch.exp(torch.tensor(nll / count))), "tokens": count}

    # ---------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 256,
        stop: Sequence[str] = (),
        calculator: bool = False,
    ) -> list[str]:
        """Greedy generation, batched with left padding; stop sequences cut as lm-eval does.

        `calculator`: zephyr.tutor.calculator completes every `<<expr=` the model writes.

        lm-eval adds the EOS text to the stop list and keeps the text before the first occurrence
        of each stop sequence, in order; special tokens are skipped when decoding.
        """
        tok = self.tokenizer
        eos_text = tok.decode([tok.eos_token_id], skip_special_tokens=False)
        until = [s for s in stop if s] + ([eos_text] if eos_text not in stop else [])
        max_ctx = max(1, self.max_length - max_new_tokens)
        encoded = [self.tok_encode(p)[-max_ctx:] for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        out: list[str] = [""] * len(prompts)
        for s0 in tqdm(
            range(0, len(order), self.batch_size), disable=not self.progress, leave=False
        ):
            idx = order[s0 : s0 + self.batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(idx):  # left padding: every row's last token is at the same place
                ids[r, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                mask[r, width - len(encoded[i]) :] = 1
            gen = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=self.pad_id,
                eos_token_id=tok.eos_token_id,
                stopping_criteria=StoppingCriteriaList([_StopOnText(tok, until, width)]),
                logits_processor=[CalculatorProcessor(tok, width)] if calculator else None,
            )
            for r, i in enumerate(idx):
                text = tok.decode(gen[r, width:].tolist(), skip_special_tokens=True)
                for term in until:
                    text = text.split(term)[0]
                out[i] = text
        return out
