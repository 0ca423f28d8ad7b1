"""Host and Origin checks, the security headers and the bearer token for the tutor server.

A page on any site can make a browser POST to a server on 127.0.0.1 (CSRF), and a hostname an
attacker controls can be re-pointed at 127.0.0.1 (DNS rebinding). So the Host header must name
the address the connection arrived on (plus `localhost` on loopback) or an `--allowed-host`, and
a request that carries an Origin must come from this server's own origin or an
`--allowed-origin`. A pure ASGI middleware (not starlette's BaseHTTPMiddleware) so handlers
still see a client's disconnect. `check_token` is the routes' bearer-token check.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from zephyr.tutor.validate import ApiError

SECURITY_HEADERS = [
    # The page and its script come from this server only: no CDN, no inline code.
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:"),
    (b"x-content-type-options", b"nosniff"),
]


def hostname(value: str) -> str:
    """The host of a Host header or an address: lower-case, without port or IPv6 brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Guard:
    """Refuse a foreign Host (400) or Origin (403) before any route runs; add security headers."""

    def __init__(
        self,
        app: Any,
        allowed_hosts: Iterable[str] = (),
        allowed_origins: Iterable[str] = (),
        on_refuse: Callable[[dict, ApiError], Awaitable[None]] | None = None,
    ):
        self.app = app
        self.hosts = {hostname(h) if h != "*" else "*" for h in allowed_hosts}
        self.origins = {o.strip().rstrip("/").lower() for o in allowed_origins}
        self.on_refuse = on_refuse

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        err = self.check(scope)
        if err is None:
            return await self.app(scope, receive, send_with_headers)
        if self.on_refuse is not None:
            await self.on_refuse(scope, err)
        await err.response()(scope, receive, send_with_headers)

    def check(self, scope: dict) -> ApiError | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if not self.host_ok(host, scope.get("server")):
            name = hostname(host) or "<none>"
            return ApiError(
                400,
                f"Host '{host}' is not this server's address; if clients reach it by that name, "
                f"start the server with --allowed-host {name}",
                "Host",
                "host_not_allowed",
            )
        origin = headers.get("origin")
        if origin is not None and not self.origin_ok(origin, host):
            return ApiError(
                403,
                f"Origin '{origin}' is not this server's own; to let pages from it call the "
                f"API, start the server with --allowed-origin {origin}",
                "Origin",
                "origin_not_allowed",
            )
        return None

    def host_ok(self, host: str, server: tuple | None) -> bool:
        name = hostname(host)
        if not name:
            return False
        if "*" in self.hosts or name in self.hosts:
            return True
        local = hostname(str(server[0])) if server else ""
        return name == local or (name == "localhost" and is_loopback(local))

    def origin_ok(self, origin: str, host: str) -> bool:
        origin = origin.strip().rstrip("/").lower()
        if "*" in self.origins or origin in self.origins:
            return True
        scheme, sep, netloc = origin.partition("://")
        return bool(sep) and scheme in ("http", "https") and netloc == host.strip().lower()


def check_token(authorization: str, token: str | None) -> None:
    """401 unless `authorization` is `Bearer <token>` (nothing to check when token is None)."""
    if not token:
        return
    scheme, _, value = authorization.partition(" ")
    ok = scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())
    if not ok:
        err = ApiError(
            401,
            "missing or wrong bearer token; send 'Authorization: Bearer <token>'",
            code="invalid_api_key",
        )
        err.headers["WWW-Authenticate"] = "Bearer"
        raise err
