"""The tutor server's other routes: GET /health, /openapi.json, /v1/models, POST /v1/mcqa, the page.

`public` needs no token (the health probe, the web page); `api` asks for the bearer token.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse

from zephyr.tutor.generate import encode_chat
from zephyr.tutor.mcqa import answer_mcq, mcq_messages, say
from zephyr.tutor.schemas import McqaRequest
from zephyr.tutor.state import TutorState, require_token, tutor_state
from zephyr.tutor.validate import (
    ApiError,
    check_chars,
    check_context,
    check_model,
    merge_system,
    read_body,
)
from zephyr.tutor.worker import Job, outcome, run_job

STATIC = Path(__file__).with_name("static")
# Handlers that return a dict have no return annotation: FastAPI would make it a response model.
public = APIRouter()
api = APIRouter(dependencies=[Depends(require_token)])


@public.get("/health")
async def health(request: Request) -> JSONResponse:
    tutor = tutor_state(request)
    engine = tutor.engine
    ok = engine is not None and engine.alive()
    body = {
        "status": "ok" if ok else "down",
        "model": tutor.model_id,
        "inflight": engine.inflight if engine else None,
        "max_queue": tutor.config.max_queue,
        "served": engine.served if engine else 0,
        "audit_backlog": tutor.audit.backlog() if tutor.audit is not None else None,
    }
    return JSONResponse(body, status_code=200 if ok else 503)


@public.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@api.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@api.get("/v1/models")
async def models(request: Request):
    model_id = tutor_state(request).model_id
    return {
        "object": "list",
        "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "zephyr"}],
    }


@api.post("/v1/mcqa")
async def mcqa(request: Request):
    tutor = tutor_state(request)
    cfg = tutor.config
    req = await read_body(request, McqaRequest, cfg.max_body_bytes)
    check_model(req.model, tutor.model_id)
    check_chars(req.question, "question", cfg.max_message_chars)
    for i, c in enumerate(req.choices):
        check_chars(c, f"choices[{i}]", cfg.max_message_chars)
    if req.system is not None:
        check_chars(req.system, "system", cfg.max_message_chars)
    theirs = [{"role": "system", "content": req.system}] if req.system else []
    merged = merge_system(theirs, cfg.system, cfg.allow_system_override)
    system = merged[0]["content"] if merged else None
    messages = mcq_messages(req.question, req.choices, system)
    request.state.messages = messages
    await refuse_mcq(tutor, req, messages)
    work = partial(answer_mcq_job, tutor, req, system, messages)
    job = await run_job(request, tutor.engine, work, False, cfg)
    return {"object": "mcqa", "model": tutor.model_id, **(await outcome(job))}


async def refuse_mcq(tutor: TutorState, req: McqaRequest, messages: list[dict]) -> None:
    """A 400 with the policy's message when the question or a choice triggers an input rule."""
    client_text = "\n".join([req.question, *req.choices, req.system or ""])
    hits = await asyncio.to_thread(tutor.policy.check, client_text, "input")
    if not hits:
        return
    await asyncio.to_thread(
        tutor.audit_log, endpoint="mcqa", messages=messages, response=hits[0].message,
        status="refused", finish_reason="content_filter", latency_ms=0.0,
        flags=[h.to_dict() for h in hits],
    )  # fmt: skip
    err = ApiError(400, hits[0].message, "question", "content_filter")
    err.logged = True  # the refusal row above is this request's row
    raise err


def answer_mcq_job(
    tutor: TutorState, req: McqaRequest, system: str | None, messages: list[dict], job: Job
) -> None:
    """The worker's half: one forward pass picks the letter; audit, report 'done'."""
    # the whole prompt is counted before the forward pass, which cannot be interrupted
    check_context(len(encode_chat(tutor.tokenizer, messages)), tutor.context, "question")
    job.emit("ready")
    answer = answer_mcq(
        tutor.model, tutor.tokenizer, req.question, req.choices, system,
        tutor.policy.mcqa.debias, tutor.policy.mcqa.min_confidence,
    )  # fmt: skip
    answer["message"] = say(answer, req.choices)
    latency = (time.perf_counter() - job.enqueued) * 1000
    gone = job.cancel.is_set()  # the client left during the forward pass
    tutor.audit_log(
        endpoint="mcqa", messages=messages, response=answer["letter"],
        status="cancelled" if gone else "ok", finish_reason="cancelled" if gone else "stop",
        latency_ms=latency, completion_tokens=1,
    )  # fmt: skip
    job.emit("done", answer)
