"""llama.cpp behind the tutor: one scheduler thread decodes every live request in one batch.

`LlamaCppEngine(gguf)` stands where the Hugging Face model stands in `tutor.generate.generate`
and `tutor.mcqa.answer_mcq_batch` (they hand over to it when `model.is_llamacpp`), so the chat,
the server and the eval keep their own tokenizer, prompts, stop strings and policy.

Continuous batching, as llama.cpp's `llama-server` does it with parallel slots, through the
library (`llama-cpp-python` ships the library, not the server binary, and its own Python server
runs one request at a time): each request owns a sequence id of one llama_context; at every step
the scheduler puts one token of each generating sequence, then prompt chunks of newly admitted
ones, into a single `llama_decode`, and samples each sequence with its own llama.cpp sampler
chain. A request that is cancelled, or whose caller found a stop string, leaves the batch at
the next step. A slot keeps its KV cells after its request ends: the next request that shares
their prefix (the system prompt, the conversation so far) decodes only the rest, as
llama-server's prompt cache does. Text goes back through a queue, so the caller's
thread (not the scheduler) runs the stop strings and the policy's output checks.
"""

from __future__ import annotations

import codecs
import collections
import ctypes
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from zephyr.errors import ZephyrError
from zephyr.tutor.generate import GenParams, GenResult, StopText

log = logging.getLogger("zephyr.tutor")


