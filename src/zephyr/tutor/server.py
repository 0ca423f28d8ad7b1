"""An OpenAI-compatible tutor server: the FastAPI app factory, and `running` for tests.

Routes: POST /v1/chat/completions (stream=true as server-sent events; `routes_chat.py`),
GET /v1/models, POST /v1/mcqa, GET /health and the web page at / (`routes.py`), practice mode
(`practice_api.py`). The model runs in worker threads behind a bounded queue (`worker.py`);
streams are built in `streaming.py`. Hostile input is refused before the model: `guard.py`
(Host, Origin, security headers, the bearer token) and `validate.py` (Content-Type, body size,
JSON depth and Unicode, stop strings, the context length). Every request, refused or failed ones
included, is one audit row. The routes share a `TutorState` at `app.state.tutor` (`state.py`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from zephyr.tutor import practice_api, routes, routes_chat
from zephyr.tutor.audit import Audit
from zephyr.tutor.guard import Guard
from zephyr.tutor.policy import Policy
from zephyr.tutor.practice_api import PracticeState
from zephyr.tutor.routes import STATIC
from zephyr.tutor.schemas import ChatRequest, McqaRequest, Message, TextPart
from zephyr.tutor.state import ENDPOINTS, ServeConfig, TutorState
from zephyr.tutor.validate import ApiError
from zephyr.tutor.worker import Engine, Job

# re-exported: these lived here before the server was split into modules
__all__ = [
    "ENDPOINTS", "STATIC", "ApiError", "ChatRequest", "Engine", "Job", "McqaRequest", "Message",
    "ServeConfig", "TextPart", "TutorState", "create_app", "model_name", "running",
]  # fmt: skip
log = logging.getLogger("zephyr.tutor")


def create_app(
    model: Any,
    tokenizer: Any,
    model_id: str,
    config: ServeConfig | None = None,
    audit: Audit | None = None,
    policy: Policy | None = None,
) -> FastAPI:
    """The FastAPI app serving one loaded model."""
    cfg = config or ServeConfig()
    policy = policy or Policy.empty()
    tutor = TutorState(model, tokenizer, model_id, cfg, audit, policy)
    # No /docs (Swagger UI loads from a CDN); /openapi.json is a route, behind the token.
    app = FastAPI(
        title="Zephyr tutor", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.tutor = tutor
    app.state.practice = PracticeState(policy.practice, cfg.practice_data)
    app.state.config, app.state.audit, app.state.model_id = cfg, audit, model_id
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(Exception, server_error)
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
        on_refuse=tutor.audit_refusal,
    )
    for router in (routes.public, routes.api, routes_chat.router, practice_api.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The worker threads live as long as the server."""
    tutor: TutorState = app.state.tutor
    tutor.engine = Engine(tutor.config.max_queue, workers=getattr(tutor.model, "parallel", 1))
    yield
    tutor.engine.close()


async def api_error(request: Request, exc: ApiError) -> JSONResponse:
    if not exc.logged:
        messages = getattr(request.state, "messages", None)
        await request.app.state.tutor.audit_refusal(request.scope, exc, messages)
    return exc.response()


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("request failed")
    err = ApiError(500, f"internal error: {type(exc).__name__}", code="server_error")
    messages = getattr(request.state, "messages", None)
    await request.app.state.tutor.audit_refusal(request.scope, err, messages)
    return err.response()


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
