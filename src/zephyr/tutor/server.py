"""An OpenAI-compatible tutor server: FastAPI app factory, worker thread, bounded queue, web page.

Routes: POST /v1/chat/completions (stream=true as server-sent events), GET /v1/models,
POST /v1/mcqa, GET /health, and the web page at /. The model runs in one worker thread (a CPU has
no spare cores for two generations at once); each request is a Job whose events reach the event
loop through an asyncio.Queue. More than `max_queue` jobs in flight gives 429, waiting longer
than `queue_timeout_s` for the worker gives 503, both with Retry-After. A closed stream sets the
job's cancel flag, which a StoppingCriteria reads at every token; so does a client that hangs up
on a plain request (a watcher polls for the disconnect), and a queued job whose client left is
skipped. Hostile input is refused before the model: `guard.py` (Host, Origin, security headers)
and `validate.py` (Content-Type, JSON depth and Unicode, stop strings, the context length).
Every request, refused or failed ones included, is one audit row.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect

from zephyr.tutor.audit import Audit
from zephyr.tutor.generate import TUTOR_SYSTEM, GenParams, encode_chat, generate
from zephyr.tutor.guard import Guard
from zephyr.tutor.mcqa import answer_mcq, mcq_messages, say
from zephyr.tutor.policy import Policy
from zephyr.tutor.practice import verify_reply
from zephyr.tutor.practice_api import add_routes as add_practice_routes
from zephyr.tutor.validate import (
    ApiError,
    check_content_type,
    check_context,
    check_stop,
    merge_system,
    parse_json,
)

STATIC = Path(__file__).with_name("static")
ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/mcqa": "mcqa"}  # audit names; others: the path
log = logging.getLogger("zephyr.tutor")
TYPE_TAGS = {"str", "int", "float", "bool", "none", "dict", "list"}


@dataclass
class ServeConfig:
    """Server settings (`zephyr serve` flags)."""

    token: str | None = None  # bearer token; None = no auth
    max_body_bytes: int = 256_000
    max_message_chars: int = 16_000
    max_messages: int = 64
    max_tokens_limit: int = 1024
    default_max_tokens: int = 256
    temperature: float = 0.3  # used when a request sends none: small models ramble when hot
    top_p: float = 0.95
    max_queue: int = 16  # jobs queued or running before 429
    queue_timeout_s: float = 30.0  # longer wait for the worker gives 503
    retry_after_s: int = 2
    system: str | None = TUTOR_SYSTEM
    allow_system_override: bool = False  # False: a client's system turn is appended to ours
    max_stops: int = 4
    max_stop_chars: int = 64  # the stream holds back this many characters
    allowed_hosts: list[str] = field(default_factory=list)  # Host names besides the bound address
    allowed_origins: list[str] = field(default_factory=list)  # cross-origin pages allowed to call
    disconnect_poll_s: float = 0.1
    calculator: bool = False  # complete <<expr= exactly (on when the model was trained with it)
    show_calc: bool = False  # keep the <<expr=result>> annotations in the answers
    practice_data: str | None = None  # a ../shared/data layout: GSM8K/ARC items practice can check


# ---- request schemas (strict: "5" is not a number; extra OpenAI fields are ignored) ----------


class TextPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return (
            self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        )


class ChatRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    min_tokens: int | None = Field(None, ge=0)  # vLLM's extension; the bench fixes lengths with it
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)  # torch's seed is 64-bit
    n: int = Field(1, ge=1, le=1)


class McqaRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    model: str | None = None
    question: str = Field(min_length=1)
    choices: list[str] = Field(min_length=2, max_length=26)
    system: str | None = None


# ---- the worker ------------------------------------------------------------------------------


class Job:
    """One request's work, run in the worker thread; events flow back through an asyncio.Queue."""

    def __init__(self, fn: Callable[[Job], None], loop: asyncio.AbstractEventLoop):
        self.fn, self.loop = fn, loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancel = threading.Event()
        self.lock = threading.Lock()
        self.started = False
        self.enqueued = time.perf_counter()
        self.watcher: asyncio.Task | None = None  # the server's disconnect watcher

    def emit(self, kind: str, data: Any = None) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, data))


