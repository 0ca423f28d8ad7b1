"""OpenAI chat-completion bodies and their server-sent-event stream, fed by a worker Job."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from fastapi.responses import StreamingResponse

from zephyr.tutor.validate import ApiError
from zephyr.tutor.worker import Job

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = "data: [DONE]\n\n"


def _new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


@dataclass
class Reply:
    """One completion's id, time and model: shared by its body or every chunk of its stream."""

    model: str
    id: str = field(default_factory=_new_id)
    created: int = field(default_factory=lambda: int(time.time()))

    def completion(self, text: str, finish: str, usage: dict) -> dict:
        message = {"role": "assistant", "content": text}
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            ],
            "usage": usage,
        }

    def chunk(self, delta: dict, finish: str | None = None) -> str:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def usage_chunk(self, usage: dict) -> str:
        """The extra last chunk of `stream_options.include_usage`: no choices, the token counts."""
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        }
        return f"data: {json.dumps(body)}\n\n"


def refusal_stream(reply: Reply, refusal: str) -> StreamingResponse:
    """A refused streamed request: the policy's message as the whole answer."""

    async def refused() -> AsyncIterator[str]:
        yield reply.chunk({"role": "assistant", "content": ""})
        yield reply.chunk({"content": refusal})
        yield reply.chunk({}, "content_filter")
        yield DONE

    return StreamingResponse(refused(), media_type="text/event-stream")


def job_stream(
    job: Job,
    reply: Reply,
    include_usage: bool,
    on_error: Callable[[ApiError], Awaitable[None]],
) -> StreamingResponse:
    """The job's text as chunks as the worker writes it; closing the stream cancels the job."""
    events = job_events(job, reply, include_usage, on_error)
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


async def job_events(
    job: Job,
    reply: Reply,
    include_usage: bool,
    on_error: Callable[[ApiError], Awaitable[None]],
) -> AsyncIterator[str]:
    try:
        yield reply.chunk({"role": "assistant", "content": ""})
        while True:
            kind, data = await job.events.get()
            if kind == "text":
                yield reply.chunk({"content": data})
            elif kind == "refusal":
                yield reply.chunk({"content": f"\n\n{data}"})
            elif kind == "done":
                yield reply.chunk({}, data["finish"])
                if include_usage:
                    yield reply.usage_chunk(data["usage"])
                yield DONE
                return
            elif kind == "error":
                await on_error(data)
                yield f"data: {json.dumps({'error': {'message': data.message, 'code': data.code}})}\n\n"
                return
    finally:
        job.cancel.set()  # the client closed the stream (or it ended): stop generating