def default_threads() -> int:
    """$OMP_NUM_THREADS when set (so `/work/bin/cpu`-style limits hold), else the usable cores."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else len(os.sched_getaffinity(0))


def model_params(llama_cpp: Any) -> Any:
    """llama.cpp model parameters; AMX kernels off on AMX CPUs unless $ZEPHYR_LLAMACPP_AMX=1.

    In llama.cpp as vendored by llama-cpp-python 0.3.36, built natively on an AMX Xeon (KVM),
    `ggml_backend_amx_mul_mat` segfaults on any multi-token batch of a quantized GGUF; without
    the extra buffer types the same CPU runs the AVX-512 kernels. f16 does not use them.
    """
    params = llama_cpp.llama_model_default_params()
    amx = (
        "amx_int8" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else False
    )
    if amx and os.environ.get("ZEPHYR_LLAMACPP_AMX") != "1":
        params.use_extra_bufts = False
    return params


@dataclass
class _Request:
    ids: list[int]
    max_tokens: int
    params: GenParams
    stop_ids: frozenset[int]
    cancel: threading.Event | None
    letters: list[int] | None = None  # MCQA: return these tokens' logits after the prompt
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    stopped: threading.Event = field(default_factory=threading.Event)
    seq: int = -1
    fed: int = 0  # prompt tokens already in the KV cache
    kv: list[int] = field(default_factory=list)  # tokens of this sequence in the KV cache
    generated: int = 0
    last: int = -1
    sampler: Any = None

    def leaving(self) -> str | None:
        if self.stopped.is_set():
            return "stop"
        if self.cancel is not None and self.cancel.is_set():
            return "cancelled"
        return None


def _common(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two token lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class LlamaCppEngine:
    """A GGUF model in one llama_context with `parallel` sequences of `ctx` tokens each."""

    is_llamacpp = True

    def __init__(
        self,
        gguf: str | Path,
        parallel: int = 8,
        ctx: int = 2048,
        threads: int | None = None,
        batch: int = 512,
    ) -> None:
        import llama_cpp
        from llama_cpp import _logger

        _logger.set_verbose(False)  # llama.cpp's load messages go nowhere; errors still print
        self.ll, self.path = llama_cpp, Path(gguf)
        if not self.path.is_file():
            raise ZephyrError(f"GGUF file not found: {self.path}")
        llama_cpp.llama_backend_init()
        self.model = llama_cpp.llama_model_load_from_file(
            str(self.path).encode(), model_params(llama_cpp)
        )
        if not self.model:
            raise ZephyrError(f"llama.cpp could not load {self.path}; is it a GGUF model file?")
        self.ctx_len = min(ctx, llama_cpp.llama_model_n_ctx_train(self.model))
        self.parallel, self.threads, self.n_batch = parallel, threads or default_threads(), batch
        self.ctx = self._context()
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(batch, 0, 1)
        # what the server reads from an HF model: the context it may fill
        self.config = SimpleNamespace(max_position_embeddings=self.ctx_len)
        self.cv = threading.Condition()
        self.waiting: collections.deque[_Request] = collections.deque()
        self.closed, self.error = False, None
        self.peak_seqs = 0  # most sequences one decode step carried (the tests check batching)
        self.reused = 0  # prompt tokens found in a slot's cache instead of decoded again
        self.decode_s = 0.0  # seconds inside llama_decode (the rest of a step is Python)
        # per sequence slot: the tokens its KV cells hold, kept after a request ends so the next
        # one with the same prefix (the system prompt, the conversation so far) skips them
        self.cached: list[list[int]] = [[] for _ in range(parallel)]
        self.thread = threading.Thread(target=self._run, name="zephyr-llamacpp", daemon=True)
        self.thread.start()

    def _context(self) -> Any:
        p = self.ll.llama_context_default_params()
        p.n_ctx = self.ctx_len * self.parallel
        p.n_batch = p.n_ubatch = self.n_batch
        p.n_seq_max = self.parallel
        p.kv_unified = False  # each sequence its own KV stream of ctx_len cells
        p.n_threads = p.n_threads_batch = self.threads
        ctx = self.ll.llama_init_from_model(self.model, p)
        if not ctx:
            raise ZephyrError(
                f"llama.cpp could not make a context of {self.parallel} x {self.ctx_len} tokens; "
                "lower --parallel or --ctx"
            )
        return ctx

    # ---- the caller's side -------------------------------------------------------------------

    def _submit(self, req: _Request) -> _Request:
        if len(req.ids) >= self.ctx_len:
            raise ZephyrError(
                f"the prompt is {len(req.ids)} tokens; the engine's context is {self.ctx_len}"
            )
        with self.cv:
            if self.closed or self.error:
                raise ZephyrError(f"the llama.cpp engine is not running ({self.error or 'closed'})")
            self.waiting.append(req)
            self.cv.notify()
        return req

    def generate(
        self,
        ids: list[int],
        params: GenParams,
        on_text: Any = None,
        cancel: threading.Event | None = None,
        stop_ids: list[int] | tuple[int, ...] = (),
        t0: float | None = None,
    ) -> GenResult:
        """Generate after `ids` (the same contract as `tutor.generate.generate`)."""
        t0 = t0 or time.perf_counter()
        budget = min(params.max_tokens, self.ctx_len - len(ids))
        req = self._submit(_Request(list(ids), budget, params, frozenset(stop_ids), cancel))
        text = StopText(params.stop, on_text, t0)
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            while True:
                kind, data = req.out.get()
                if kind == "piece" and text.feed(utf8.decode(data)):
                    req.stopped.set()  # a stop string: the scheduler drops the sequence
                elif kind == "error":
                    raise ZephyrError(f"llama.cpp failed: {data}")
                elif kind == "end":
                    break
        except BaseException:
            req.stopped.set()  # Ctrl-C or an error here: stop generating too
            raise
        reason = data
        if not text.stopped:
            text.feed(utf8.decode(b"", final=True), stream_end=True)
        finish = "stop" if text.stopped else reason
        return GenResult(
            text=text.buf,
            prompt_tokens=len(ids),
            completion_tokens=req.generated,
            finish_reason=finish,
            first_token_s=text.first,
            total_s=time.perf_counter() - t0,
        )

    def next_token_logits(
        self, prompts: list[list[int]], tokens: list[list[int]]
    ) -> list[list[float]]:
        """Logits of `tokens[i]` right after `prompts[i]`, all prompts decoded together."""
        reqs = [
            self._submit(_Request(list(p), 0, GenParams(), frozenset(), None, letters=list(t)))
            for p, t in zip(prompts, tokens, strict=True)
        ]
        out = []
        for req in reqs:
            kind, data = req.out.get()
            if kind == "error":
                raise ZephyrError(f"llama.cpp failed: {data}")
            out.append(data)
            req.out.get()  # its "end"
        return out

    def close(self) -> None:
        with self.cv:
            self.closed = True
            self.cv.notify()
        self.thread.join(timeout=30)
        if not self.thread.is_alive():
            self.ll.llama_batch_free(self.batch)
            self.ll.llama_free(self.ctx)
            self.ll.llama_model_free(self.model)

    # ---- the scheduler -----------------------------------------------------------------------

    def _run(self) -> None:
        active: dict[int, _Request] = {}
        free = list(range(self.parallel - 1, -1, -1))
        try:
            while True:
                with self.cv:
                    while not (self.waiting or active or self.closed):
                        self.cv.wait()
                    if self.closed:
                        break
                    while self.waiting and free:
                        req = self.waiting.popleft()
                        self._admit(req, free)
                        active[req.seq] = req
                for req in list(active.values()):
                    if reason := req.leaving():
                        self._finish(req, reason, active, free)
                plan = self._fill(active.values())
                if not plan:
                    continue
                self.peak_seqs = max(self.peak_seqs, len({r.seq for r, _ in plan}))
                t = time.perf_counter()
                rc = self.ll.llama_decode(self.ctx, self.batch)
                self.decode_s += time.perf_counter() - t
                if rc != 0:
                    raise RuntimeError(f"llama_decode returned {rc}")
                for req, i in plan:
                    self._after(req, i, active, free)
        except Exception as e:  # the engine is broken: every caller gets the error, none hangs
            log.exception("llama.cpp scheduler failed")
            with self.cv:
                self.error = f"{type(e).__name__}: {e}"
                for req in [*active.values(), *self.waiting]:
                    req.out.put(("error", self.error))
                self.waiting.clear()

    def _admit(self, req: _Request, free: list[int]) -> None:
        """Give `req` the free slot whose cache shares the longest prefix with its prompt.

        llama-server's prompt cache: the cells past the shared prefix are dropped, the prefix
        is kept, and at least the last prompt token is decoded again for its logits.
        """
        seq = max(reversed(free), key=lambda s: _common(self.cached[s], req.ids))
        free.remove(seq)
        keep = min(_common(self.cached[seq], req.ids), len(req.ids) - 1)
        self.ll.llama_memory_seq_rm(self.mem, seq, keep, -1)
        req.seq, req.fed, req.kv = seq, keep, req.ids[:keep]
        req.sampler = self._sampler(req.params)
        self.reused += keep

    def _sampler(self, params: GenParams) -> Any:
        """The sampler chain transformers would apply: greedy, or temperature then top-p then draw."""
        ll = self.ll
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        if params.temperature <= 0:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
            return chain
        seed = params.seed if params.seed is not None else ll.LLAMA_DEFAULT_SEED
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(params.temperature))
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(params.top_p, 1))
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_dist(seed))
        return chain

    def _fill(self, requests) -> list[tuple[_Request, int]]:
        """Lay out one decode step: a token per generating sequence first, then prompt chunks."""
        b, n, plan = self.batch, 0, []
        order = sorted(requests, key=lambda r: r.fed < len(r.ids))  # generating ones first
        for req in order:
            if n >= self.n_batch:
                break
            if req.fed == len(req.ids):
                toks, pos0 = [req.last], len(req.ids) + req.generated - 1
            else:
                toks = req.ids[req.fed : req.fed + self.n_batch - n]
                pos0 = req.fed
                req.fed += len(toks)
            req.kv += toks
            for k, tok in enumerate(toks):
                b.token[n], b.pos[n], b.n_seq_id[n] = tok, pos0 + k, 1
                b.seq_id[n][0] = req.seq
                b.logits[n] = int(k == len(toks) - 1 and req.fed == len(req.ids))
                n += 1
            if b.logits[n - 1]:
                plan.append((req, n - 1))
        b.n_tokens = n
        return plan

    def _after(self, req: _Request, i: int, active: dict, free: list) -> None:
        """Read the output of batch row `i` for `req`: its letters' logits, or its next token."""
        ll = self.ll
        if req.letters is not None:
            logits = ll.llama_get_logits_ith(self.ctx, i)
            req.out.put(("logits", [float(logits[t]) for t in req.letters]))
            return self._finish(req, "stop", active, free)
        if req.generated < req.params.min_tokens:  # as transformers' min_new_tokens: no EOS yet
            logits = ll.llama_get_logits_ith(self.ctx, i)
            for t in req.stop_ids:
                logits[t] = float("-inf")
        tok = ll.llama_sampler_sample(req.sampler, self.ctx, i)
        req.generated += 1
        if tok in req.stop_ids or (not req.stop_ids and ll.llama_vocab_is_eog(self.vocab, tok)):
            return self._finish(req, "stop", active, free)
        req.out.put(("piece", self._piece(tok)))
        req.last = tok
        if req.generated >= req.max_tokens:
            self._finish(req, "length", active, free)

    def _piece(self, tok: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self.ll.llama_token_to_piece(self.vocab, tok, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.ll.llama_token_to_piece(self.vocab, tok, buf, len(buf), 0, False)
        return buf.raw[:n]

    def _finish(self, req: _Request, reason: str, active: dict, free: list) -> None:
        self.cached[req.seq] = req.kv  # its cells stay for the next request with this prefix
        self.ll.llama_sampler_free(req.sampler)
        del active[req.seq]
        free.append(req.seq)
        req.out.put(("end", reason))
