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
- requests that share a context are one group: the context is run once and its KV cache is
  expanded over the group's continuations (hellaswag: 1 context pass + 4 short ending passes
  instead of 4 full passes);
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

DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when the config names no context length
MIN_SHARED_PREFIX = 32  # tokens: below this a shared prefix is not worth a separate pass


@dataclass
class _Group:
    """Requests that share one context: the context runs once for all their continuations."""

    ctx: tuple[int, ...]
    members: list[tuple[int, list[int]]] = field(default_factory=list)  # (request index, cont)

    @property
    def length(self) -> int:
        return len(self.ctx) + max(len(c) for _, c in self.members)


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


def _select_cache(cache: Any, index: torch.Tensor, config: Any) -> DynamicCache:
    """A new cache holding rows `index` of `cache` (the source is left untouched for reuse)."""
    out = DynamicCache(config=config)
    for i, layer in enumerate(cache.layers):
        out.update(layer.keys.index_select(0, index), layer.values.index_select(0, index), i)
    return out


def _pad(rows: list[list[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists: (ids [B, L], mask [B, L])."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


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
        device: str = "cpu",
        max_length: int | None = None,
        progress: bool = True,
    ) -> None:
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device)
        self.max_length = max_length or model_max_length(model, tokenizer)
        self.progress = progress
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        bos = tokenizer.bos_token_id
        self.prefix_token_id = bos if bos is not None else tokenizer.eos_token_id
        self.bos_text = tokenizer.bos_token
        self.head = model.get_output_embeddings()
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
        ids, mask, positions = ids.to(self.device), mask.to(self.device), positions.to(self.device)
        kwargs = dict(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=past,
            use_cache=True,
        )
        out = (self.decoder or self.model)(**kwargs)
        feats = out.last_hidden_state if self.decoder is not None else out.logits
        if keep is not None:
            feats = feats[:, keep.to(self.device)]
        return feats, out.past_key_values

    def _logits(self, feats: torch.Tensor) -> torch.Tensor:
        return (self.head(feats) if self.decoder is not None else feats).float()

    def _token_scores(self, feats: torch.Tensor, targets: torch.Tensor, chunk: int = 512):
        """Per position: log-prob of the target token and whether it is the argmax.

        Chunked over positions so a long window never holds [tokens x vocab] logits at once.
        """
        lps, greedy = [], []
        targets = targets.to(feats.device)
        for i in range(0, feats.shape[0], chunk):
            logits = self._logits(feats[i : i + chunk])
            t = targets[i : i + chunk]
            lps.append(logits.gather(1, t[:, None]).squeeze(1) - logits.logsumexp(-1))
            greedy.append(logits.argmax(-1) == t)
        return torch.cat(lps).cpu(), torch.cat(greedy).cpu()

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
        p = len(prefix)
        prefix_cache = None
        if p:
            ids = torch.tensor([prefix], dtype=torch.long)
            _, prefix_cache = self._forward(
                ids, torch.ones_like(ids), torch.arange(p)[None], None, torch.tensor([p - 1])
            )
        # longest first, like lm-eval: the first batch sets the padded length, OOMs surface early
        groups = sorted(groups, key=lambda g: (-g.length, g.ctx))
        config = getattr(self.model, "config", None)
        for start in range(0, len(groups), self.batch_size):
            chunk = groups[start : start + self.batch_size]
            rest = [list(g.ctx[p:]) for g in chunk]
            ids, rmask = _pad(rest, self.pad_id)
            lens = rmask.sum(1)
            past = None
            mask = rmask
            if p:
                past = _select_cache(
                    prefix_cache, torch.zeros(len(chunk), dtype=torch.long), config
                )
                mask = torch.cat([torch.ones(len(chunk), p, dtype=torch.long), rmask], dim=1)
            positions = p + torch.arange(ids.shape[1])[None].expand(len(chunk), -1)
            keep = torch.unique(lens - 1)
            feats, cache = self._forward(ids, mask, positions, past, keep)
            # the first continuation token is predicted at each row's last context token
            first = feats[torch.arange(len(chunk)), torch.searchsorted(keep, lens - 1)]  # [B, H]
            first_lp = torch.log_softmax(self._logits(first), dim=-1).cpu()  # [B, V]
            first_max = first_lp.argmax(-1)
            # rows for continuations longer than one token: their tail runs against the cache
            tails = []  # (group row, request index, cont)
            for row, g in enumerate(chunk):
                for idx, cont in g.members:
                    if len(cont) == 1:
                        lp = first_lp[row, cont[0]].item()
                        results[idx] = (lp, bool(first_max[row].item() == cont[0]))
                        bar.update(1)
                    else:
                        tails.append((row, idx, cont))
            tails.sort(key=lambda t: -len(t[2]))  # similar lengths share a batch: less padding
            for t0 in range(0, len(tails), self.batch_size):
                sub = tails[t0 : t0 + self.batch_size]
                rows = torch.tensor([r for r, _, _ in sub], dtype=torch.long)
                tids, tmask = _pad([c[:-1] for _, _, c in sub], self.pad_id)
                tmask_full = torch.cat(
                    [torch.ones(len(sub), p, dtype=torch.long), rmask[rows], tmask], dim=1
                )
                tpos = (p + lens[rows])[:, None] + torch.arange(tids.shape[1])[None]
                tfeats, _ = self._forward(
                    tids, tmask_full, tpos, _select_cache(cache, rows, config)
                )
                # token k (k >= 1) of a continuation is predicted at tail position k - 1
                rix = torch.cat([torch.full((len(c) - 1,), j) for j, (_, _, c) in enumerate(sub)])
                pix = torch.cat([torch.arange(len(c) - 1) for _, _, c in sub])
                targets = torch.tensor([t for _, _, c in sub for t in c[1:]], dtype=torch.long)
                lp, ok = self._token_scores(tfeats[rix, pix], targets)
                k = 0
                for row, idx, cont in sub:
                    n = len(cont) - 1
                    total = first_lp[row, cont[0]].item() + float(lp[k : k + n].sum())
                    greedy = bool(first_max[row].item() == cont[0]) and bool(ok[k : k + n].all())
                    results[idx] = (total, greedy)
                    k += n
                    bar.update(1)

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
        """
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) < 2:
            raise ValueError("text too short for perplexity (needs at least 2 tokens)")
        window = min(window, self.max_length)
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
            x, mask = _pad([ids[b:e] for b, e, _ in chunk], self.pad_id)
            positions = torch.arange(x.shape[1])[None].expand(len(chunk), -1)
            feats, _ = self._forward(x, mask, positions, None)
            rix, pix, targets = [], [], []
            for j, (b, e, trg) in enumerate(chunk):
                n = e - b
                first = max(n - trg, 1)  # position 0 has no context and is never scored
                rix += [j] * (n - first)
                pix += range(first - 1, n - 1)
                targets += ids[b + first : e]
            lp, _ = self._token_scores(feats[rix, pix], torch.tensor(targets, dtype=torch.long))
            nll -= float(lp.double().sum())
            count += len(targets)
        return {"token_perplexity": float(torch.exp(torch.tensor(nll / count))), "tokens": count}

    # ---------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self, prompts: Sequence[str], max_new_tokens: int = 256, stop: Sequence[str] = ()
    ) -> list[str]:
        """Greedy generation, batched with left padding; stop sequences cut as lm-eval does.

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
            )
            for r, i in enumerate(idx):
                text = tok.decode(gen[r, width:].tolist(), skip_special_tokens=True)
                for term in until:
                    text = text.split(term)[0]
                out[i] = text
        return out
