"""`POST /api/agents/heartbeat` straight from ASGI, ahead of FastAPI.

Every member sends a heartbeat a second, so this one request is most of the control plane's
traffic. FastAPI's per-request work (its telemetry check, the middleware stack, route matching
over every route, dependency resolution, the Request object) cost more than the heartbeat's own
work. `ControlPlaneApp` is the FastAPI app with `HeartbeatFastPath` in front: it sees the path
first and calls the handler itself. The checks and answers are those of the documented route in
`api.agents`, because both call `answer_heartbeat`: the bearer secret, the source address (with
the trusted-proxy rule of `domain.client_ip`), the body limit, the payload, the hostname. Any
other request, and any other method on this path, goes to FastAPI unchanged. An unexpected
error here reaches uvicorn, which logs it and answers 500, as FastAPI's own handler would.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from serverctl.api.agents import HEARTBEAT_PATH, answer_heartbeat, read_body
from serverctl.domain import client_ip
from serverctl.domain.agents import AgentRequest
from serverctl.domain.heartbeat import MAX_BODY_BYTES
from serverctl.state import AppState


def _header(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    """The first header of that name, decoded as Starlette does (Latin-1)."""
    wanted = name.encode("latin-1")
    for key, value in headers:
        if key == wanted:
            return value.decode("latin-1")
    return None


class HeartbeatFastPath:
    """ASGI: heartbeats to `answer_heartbeat`, everything else (lifespan too) to `app`."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != HEARTBEAT_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        client = scope.get("client")
        source = client_ip.resolve(
            client[0] if client else None,
            lambda name: _header(headers, name),
            self.state.settings.trusted_proxies,
        )
        try:
            body = await read_body(receive, _header(headers, "content-length"), MAX_BODY_BYTES)
        except ClientDisconnect:
            return  # the agent hung up: there is no one to answer
        answer = await answer_heartbeat(
            self.state, AgentRequest(_header(headers, "authorization"), source, body)
        )
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [
                    (b"content-length", str(len(answer.body)).encode()),
                    (b"content-type", b"application/json"),
                    *answer.headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer.body})


class ControlPlaneApp(FastAPI):
    """The FastAPI app, with heartbeats taken by `HeartbeatFastPath` before FastAPI sees them."""

    def __init__(self, state: AppState, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._front = HeartbeatFastPath(super().__call__, state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._front(scope, receive, send)
