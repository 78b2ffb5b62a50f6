"""The one place where errors become HTTP answers: `{"detail": "what is wrong"}`.

The OpenAPI document says so too, so that a client (and the schemathesis suite) knows every
status an operation may answer. `error_responses(*codes)` declares error statuses with the
`ErrorOut` model; `API_ERRORS` is the set an operator API router declares once, and
`UPSTREAM_ERRORS` (502) is added by a route that talks to a DNS provider, mail relay or store:

    router = APIRouter(prefix="/api/things", responses=API_ERRORS, route_class=StrictJSONRoute)

    @router.post("/{thing_id}/test", responses=UPSTREAM_ERRORS)
    def test_thing(thing_id: Id, ...): ...

A status of a route's own: `responses={**API_ERRORS, **error_responses(415)}`.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from serverctl.errors import AuthError, ServerCTLError

log = logging.getLogger(__name__)


class ErrorOut(BaseModel):
    """Every error answer of the API (and of the agent API)."""

    detail: str = Field(description="What is wrong and what to do, for a person to read.")


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")

# What each status means here; `detail` says the particulars.
_MEANINGS = {
    400: "Malformed request: the body is not valid JSON, or not of the expected kind, or text "
    "in it (or in the query string) holds a NUL character",
    401: "Missing, unknown or revoked credentials",
    403: "Authenticated, but not allowed: the role is too low, or the source IP is refused",
    404: "No such resource",
    409: "Refused in the current state: a duplicate, or a change the state forbids",
    413: "The request body is over the size limit",
    415: "The request body is of a content type this operation does not take",
    422: "Input that breaks a rule; the detail names the field",
    502: "A DNS provider, mail server or backup store failed; the detail says which and why",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses=` entries for these error statuses, each a `{"detail": ...}`."""
    return {code: {"model": ErrorOut, "description": _MEANINGS[code]} for code in codes}


# What any operator API route may answer besides its success: declared on each router. 422
# replaces FastAPI's default validation schema, as our handler answers a `detail` string.
API_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 422)
# And on a route that talks to a DNS provider, a mail relay or a backup store.
UPSTREAM_ERRORS = error_responses(502)


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
        where = ".".join(loc) or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _malformed(exc: RequestValidationError) -> str | None:
    """What is wrong with a body that is not JSON at all (400, as the agent API answers), or
    None when it is JSON whose fields break the rules (422)."""
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "malformed")
            where = error.get("loc", ("body", 0))[-1]
            return f"the body is not valid JSON: {reason} (at character {where})"
    return None


def json_error(exc: ServerCTLError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthError) else None
    return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ServerCTLError)
    async def _domain(request: Request, exc: ServerCTLError) -> JSONResponse:
        return json_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        malformed = _malformed(exc)
        if malformed:
            return JSONResponse({"detail": malformed}, status_code=400)
        return JSONResponse({"detail": _describe(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
        return JSONResponse(
            {"detail": _http_detail(exc)}, status_code=exc.status_code, headers=headers or None
        )


def _http_detail(exc: StarletteHTTPException) -> str:
    # FastAPI says only "There was an error parsing the body"; the cause says what to fix.
    if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
        return "the body is not valid UTF-8: send JSON text encoded as UTF-8"
    return str(exc.detail)


def _allowed_methods(request: Request) -> str:
    """Every method the request's path takes. Starlette's 405 names the methods of the first
    route whose path matched, but GET and DELETE of one resource are separate routes."""
    routes = request.app.router.routes
    allowed = []
    for method in _METHODS:
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] is Match.FULL for route in routes):
            allowed.append(method)
    return ", ".join(allowed)
