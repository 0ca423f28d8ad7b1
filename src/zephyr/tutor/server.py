"""An OpenAI-compatible tutor server: FastAPI app factory, worker thread, bounded queue, web page.

Routes: POST /v1/chat/completions (stream=true as server-sent events), GET /v1/models,
POST /v1/mcqa, GET /health, and the web page at /. The model runs in one worker thread (a CPU has
no spare cores for two generations at once); each request is a Job whose events reach the event
loop through an asyncio.Queue. More than `max_queue` jobs in flight gives 429, waiting longer
than `queue_timeout_s` for the worker gives 503, both with Retry-After. A closed stream sets the
job's cancel flag, which a StoppingCriteria reads at every token.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zephyr.tutor.audit import Audit
from zephyr.tutor.generate import TUTOR_SYSTEM, GenParams, encode_chat, generate, with_system
from zephyr.tutor.mcqa import answer_mcq, mcq_messages
from zephyr.tutor.policy import Policy

STATIC = Path(__file__).with_name("static")
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


class ApiError(Exception):
    """An error answered as OpenAI-style JSON: {"error": {message, type, param, code}}."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers: dict[str, str] = {}

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        if self.status == 429:
            kind = "rate_limit_error"
        body = {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


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
    seed: int | None = None
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

    app = FastAPI(title="Zephyr tutor", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.config, app.state.audit, app.state.model_id = cfg, audit, model_id

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return exc.response()

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        # The page and its script come from this server only: no CDN, no inline code.
        response.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self' data:"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

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
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > cfg.max_body_bytes:
            raise ApiError(
                413,
                f"the request body is {declared} bytes; the limit is {cfg.max_body_bytes}",
                "body",
                "body_too_large",
            )
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > cfg.max_body_bytes:
                raise ApiError(
                    413,
                    f"the request body is over the limit of {cfg.max_body_bytes} bytes",
                    "body",
                    "body_too_large",
                )
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(
                400,
                f"the request body is not valid JSON ({e}); send a JSON object",
                "body",
                "invalid_json",
            ) from None
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
        """Wait for the worker to take the job (503 after queue_timeout_s), then for 'ready'."""
        try:
            kind, data = await asyncio.wait_for(job.events.get(), cfg.queue_timeout_s)
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
            kind, data = await job.events.get()
        if kind == "started":
            kind, data = await job.events.get()
        if kind == "error":
            raise data
        assert kind == "ready", kind

    def audit_log(**row: Any) -> None:
        if audit is not None:
            audit.log(model=model_id, **row)

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
        }
        return JSONResponse(body, status_code=200 if ok else 503)

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
        max_tokens = req.max_completion_tokens or req.max_tokens or cfg.default_max_tokens
        if max_tokens > cfg.max_tokens_limit:
            raise ApiError(
                422,
                f"max_tokens is {max_tokens}; the limit is {cfg.max_tokens_limit}",
                "max_tokens",
                "max_tokens_too_large",
            )
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if len(stop) > 4:
            raise ApiError(
                422, f"stop has {len(stop)} strings; at most 4 are allowed", "stop", "invalid_value"
            )
        params = GenParams(
            max_tokens=max_tokens,
            temperature=cfg.temperature if req.temperature is None else req.temperature,
            top_p=cfg.top_p if req.top_p is None else req.top_p,
            stop=stop,
            min_tokens=req.min_tokens or 0,
            seed=req.seed,
        )
        messages = with_system(messages, cfg.system)
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

        # The student's message is checked before the model sees it: a refusal costs no generation.
        user_text = "\n".join(m["content"] for m in messages if m["role"] == "user")
        hits = policy.check(user_text, "input")
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
            budget = params.max_tokens
            if context:
                if len(ids) >= context:
                    raise ApiError(
                        413,
                        f"the conversation is {len(ids)} tokens; the model's context is {context}",
                        "messages",
                        "context_length_exceeded",
                    )
                budget = min(budget, context - len(ids))
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

        engine: Engine = state["engine"]
        job = engine.submit(work, cfg.retry_after_s)
        try:
            await start(job)
        except BaseException:
            job.cancel.set()
            raise

        if not req.stream:
            try:
                while True:
                    kind, data = await job.events.get()
                    if kind == "done":
                        return completion(data["text"], data["finish"], data["usage"])
                    if kind == "error":
                        raise data
            finally:
                job.cancel.set()  # a client that went away stops the generation too

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
        system = req.system if req.system is not None else cfg.system
        messages = mcq_messages(req.question, req.choices, system)
        hits = policy.check("\n".join([req.question, *req.choices]), "input")
        if hits:
            await asyncio.to_thread(
                audit_log, endpoint="mcqa", messages=messages, response=hits[0].message,
                status="refused", finish_reason="content_filter", latency_ms=0.0,
                flags=[h.to_dict() for h in hits],
            )  # fmt: skip
            raise ApiError(400, hits[0].message, "question", "content_filter")

        def work(job: Job) -> None:
            job.emit("ready")
            answer = answer_mcq(model, tokenizer, req.question, req.choices, system)
            latency = (time.perf_counter() - job.enqueued) * 1000
            audit_log(
                endpoint="mcqa", messages=messages, response=answer["letter"],
                finish_reason="stop", latency_ms=latency, completion_tokens=1,
            )  # fmt: skip
            job.emit("done", answer)

        job = state["engine"].submit(work, cfg.retry_after_s)
        try:
            await start(job)
            while True:
                kind, data = await job.events.get()
                if kind == "done":
                    return {"object": "mcqa", "model": model_id, **data}
                if kind == "error":
                    raise data
        finally:
            job.cancel.set()

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
