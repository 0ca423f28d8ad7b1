"""Request validation for the tutor server: the JSON body, its strings and depth, and the prompt.

Everything here runs before a request reaches the model and answers a bad input with an
`ApiError` (OpenAI-style JSON naming the field), never a 500.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

MAX_JSON_DEPTH = 32  # a chat body nests 5 deep; deeper is an attack on the parser, not a request
JSON_TYPES = ("application/json",)
TYPE_TAGS = {"str", "int", "float", "bool", "none", "dict", "list"}
Schema = TypeVar("Schema", bound=BaseModel)


class ApiError(Exception):
    """An error answered as OpenAI-style JSON: {"error": {message, type, param, code}}."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers: dict[str, str] = {}
        self.logged = False  # True when the caller already wrote this request's audit row

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        if self.status == 429:
            kind = "rate_limit_error"
        body = {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def check_content_type(value: str | None) -> None:
    """A body must be declared JSON: a browser's cross-site form or `text/plain` POST is not."""
    media = (value or "").split(";")[0].strip().lower()
    if media not in JSON_TYPES:
        raise ApiError(
            415,
            f"Content-Type is '{value or ''}'; send the body as 'application/json'",
            "Content-Type",
            "unsupported_media_type",
        )


async def read_body(request: Request, schema: type[Schema], max_bytes: int) -> Schema:
    """The request's JSON body validated against `schema`: 415, 413, 499, 400 or 422 if not."""
    check_content_type(request.headers.get("content-type"))
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(
            413,
            f"the request body is {declared} bytes; the limit is {max_bytes}",
            "body",
            "body_too_large",
        )
    data = parse_json(await read_bytes(request, max_bytes))
    if not isinstance(data, dict):
        raise ApiError(
            422,
            f"the request body must be a JSON object, got {type(data).__name__}",
            "body",
            "invalid_type",
        )
    return check_schema(data, schema)


async def read_bytes(request: Request, max_bytes: int) -> bytes:
    """The body, read no further than `max_bytes` (a client may lie about Content-Length)."""
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise ApiError(
                    413,
                    f"the request body is over the limit of {max_bytes} bytes",
                    "body",
                    "body_too_large",
                )
    except ClientDisconnect:
        raise ApiError(
            499, "the client left while sending the body", "body", "client_closed"
        ) from None
    return bytes(body)


def check_schema(data: dict, schema: type[Schema]) -> Schema:
    """`schema` built from `data`; the first error is a 422 naming its field."""
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


def check_model(name: str | None, model_id: str) -> None:
    """A request naming a model must name the one served here: 404 otherwise."""
    if name and name != model_id:
        raise ApiError(
            404,
            f"model '{name}' is not served here; use '{model_id}' (see GET /v1/models)",
            "model",
            "model_not_found",
        )


def check_chars(text: str, field: str, limit: int) -> None:
    """A message, question or choice longer than `limit` characters is a 413 naming it."""
    if len(text) > limit:
        raise ApiError(
            413,
            f"{field} has {len(text)} characters; the limit is {limit}",
            field,
            "message_too_long",
        )


def check_count(n: int, limit: int) -> None:
    """Too many turns in one chat request is a 422."""
    if n > limit:
        raise ApiError(
            422, f"messages has {n} turns; the limit is {limit}", "messages", "too_many_messages"
        )


def check_max_tokens(n: int, limit: int) -> None:
    """An answer longer than the server allows is a 422 (not silently shortened)."""
    if n > limit:
        raise ApiError(
            422, f"max_tokens is {n}; the limit is {limit}", "max_tokens", "max_tokens_too_large"
        )


def parse_json(body: bytes) -> Any:
    """The decoded body; malformed, too deep or undecodable JSON is a 400 naming the body."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise ApiError(
            400,
            f"the request body nests deeper than {MAX_JSON_DEPTH} levels",
            "body",
            "invalid_json",
        ) from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError, 5000-digit ints, bad UTF-8
        raise ApiError(
            400,
            f"the request body is not valid JSON ({e}); send a JSON object",
            "body",
            "invalid_json",
        ) from None
    check_tree(data)
    return data


def check_tree(data: Any) -> None:
    """Refuse nesting over MAX_JSON_DEPTH and strings (keys too) that are not valid Unicode.

    A lone surrogate ("\\ud800") is valid JSON but cannot be encoded as UTF-8: the tokenizer, the
    audit log and the response would all fail on it later.
    """
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise ApiError(
                400,
                f"{path or 'body'} nests deeper than {MAX_JSON_DEPTH} levels",
                path or "body",
                "too_deep",
            )
        if isinstance(node, str):
            _check_text(node, path or "body")
        elif isinstance(node, dict):
            for key, value in node.items():
                _check_text(key, path or "body")  # a bad key: name its object
                stack.append((value, f"{path}.{key}" if path else key, depth + 1))
        elif isinstance(node, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node))


def _check_text(text: str, field: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ApiError(
            400,
            f"{field} holds a lone surrogate ({e.object[e.start]!r} at {e.start}): "
            "send valid Unicode text",
            field,
            "invalid_unicode",
        ) from None


def check_stop(stop: str | list[str] | None, max_count: int, max_chars: int) -> list[str]:
    """The stop strings as a list: at most `max_count`, each at most `max_chars` characters.

    The streamer holds back as many characters as the longest stop string: a long one would
    hold back the whole answer.
    """
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > max_count:
        raise ApiError(
            422,
            f"stop has {len(stops)} strings; at most {max_count} are allowed",
            "stop",
            "invalid_value",
        )
    for i, s in enumerate(stops):
        if len(s) > max_chars:
            raise ApiError(
                422,
                f"stop[{i}] has {len(s)} characters; the limit is {max_chars}",
                "stop",
                "stop_too_long",
            )
    return [s for s in stops if s]


def check_context(n_tokens: int, context: int | None, param: str) -> None:
    """A prompt that fills the model's context leaves no room for an answer: 413 naming it."""
    if context and n_tokens >= context:
        raise ApiError(
            413,
            f"the prompt is {n_tokens} tokens; the model's context is {context} tokens",
            param,
            "context_length_exceeded",
        )


def merge_system(
    messages: list[dict], tutor_system: str | None, allow_override: bool = False
) -> list[dict]:
    """One leading system turn: the tutor's prompt, then the client's system turns after it.

    A client's `system`/`developer` turns never replace the operator's prompt unless the server
    allows it (`--allow-system-override`); they are appended after it, in order.
    """
    theirs = [m["content"] for m in messages if m["role"] == "system"]
    rest = [m for m in messages if m["role"] != "system"]
    parts = theirs if (allow_override and theirs) else [tutor_system or "", *theirs]
    system = "\n\n".join(p for p in parts if p)
    return ([{"role": "system", "content": system}] if system else []) + rest
