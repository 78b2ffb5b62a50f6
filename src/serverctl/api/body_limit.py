"""A size limit on request bodies for the operator API and the web UI.

FastAPI reads a JSON or form body whole into memory before it checks a single field, so without
a limit one request of a few hundred megabytes costs that much memory. Operator requests are
small (the largest is a TLS certificate chain in a job's parameters), so anything over
`MAX_API_BODY_BYTES` is refused with 413 before it is read: at once when the request declares
its length, as soon as the limit is passed when it is sent chunked.

The agent endpoints (`/api/agents/...`) keep their own limits (256 KiB heartbeats, 4 MiB job
completions, 256 MiB backup archives), enforced where they read the body, so that a refusal is
recorded against the member; this middleware leaves them alone.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_API_BODY_BYTES = 1024 * 1024
EXEMPT_PREFIXES = ("/api/agents/",)


def too_large(limit: int) -> str:
    return (
        f"the request body is over the limit of {limit} bytes for this endpoint: "
        "send only the fields the operation takes"
    )


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a body without a declared length passes the limit; the app's
    HTTP error handler answers it. The rest of the body is unread, so the connection closes."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large(limit), headers={"Connection": "close"})


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int = MAX_API_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            # Refused before the app runs: an action never happens with its reply lost.
            refusal = JSONResponse(
                {"detail": too_large(self.limit)},
                status_code=413,
                headers={"Connection": "close"},
            )
            await refusal(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counted, send)