class Engine:
    """A bounded job queue in front of one worker thread that owns the model."""

    def __init__(self, max_queue: int, workers: int = 1):
        self.max_queue = max_queue
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.inflight = 0
        self.served = 0
        self.lock = threading.Lock()
        # one worker per llama.cpp sequence slot: their requests share the engine's batches
        self.threads = [
            threading.Thread(target=self._work, name=f"zephyr-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self.threads:
            t.start()

    def submit(self, fn: Callable[[Job], None], retry_after: int) -> Job:
        with self.lock:
            if self.inflight >= self.max_queue:
                err = ApiError(
                    429,
                    f"the server is busy ({self.inflight} requests in flight); retry shortly",
                    code="queue_full",
                )
                err.headers["Retry-After"] = str(retry_after)
                raise err
            self.inflight += 1
        job = Job(fn, asyncio.get_running_loop())
        self.jobs.put(job)
        return job

    def alive(self) -> bool:
        return all(t.is_alive() for t in self.threads)

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)
        for t in self.threads:
            t.join(timeout=10)

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                with job.lock:  # a job that timed out in the queue is skipped, never half-run
                    job.started = not job.cancel.is_set()
                if job.started:
                    job.emit("started")
                    job.fn(job)
            except ApiError as e:
                job.emit("error", e)
            except Exception as e:  # one bad request must not kill the worker
                log.exception("generation failed")
                job.emit(
                    "error",
                    ApiError(
                        500, f"generation failed: {type(e).__name__}: {e}", code="server_error"
                    ),
                )
            finally:
                with self.lock:
                    self.inflight -= 1
                    self.served += 1


# ---- the app ---------------------------------------------------------------------------------


def create_app(
    model: Any,
    tokenizer: Any,
    model_id: str,
    config: ServeConfig | None = None,
    audit: Audit | None = None,
    policy: Policy | None = None,
):
    """The FastAPI app serving one loaded model."""
    cfg = config or ServeConfig()
    policy = policy or Policy.empty()
    context = int(getattr(model.config, "max_position_embeddings", 0) or 0) or None
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["engine"] = Engine(cfg.max_queue, workers=getattr(model, "parallel", 1))
        yield
        state["engine"].close()

    # No /docs (Swagger UI loads from a CDN); /openapi.json is a route below, behind the token.
    app = FastAPI(
        title="Zephyr tutor", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.config, app.state.audit, app.state.model_id = cfg, audit, model_id

    def audit_log(**row: Any) -> None:
        if audit is not None:
            audit.log(model=model_id, **row)

    async def audit_refusal(scope: dict, exc: ApiError, messages: list[dict] | None = None):
        """Every refused or failed request is a row too: status `error` with its HTTP status."""
        path = scope.get("path", "")
        status = "cancelled" if exc.status == 499 else "error"
        await asyncio.to_thread(
            audit_log, endpoint=ENDPOINTS.get(path, path), messages=messages or [],
            response=exc.message, status=status, finish_reason=exc.code or status,
            http_status=exc.status,
        )  # fmt: skip

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        if not exc.logged:
            await audit_refusal(request.scope, exc, getattr(request.state, "messages", None))
        return exc.response()

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):
        log.exception("request failed")
        err = ApiError(500, f"internal error: {type(exc).__name__}", code="server_error")
        await audit_refusal(request.scope, err, getattr(request.state, "messages", None))
        return err.response()

    if cfg.allowed_origins:  # pages on these origins may call the API from a browser
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cfg.allowed_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(
        Guard,
        allowed_hosts=cfg.allowed_hosts,
        allowed_origins=cfg.allowed_origins,
        on_refuse=audit_refusal,
    )

    def check_auth(request: Request) -> None:
        if not cfg.token:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), cfg.token.encode()
        )
        if not ok:
            err = ApiError(
                401,
                "missing or wrong bearer token; send 'Authorization: Bearer <token>'",
                code="invalid_api_key",
            )
            err.headers["WWW-Authenticate"] = "Bearer"
            raise err

    async def read_body(request: Request, schema: type[BaseModel]) -> Any:
        check_content_type(request.headers.get("content-type"))
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > cfg.max_body_bytes:
            raise ApiError(
                413,
                f"the request body is {declared} bytes; the limit is {cfg.max_body_bytes}",
                "body",
                "body_too_large",
            )
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > cfg.max_body_bytes:
                    raise ApiError(
                        413,
                        f"the request body is over the limit of {cfg.max_body_bytes} bytes",
                        "body",
                        "body_too_large",
                    )
        except ClientDisconnect:
            raise ApiError(
                499, "the client left while sending the body", "body", "client_closed"
            ) from None
        data = parse_json(bytes(body))
        if not isinstance(data, dict):
            raise ApiError(
                422,
                f"the request body must be a JSON object, got {type(data).__name__}",
                "body",
                "invalid_type",
            )
        try:
            return schema.model_validate(data)
        except ValidationError as e:
            first = e.errors()[0]
            # union members add their type to the location ("content.str"): keep field names only
            loc = [
                str(p)
                for p in first["loc"]
                if not (isinstance(p, str) and (p in TYPE_TAGS or "[" in p))
            ]
            field = ".".join(loc) or "body"
            raise ApiError(422, f"{field}: {first['msg']}", field, "invalid_value") from None

    def check_model(name: str | None) -> None:
        if name and name != model_id:
            raise ApiError(
                404,
                f"model '{name}' is not served here; use '{model_id}' (see GET /v1/models)",
                "model",
                "model_not_found",
            )

    def check_chars(text: str, field: str) -> None:
        if len(text) > cfg.max_message_chars:
            raise ApiError(
                413,
                f"{field} has {len(text)} characters; the limit is {cfg.max_message_chars}",
                field,
                "message_too_long",
            )

    async def start(job: Job) -> None:
        """Wait for the worker to take the job (503 after queue_timeout_s), then for 'ready'.

        A client that hangs up while its job is queued gets 499 (logged `cancelled`) and the
        worker skips the job; once started, the cancel flag stops it at the next token.
        """
        deadline = time.monotonic() + cfg.queue_timeout_s
        while True:
            left = deadline - time.monotonic() if deadline else None
            try:
                kind, data = await asyncio.wait_for(job.events.get(), left)
            except TimeoutError:
                with job.lock:
                    if not job.started:
                        job.cancel.set()
                        err = ApiError(
                            503,
                            f"no worker free within {cfg.queue_timeout_s:g} s; retry shortly",
                            code="queue_timeout",
                        )
                        err.headers["Retry-After"] = str(cfg.retry_after_s)
                        raise err from None
                deadline = None
                continue
            if kind == "disconnected":
                with job.lock:
                    if not job.started:  # the worker reads the flag under this lock: never runs
                        raise ApiError(
                            499, "the client closed the connection before its turn",
                            code="client_closed",
                        )  # fmt: skip
            elif kind == "error":
                raise data
            elif kind == "ready":
                return

    async def watch(request: Request, job: Job) -> None:
        """Cancel the job when the client hangs up (starlette does not cancel the handler)."""
        while not await request.is_disconnected():
            await asyncio.sleep(cfg.disconnect_poll_s)
        job.cancel.set()
        job.events.put_nowait(("disconnected", None))

    async def run_job(request: Request, work: Callable[[Job], None], stream: bool) -> Job:
        """Queue `work`, cancel it if the client leaves, and wait until the worker is ready."""
        job = state["engine"].submit(work, cfg.retry_after_s)
        job.watcher = asyncio.create_task(watch(request, job))
        try:
            await start(job)
        except BaseException:
            job.cancel.set()
            job.watcher.cancel()
            raise
        if stream:  # from here the StreamingResponse notices the disconnect itself
            job.watcher.cancel()
        return job

    async def outcome(job: Job) -> Any:
        """The job's 'done' data (non-streamed requests); the cancel flag is set on the way out."""
        try:
            while True:
                kind, data = await job.events.get()
                if kind == "done":
                    return data
                if kind == "error":
                    raise data
        finally:
            job.cancel.set()
            job.watcher.cancel()

    # ---- routes ------------------------------------------------------------------------------

    @app.get("/health")
    async def health():
        engine = state.get("engine")
        ok = engine is not None and engine.alive()
        body = {
            "status": "ok" if ok else "down",
            "model": model_id,
            "inflight": engine.inflight if engine else None,
            "max_queue": cfg.max_queue,
            "served": engine.served if engine else 0,
            "audit_backlog": audit.backlog() if audit is not None else None,
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request):
        check_auth(request)
        return JSONResponse(app.openapi())

    @app.get("/v1/models")
    async def models(request: Request):
        check_auth(request)
        return {
            "object": "list",
            "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "zephyr"}],
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        check_auth(request)
        req: ChatRequest = await read_body(request, ChatRequest)
        check_model(req.model)
        if len(req.messages) > cfg.max_messages:
            raise ApiError(
                422,
                f"messages has {len(req.messages)} turns; the limit is {cfg.max_messages}",
                "messages",
                "too_many_messages",
            )
        messages = []
        for i, m in enumerate(req.messages):
            check_chars(m.text(), f"messages[{i}].content")
            messages.append(
                {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            )
        client_turns = messages
        max_tokens = req.max_completion_tokens or req.max_tokens or cfg.default_max_tokens
        if max_tokens > cfg.max_tokens_limit:
            raise ApiError(
                422,
                f"max_tokens is {max_tokens}; the limit is {cfg.max_tokens_limit}",
                "max_tokens",
                "max_tokens_too_large",
            )
        stop = check_stop(req.stop, cfg.max_stops, cfg.max_stop_chars)
        params = GenParams(
            max_tokens=max_tokens,
            temperature=cfg.temperature if req.temperature is None else req.temperature,
            top_p=cfg.top_p if req.top_p is None else req.top_p,
            stop=stop,
            min_tokens=req.min_tokens or 0,
            seed=req.seed,
            calculator=cfg.calculator,
            show_calc=cfg.show_calc,
        )
        # the student's words, for Zephyr's exact check of the model's Answer: line
        user_text = "\n".join(m["content"] for m in client_turns if m["role"] == "user")
        messages = merge_system(messages, cfg.system, cfg.allow_system_override)
        request.state.messages = messages  # for the audit row if the request fails later
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        usage_in_stream = bool((req.stream_options or {}).get("include_usage"))

        def completion(text: str, finish: str, usage: dict) -> dict:
            message = {"role": "assistant", "content": text}
            return {
                "id": rid,
                "object": "chat.completion",
                "created": created,
                "model": model_id,
                "choices": [
                    {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
                ],
                "usage": usage,
            }

        def chunk(delta: dict, finish: str | None = None) -> str:
            body = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model_id,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
                ],
            }
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        # Every turn the client sent is checked before the model sees it (off the event loop:
        # the searches are time-bounded, but an operator's file may hold many).
        client_text = "\n".join(m["content"] for m in client_turns)
        hits = await asyncio.to_thread(policy.check, client_text, "input")
        if hits:
            refusal = hits[0].message
            usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            await asyncio.to_thread(
                audit_log, endpoint="chat", messages=messages, response=refusal, status="refused",
                finish_reason="content_filter", latency_ms=0.0, prompt_tokens=0, completion_tokens=0,
                flags=[h.to_dict() for h in hits],
            )  # fmt: skip
            if not req.stream:
                return completion(refusal, "content_filter", usage)

            async def refused():
                yield chunk({"role": "assistant", "content": ""})
                yield chunk({"content": refusal})
                yield chunk({}, "content_filter")
                yield "data: [DONE]\n\n"

            return StreamingResponse(refused(), media_type="text/event-stream")

        def work(job: Job) -> None:
            ids = encode_chat(tokenizer, messages)
            check_context(len(ids), context, "messages")
            budget = min(params.max_tokens, context - len(ids)) if context else params.max_tokens
            job.emit("ready")
            said, flags = [""], []

            def on_text(piece: str) -> None:
                if flags:
                    return
                said[0] += piece
                hits = policy.check(said[0], "output")
                if hits:  # stop the model; the piece that completed the match is never sent
                    flags.extend(hits)
                    job.cancel.set()
                    return
                job.emit("text", piece)

            p = GenParams(**{**params.__dict__, "max_tokens": budget})
            result = generate(
                model, tokenizer, messages, p, on_text, cancel=job.cancel, input_ids=ids
            )
            finish, status = result.finish_reason, "ok"
            note = None if flags else verify_reply(user_text, result.text)
            if note:  # Zephyr's exact check of the model's Answer: line
                job.emit("text", f"\n\n{note}")
                result.text += f"\n\n{note}"
            if flags:
                finish, status = "content_filter", "refused"
                job.emit("refusal", flags[0].message)
            elif finish == "cancelled":
                status = "cancelled"
            latency = (time.perf_counter() - job.enqueued) * 1000
            audit_log(
                endpoint="chat", messages=messages, response=result.text, status=status,
                finish_reason=finish, latency_ms=latency, prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens, flags=[f.to_dict() for f in flags],
            )  # fmt: skip
            usage = {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
            }
            text = flags[0].message if flags else result.text
            job.emit("done", {"finish": finish, "usage": usage, "text": text})

        job = await run_job(request, work, req.stream)
        if not req.stream:
            data = await outcome(job)  # a client that went away stops the generation too
            return completion(data["text"], data["finish"], data["usage"])

        async def events() -> Any:
            try:
                yield chunk({"role": "assistant", "content": ""})
                while True:
                    kind, data = await job.events.get()
                    if kind == "text":
                        yield chunk({"content": data})
                    elif kind == "refusal":
                        yield chunk({"content": f"\n\n{data}"})
                    elif kind == "done":
                        yield chunk({}, data["finish"])
                        if usage_in_stream:
                            body = {
                                "id": rid,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": model_id,
                                "choices": [],
                                "usage": data["usage"],
                            }
                            yield f"data: {json.dumps(body)}\n\n"
                        yield "data: [DONE]\n\n"
                        return
                    elif kind == "error":
                        await audit_refusal(request.scope, data, messages)
                        yield f"data: {json.dumps({'error': {'message': data.message, 'code': data.code}})}\n\n"
                        return
            finally:
                job.cancel.set()  # the client closed the stream (or it ended): stop generating

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    @app.post("/v1/mcqa")
    async def mcqa(request: Request):
        check_auth(request)
        req: McqaRequest = await read_body(request, McqaRequest)
        check_model(req.model)
        check_chars(req.question, "question")
        for i, c in enumerate(req.choices):
            check_chars(c, f"choices[{i}]")
        if req.system is not None:
            check_chars(req.system, "system")
        theirs = [{"role": "system", "content": req.system}] if req.system else []
        merged = merge_system(theirs, cfg.system, cfg.allow_system_override)
        system = merged[0]["content"] if merged else None
        messages = mcq_messages(req.question, req.choices, system)
        request.state.messages = messages
        client_text = "\n".join([req.question, *req.choices, req.system or ""])
        hits = await asyncio.to_thread(policy.check, client_text, "input")
        if hits:
            await asyncio.to_thread(
                audit_log, endpoint="mcqa", messages=messages, response=hits[0].message,
                status="refused", finish_reason="content_filter", latency_ms=0.0,
                flags=[h.to_dict() for h in hits],
            )  # fmt: skip
            err = ApiError(400, hits[0].message, "question", "content_filter")
            err.logged = True  # the refusal row above is this request's row
            raise err

        def work(job: Job) -> None:
            # the whole prompt is counted before the forward pass, which cannot be interrupted
            check_context(len(encode_chat(tokenizer, messages)), context, "question")
            job.emit("ready")
            answer = answer_mcq(
                model, tokenizer, req.question, req.choices, system,
                policy.mcqa.debias, policy.mcqa.min_confidence,
            )  # fmt: skip
            answer["message"] = say(answer, req.choices)
            latency = (time.perf_counter() - job.enqueued) * 1000
            gone = job.cancel.is_set()  # the client left during the forward pass
            audit_log(
                endpoint="mcqa", messages=messages, response=answer["letter"],
                status="cancelled" if gone else "ok", finish_reason="cancelled" if gone else "stop",
                latency_ms=latency, completion_tokens=1,
            )  # fmt: skip
            job.emit("done", answer)

        job = await run_job(request, work, stream=False)
        return {"object": "mcqa", "model": model_id, **(await outcome(job))}

    add_practice_routes(app, check_auth, read_body, audit_log, policy, cfg.practice_data)

    @app.get("/")
    async def index():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def model_name(spec: str) -> str:
    """The id the server reports: the spec's last path part (`runs/demo/dpo/model` -> `dpo`)."""
    p = Path(spec)
    if p.name == "model" and p.parent.name:
        return p.parent.name
    return p.stem if p.suffix == ".gguf" else (p.name or str(spec))


@contextlib.contextmanager
def running(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run `app` under uvicorn in a background thread; yields its base URL (port 0 = a free one)."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="zephyr-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the tutor server did not start")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
