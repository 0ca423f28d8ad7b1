"""Practice mode over HTTP: POST /v1/practice/{start,hint,check,reveal}, GET /v1/practice/policy.

Sessions live in the server's memory (the newest MAX_SESSIONS). Every start, hint level, check
and reveal is written to the audit log (endpoint "practice", finish_reason the event) so a
teacher can review how a student got to an answer. The sessions are `request.app.state.practice`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from zephyr.errors import ZephyrError
from zephyr.tutor.policy import PracticePolicy
from zephyr.tutor.practice import Session, load_gsm8k_bank, load_mcqa_bank, new_problem, recognise
from zephyr.tutor.state import require_token, tutor_state
from zephyr.tutor.validate import ApiError, Schema, read_body

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


@dataclass
class PracticeState:
    """The practice rules, the open sessions (newest last) and the known items, loaded once."""

    rules: PracticePolicy
    data_root: str | None = None
    sessions: OrderedDict[str, Session] = field(default_factory=OrderedDict)
    known_items: dict = field(default_factory=dict)

    def session(self, sid: str) -> Session:
        if sid not in self.sessions:
            raise ApiError(404, f"no practice session {sid!r}; start one first", "id", "not_found")
        return self.sessions[sid]

    def open(self, session: Session) -> str:
        """A new session's id; the oldest sessions go past MAX_SESSIONS."""
        sid = uuid.uuid4().hex[:16]
        self.sessions[sid] = session
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        return sid


# Handlers that return a dict have no return annotation: FastAPI would make it a response model.
router = APIRouter(dependencies=[Depends(require_token)])


def practice_state(request: Request) -> PracticeState:
    return request.app.state.practice


async def log(request: Request, sid: str, event: str, asked: str, said: str) -> None:
    """One practice event as an audit row (endpoint `practice`, finish_reason the event)."""
    messages = [{"role": "user", "content": asked}]
    await asyncio.to_thread(
        tutor_state(request).audit_log, endpoint="practice", messages=messages, response=said,
        finish_reason=event, flags=[{"rule": f"practice:{event}", "session": sid}],
    )  # fmt: skip


async def read(request: Request, schema: type[Schema]) -> Schema:
    return await read_body(request, schema, tutor_state(request).config.max_body_bytes)


@router.get("/v1/practice/policy")
async def practice_policy(request: Request):
    from zephyr.data.synth import FAMILIES

    rules = practice_state(request).rules
    return {"default_mode": rules.default_mode, "reveal_answer": rules.reveal_answer,
            "worked_example": rules.worked_example, "families": FAMILIES}  # fmt: skip


@router.post("/v1/practice/start")
async def practice_start(request: Request):
    practice = practice_state(request)
    req = await read(request, StartRequest)
    if not practice.known_items and practice.data_root:
        practice.known_items.update(await asyncio.to_thread(bank, practice.data_root))
    try:
        if req.question and req.question.strip():
            known = recognise(req.question, req.choices, practice.known_items)
        else:
            known = new_problem(req.family or "kinematics", req.seed)
    except ZephyrError as e:
        raise ApiError(422, str(e), "family", "invalid_value") from None
    rules = practice.rules
    sid = practice.open(Session(known, rules.reveal_answer, rules.worked_example))
    body = {"id": sid, **practice.sessions[sid].to_dict()}
    await log(request, sid, "start", known.question, f"source={known.source}")
    return body


@router.post("/v1/practice/hint")
async def practice_hint(request: Request):
    req = await read(request, StepRequest)
    s = practice_state(request).session(req.id)
    step = s.hint()
    await log(request, req.id, f"{step['kind']}:{step['level']}", s.known.question, step["text"])
    return {"id": req.id, **step}


@router.post("/v1/practice/check")
async def practice_check(request: Request):
    req = await read(request, CheckRequest)
    s = practice_state(request).session(req.id)
    verdict = s.check(req.answer)
    await log(request, req.id, f"check:{verdict['verdict']}", req.answer, verdict["message"])
    return {"id": req.id, **verdict}


@router.post("/v1/practice/reveal")
async def practice_reveal(request: Request):
    req = await read(request, StepRequest)
    s = practice_state(request).session(req.id)
    step = s.answer()
    await log(request, req.id, f"reveal:{step['kind']}", s.known.question, step["text"])
    return {"id": req.id, **step}
