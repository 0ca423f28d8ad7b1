"""POST /v1/chat/completions: OpenAI-compatible chat, streamed as server-sent events on request.

The request is checked (validate.py) and the client's turns screened by the policy before the
model sees them; the worker then generates under the policy's output rules, appends Zephyr's
exact check of the answer, and writes the audit row.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from functools import partial

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from zephyr.tutor.generate import GenParams, GenResult, encode_chat, generate
from zephyr.tutor.policy import Policy, Trigger
from zephyr.tutor.practice import verify_reply
from zephyr.tutor.schemas import ChatRequest
from zephyr.tutor.state import ServeConfig, TutorState, require_token, tutor_state
from zephyr.tutor.streaming import Reply, job_stream, refusal_stream
from zephyr.tutor.validate import (
    check_chars,
    check_context,
    check_count,
    check_max_tokens,
    check_model,
    check_stop,
    merge_system,
    read_body,
)
from zephyr.tutor.worker import Job, outcome, run_job

# Handlers that return a dict have no return annotation: FastAPI would make it a response model.
router = APIRouter(dependencies=[Depends(require_token)])
NO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


@router.post("/v1/chat/completions")
async def chat(request: Request):
    tutor = tutor_state(request)
    cfg = tutor.config
    req = await read_body(request, ChatRequest, cfg.max_body_bytes)
    check_model(req.model, tutor.model_id)
    client_turns = checked_turns(req, cfg)
    params = gen_params(req, cfg)
    # the student's words, for Zephyr's exact check of the model's Answer: line
    user_text = "\n".join(m["content"] for m in client_turns if m["role"] == "user")
    messages = merge_system(client_turns, cfg.system, cfg.allow_system_override)
    request.state.messages = messages  # for the audit row if the request fails later
    reply = Reply(tutor.model_id)
    # Every turn the client sent is checked before the model sees it (off the event loop:
    # the searches are time-bounded, but an operator's file may hold many).
    client_text = "\n".join(m["content"] for m in client_turns)
    hits = await asyncio.to_thread(tutor.policy.check, client_text, "input")
    if hits:
        return await refuse(tutor, reply, messages, hits, req.stream)
    work = partial(answer, tutor, messages, params, user_text)
    job = await run_job(request, tutor.engine, work, req.stream, cfg)
    if not req.stream:
        data = await outcome(job)  # a client that went away stops the generation too
        return reply.completion(data["text"], data["finish"], data["usage"])
    include_usage = bool((req.stream_options or {}).get("include_usage"))
    on_error = partial(tutor.audit_refusal, request.scope, messages=messages)
    return job_stream(job, reply, include_usage, on_error)


def checked_turns(req: ChatRequest, cfg: ServeConfig) -> list[dict]:
    """The client's turns as plain dicts (`developer` is a system turn), each within the limits."""
    check_count(len(req.messages), cfg.max_messages)
    turns = []
    for i, m in enumerate(req.messages):
        check_chars(m.text(), f"messages[{i}].content", cfg.max_message_chars)
        turns.append({"role": "system" if m.role == "developer" else m.role, "content": m.text()})
    return turns


def gen_params(req: ChatRequest, cfg: ServeConfig) -> GenParams:
    """The sampling settings: the request's, else the server's defaults."""
    max_tokens = req.max_completion_tokens or req.max_tokens or cfg.default_max_tokens
    check_max_tokens(max_tokens, cfg.max_tokens_limit)
    stop = check_stop(req.stop, cfg.max_stops, cfg.max_stop_chars)
    return GenParams(
        max_tokens=max_tokens,
        temperature=cfg.temperature if req.temperature is None else req.temperature,
        top_p=cfg.top_p if req.top_p is None else req.top_p,
        stop=stop,
        min_tokens=req.min_tokens or 0,
        seed=req.seed,
        calculator=cfg.calculator,
        show_calc=cfg.show_calc,
    )


async def refuse(
    tutor: TutorState, reply: Reply, messages: list[dict], hits: list[Trigger], stream: bool
) -> dict | StreamingResponse:
    """The policy's message as the answer to a refused input, logged as `refused`."""
    refusal = hits[0].message
    await asyncio.to_thread(
        tutor.audit_log, endpoint="chat", messages=messages, response=refusal, status="refused",
        finish_reason="content_filter", latency_ms=0.0, prompt_tokens=0, completion_tokens=0,
        flags=[h.to_dict() for h in hits],
    )  # fmt: skip
    if not stream:
        return reply.completion(refusal, "content_filter", NO_USAGE)
    return refusal_stream(reply, refusal)


def answer(
    tutor: TutorState, messages: list[dict], params: GenParams, user_text: str, job: Job
) -> None:
    """The worker's half: generate within the context, check the answer, audit, report 'done'."""
    ids = encode_chat(tutor.tokenizer, messages)
    check_context(len(ids), tutor.context, "messages")
    budget = (
        min(params.max_tokens, tutor.context - len(ids)) if tutor.context else params.max_tokens
    )
    job.emit("ready")
    screen = OutputScreen(tutor.policy, job)
    result = generate(
        tutor.model, tutor.tokenizer, messages, dataclasses.replace(params, max_tokens=budget),
        screen.on_text, cancel=job.cancel, input_ids=ids,
    )  # fmt: skip
    flags = screen.flags
    note = None if flags else verify_reply(user_text, result.text)
    if note:  # Zephyr's exact check of the model's Answer: line
        job.emit("text", f"\n\n{note}")
        result.text += f"\n\n{note}"
    finish, status = finish_and_status(result, flags)
    if flags:
        job.emit("refusal", flags[0].message)
    tutor.audit_log(
        endpoint="chat", messages=messages, response=result.text, status=status,
        finish_reason=finish, latency_ms=(time.perf_counter() - job.enqueued) * 1000,
        prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
        flags=[f.to_dict() for f in flags],
    )  # fmt: skip
    text = flags[0].message if flags else result.text
    job.emit("done", {"finish": finish, "usage": usage(result), "text": text})


class OutputScreen:
    """Passes the model's text on to the job until the policy's output rules trigger."""

    def __init__(self, policy: Policy, job: Job):
        self.policy, self.job = policy, job
        self.said = ""
        self.flags: list[Trigger] = []

    def on_text(self, piece: str) -> None:
        if self.flags:
            return
        self.said += piece
        hits = self.policy.check(self.said, "output")
        if hits:  # stop the model; the piece that completed the match is never sent
            self.flags.extend(hits)
            self.job.cancel.set()
            return
        self.job.emit("text", piece)


def finish_and_status(result: GenResult, flags: list[Trigger]) -> tuple[str, str]:
    """The finish_reason the client sees and the audit status."""
    if flags:
        return "content_filter", "refused"
    if result.finish_reason == "cancelled":
        return result.finish_reason, "cancelled"
    return result.finish_reason, "ok"


def usage(result: GenResult) -> dict:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }
