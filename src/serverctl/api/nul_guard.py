"""Refuses NUL characters in the query strings and form bodies of the operator API and web UI.

No name, address or message holds a NUL, and PostgreSQL's text columns cannot store one: a form
field carrying one would be accepted and then fail at the insert or the lookup (a 500 after the
fact). JSON bodies are checked where they are parsed (`serverctl.strict_json`); this covers
forms, URL-encoded (`%00`) or multipart (a raw NUL byte: no operator or web route takes a file
upload, so nothing binary is posted there), answering `400 {"detail": ...}` before the page or
route runs. The agent endpoints read their own bodies and are left alone.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serverctl.api.body_limit import EXEMPT_PREFIXES

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
# `%00` is how a URL-encoded form or a query encodes a NUL; a raw byte is refused as well.
# A multipart field carries its text as is, so there `%00` is just text.
_ENCODED: tuple[bytes, ...] = (b"%00", b"\x00")
_RAW: tuple[bytes, ...] = (b"\x00",)


def refusal(where: str) -> str:
    return f"the {where} holds a NUL character: text fields take none"


class NulInForm(HTTPException):
    """Raised from `receive` when a form body holds a NUL; the app's error handler answers. The
    rest of the body may be unread, so the connection closes."""

    def __init__(self) -> None:
        super().__init__(400, refusal("form body"), headers={"Connection": "close"})


def _holds_nul(data: bytes, markers: tuple[bytes, ...] = _ENCODED) -> bool:
    return any(marker in data for marker in markers)


class NulGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        if _holds_nul(scope.get("query_string", b"")) or "\x00" in scope["path"]:
            answer = JSONResponse({"detail": refusal("query string or path")}, status_code=400)
            await answer(scope, receive, send)
            return
        content_type = Headers(scope=scope).get("content-type", "").lower()
        if content_type.startswith(FORM):
            markers = _ENCODED
        elif content_type.startswith(MULTIPART):
            markers = _RAW
        else:
            await self.app(scope, receive, send)
            return
        # The last two bytes of the previous chunk: a `%00` may be split between chunks.
        tail = b""

        async def checked() -> Message:
            nonlocal tail
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                if _holds_nul(tail + body, markers):
                    raise NulInForm()
                tail = (tail + body)[-2:]
            return message

        await self.app(scope, checked, send)
