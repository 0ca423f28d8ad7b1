"""Request validation for the tutor server: the JSON body, its strings and depth, and the prompt.

Everything here runs before a request reaches the model and answers a bad input with an
`ApiError` (OpenAI-style JSON naming the field), never a 500.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse

MAX_JSON_DEPTH = 32  # a chat body nests 5 deep; deeper is an attack on the parser, not a request
JSON_TYPES = ("application/json",)


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
