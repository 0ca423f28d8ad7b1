"""Practice mode over HTTP: POST /v1/practice/{start,hint,check,reveal}, GET /v1/practice/policy.

Sessions live in the server's memory (the newest MAX_SESSIONS). Every start, hint level, check
and reveal is written to the audit log (endpoint "practice", finish_reason the event) so a
teacher can review how a student got to an answer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field

from zephyr.errors import ZephyrError
from zephyr.tutor.practice import Session, load_gsm8k_bank, load_mcqa_bank, new_problem, recognise

MAX_SESSIONS = 1024


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str | None = Field(default=None, max_length=4000)
    choices: list[str] | None = Field(default=None, max_length=26)
    family: str | None = None  # no question: a new problem of this synthetic family
    seed: int | None = None


class StepRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(max_length=64)


class CheckRequest(StepRequest):
    answer: str = Field(max_length=500)


def bank(data_root: str | None) -> dict:
    """Known GSM8K and ARC items (empty without a data root)."""
    return {**load_gsm8k_bank(data_root), **load_mcqa_bank(data_root)}


def add_routes(
    app: Any,
    check_auth: Callable,
    read_body: Callable,
    audit_log: Callable,
    policy: Any,
    data_root: str | None = None,
) -> None:
    """Add the practice routes to the tutor's FastAPI app."""
    from zephyr.tutor.server import ApiError

    rules = policy.practice
    sessions: OrderedDict[str, Session] = OrderedDict()
    known_items: dict = {}

    def session(sid: str) -> Session:
        if sid not in sessions:
            raise ApiError(404, f"no practice session {sid!r}; start one first", "id", "not_found")
        return sessions[sid]

    async def log(sid: str, event: str, asked: str, said: str) -> None:
        messages = [{"role": "user", "content": asked}]
        await asyncio.to_thread(
            audit_log, endpoint="practice", messages=messages, response=said,
            finish_reason=event, flags=[{"rule": f"practice:{event}", "session": sid}],
        )  # fmt: skip

    @app.get("/v1/practice/policy")
    async def practice_policy(request: Request):
        check_auth(request)
        from zephyr.data.synth import FAMILIES

        return {"default_mode": rules.default_mode, "reveal_answer": rules.reveal_answer,
                "worked_example": rules.worked_example, "families": FAMILIES}  # fmt: skip

    @app.post("/v1/practice/start")
    async def practice_start(request: Request):
        check_auth(request)
        req: StartRequest = await read_body(request, StartRequest)
        if not known_items and data_root:
            known_items.update(await asyncio.to_thread(bank, data_root))
        try:
            if req.question and req.question.strip():
                known = recognise(req.question, req.choices, known_items)
            else:
                known = new_problem(req.family or "kinematics", req.seed)
        except ZephyrError as e:
            raise ApiError(422, str(e), "family", "invalid_value") from None
        sid = uuid.uuid4().hex[:16]
        sessions[sid] = Session(known, rules.reveal_answer, rules.worked_example)
        while len(sessions) > MAX_SESSIONS:
            sessions.popitem(last=False)
        body = {"id": sid, **sessions[sid].to_dict()}
        await log(sid, "start", known.question, f"source={known.source}")
        return body

    @app.post("/v1/practice/hint")
    async def practice_hint(request: Request):
        check_auth(request)
        req: StepRequest = await read_body(request, StepRequest)
        s = session(req.id)
        step = s.hint()
        await log(req.id, f"{step['kind']}:{step['level']}", s.known.question, step["text"])
        return {"id": req.id, **step}

    @app.post("/v1/practice/check")
    async def practice_check(request: Request):
        check_auth(request)
        req: CheckRequest = await read_body(request, CheckRequest)
        s = session(req.id)
        verdict = s.check(req.answer)
        await log(req.id, f"check:{verdict['verdict']}", req.answer, verdict["message"])
        return {"id": req.id, **verdict}

    @app.post("/v1/practice/reveal")
    async def practice_reveal(request: Request):
        check_auth(request)
        req: StepRequest = await read_body(request, StepRequest)
        s = session(req.id)
        step = s.answer()
        await log(req.id, f"reveal:{step['kind']}", s.known.question, step["text"])
        return {"id": req.id, **step}
