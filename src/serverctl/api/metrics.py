"""`GET /metrics`: the Prometheus text exposition (docs/metrics.md).

Any operator may read it, through an API token (`Authorization: Bearer`, what Prometheus'
`authorization` scrape option sends; a viewer token is enough) or a signed-in web session. The
figures name pools and hosts, so it is never open to anonymous callers.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import generate_latest

from serverctl.api.deps import SourceIP, State, operator
from serverctl.domain.principal import Principal
from serverctl.web.auth import COOKIE

router = APIRouter(tags=["metrics"])

# The classic text format, which every Prometheus version reads; `generate_latest` writes it.
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"

_bearer = HTTPBearer(
    auto_error=False, description="An API token of any role (`serverctl tokens create`)."
)


def scraper(
    request: Request,
    state: State,
    ip: SourceIP,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """An API token (checked as every REST call's), else the web session's operator."""
    if credentials is None:
        session_id = request.cookies.get(COOKIE)
        found = state.operators.session(session_id, ip) if session_id else None
        if found is not None:
            return found[0]
    return operator(state, ip, credentials)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {}},
            "description": "The Prometheus text exposition.",
        },
        401: {"description": "No API token or web session, or an unknown or revoked token."},
    },
)
async def metrics(state: State, who: Annotated[Principal, Depends(scraper)]) -> Response:
    who.require("viewer")
    # Collecting reads the database: off the event loop, like every other route's reads.
    body = await asyncio.to_thread(generate_latest, state.registry)
    return Response(body, media_type=TEXT_FORMAT)
