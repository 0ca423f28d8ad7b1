"""The tutor server's settings and the state its routes share (`request.app.state.tutor`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from zephyr.tutor.audit import Audit
from zephyr.tutor.generate import TUTOR_SYSTEM
from zephyr.tutor.guard import check_token
from zephyr.tutor.policy import Policy
from zephyr.tutor.validate import ApiError
from zephyr.tutor.worker import Engine

ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/mcqa": "mcqa"}  # audit names; others: the path


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


@dataclass
class TutorState:
    """One served model with its settings, audit log and policy; the engine exists while running."""

    model: Any
    tokenizer: Any
    model_id: str
    config: ServeConfig
    audit: Audit | None
    policy: Policy
    engine: Engine | None = None  # started and closed by the app's lifespan
    context: int | None = field(init=False)  # the model's context in tokens, None when unknown

    def __post_init__(self) -> None:
        self.context = int(getattr(self.model.config, "max_position_embeddings", 0) or 0) or None

    def audit_log(self, **row: Any) -> None:
        if self.audit is not None:
            self.audit.log(model=self.model_id, **row)

    async def audit_refusal(
        self, scope: dict, exc: ApiError, messages: list[dict] | None = None
    ) -> None:
        """Every refused or failed request is a row too: status `error` with its HTTP status."""
        path = scope.get("path", "")
        status = "cancelled" if exc.status == 499 else "error"
        await asyncio.to_thread(
            self.audit_log, endpoint=ENDPOINTS.get(path, path), messages=messages or [],
            response=exc.message, status=status, finish_reason=exc.code or status,
            http_status=exc.status,
        )  # fmt: skip


def tutor_state(request: Request) -> TutorState:
    """The state `create_app` put on the app."""
    return request.app.state.tutor


async def require_token(request: Request) -> None:
    """Router dependency: the bearer token, when the server has one."""
    check_token(request.headers.get("authorization", ""), tutor_state(request).config.token)
