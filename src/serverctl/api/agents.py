"""The agent API (`/api/agents/*`) and the agent downloads (`/agent/*`).

The heartbeat handler is the hot path: it runs on the event loop, touches only the live state,
and answers every refusal with a 4xx and a reason (never a 5xx). `answer_heartbeat` is the whole
of it; `api.heartbeat_fast_path` calls it straight from ASGI, and the route here (which the
OpenAPI schema documents) calls the same function.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from serverctl.agent_dist import build_zipapp, install_script
from serverctl.api.deps import State, source_ip
from serverctl.api.errors import error_responses
from serverctl.domain.agents import Accepted, AgentRequest
from serverctl.domain.heartbeat import MAX_BODY_BYTES, MAX_COMPLETION_BYTES
from serverctl.errors import AgentAuthError, ServerCTLError
from serverctl.state import AppState

router = APIRouter(tags=["agents"])
# The refusals of every agent request (docs/agent.md); a completion may also name no such job
# (404) or one no longer running (409).
AGENT_ERRORS = error_responses(400, 401, 403, 413, 422)
log = logging.getLogger(__name__)


HEARTBEAT_PATH = "/api/agents/heartbeat"


@dataclass(frozen=True)
class Answer:
    """An agent API answer before it is an HTTP response: a JSON body, a status and headers."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()


def _json(content: Any) -> bytes:
    # What Starlette's JSONResponse renders, so both ways to the handler answer alike.
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode()


@lru_cache(maxsize=4)
def _nothing_to_do(interval_s: float) -> bytes:
    """The answer to almost every heartbeat, rendered once."""
    return _json({"ok": True, "jobs": [], "heartbeat_interval_s": interval_s})


async def read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The body, but no more than one byte past the limit, so the payload check can refuse it.

    `declared` is the Content-Length header: a body declared too big is not read at all.
    Raises ClientDisconnect when the agent hangs up first."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return b"\0" * (limit + 1)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > limit or not message.get("more_body", False):
            return b"".join(chunks)


async def _agent_request(request: Request, limit: int = MAX_BODY_BYTES) -> AgentRequest:
    return AgentRequest(
        authorization=request.headers.get("authorization"),
        source_ip=source_ip(request),
        body=await read_body(request.receive, request.headers.get("content-length"), limit),
    )


def _refusal(exc: AgentAuthError) -> Answer:
    headers: tuple[tuple[bytes, bytes], ...] = ()
    if exc.status_code == 401:
        headers = ((b"www-authenticate", b"Bearer"),)
    # Close the connection after refusing an oversized body we did not read to the end.
    if exc.status_code == 413:
        headers = (*headers, (b"connection", b"close"))
    return Answer(exc.status_code, _json({"detail": exc.message}), headers)


def _response(answer: Answer) -> Response:
    return Response(
        answer.body,
        status_code=answer.status,
        headers={name.decode(): value.decode() for name, value in answer.headers},
        media_type="application/json",
    )


def _refused(exc: AgentAuthError) -> Response:
    return _response(_refusal(exc))


async def answer_heartbeat(state: AppState, request: AgentRequest) -> Answer:
    """Check and record one heartbeat; the answer carries the member's next job, if any."""
    try:
        accepted = state.gate.heartbeat(request)
    except AgentAuthError as exc:
        state.metrics.heartbeat_rejected(exc.reason)
        return _refusal(exc)
    state.metrics.heartbeats_received += 1
    member, payload = accepted.member, accepted.payload
    if accepted.change.health:
        # HAProxy went down or came back: evaluate failover now, not at the next tick.
        state.wake_evaluator()
    if accepted.followed or (accepted.change.ip and member.pool_id in state.live.ddns_pools):
        await _dynamic_dns(state, accepted)
    jobs: list[dict[str, Any]] = []
    if member.jobs_hint:
        try:
            jobs = await asyncio.to_thread(state.jobs.claim, member.member_id, payload.jobs_running)
        except Exception:  # noqa: BLE001 - the agent must get its answer; it asks again in 1 s
            log.exception("claiming a job for member %s failed", member.member_id)
    interval_s = state.settings.heartbeat_interval_s
    if not jobs:
        return Answer(200, _nothing_to_do(interval_s))
    return Answer(200, _json({"ok": True, "jobs": jobs, "heartbeat_interval_s": interval_s}))


@router.post(HEARTBEAT_PATH, responses=AGENT_ERRORS)
async def heartbeat(request: Request, state: State) -> Response:
    """An agent's heartbeat (docs/agent.md). Served by `HeartbeatFastPath` straight from ASGI,
    with the same checks and answers as this route."""
    return _response(await answer_heartbeat(state, await _agent_request(request)))


async def _dynamic_dns(state: AppState, accepted: Accepted) -> None:
    """A DDNS pool's member moved: let its new address in (audited) and move the record."""
    member, address = accepted.member, accepted.payload.ip
    try:
        if accepted.followed:
            await asyncio.to_thread(
                state.pool_dns.follow_address, member.member_id, accepted.followed_from, address
            )
        await asyncio.to_thread(state.pool_dns.address_changed, member.member_id, address)
    except Exception:  # noqa: BLE001 - the agent must get its answer; the next beat retries
        log.exception("dynamic DNS for member %s failed", member.member_id)


@router.post("/api/agents/jobs/complete", responses={**AGENT_ERRORS, **error_responses(404, 409)})
async def complete_job(request: Request, state: State) -> Response:
    try:
        member, done = state.gate.completion(await _agent_request(request, MAX_COMPLETION_BYTES))
    except AgentAuthError as exc:
        return _refused(exc)
    try:
        final = await asyncio.to_thread(
            state.jobs.complete,
            member.member_id,
            done.job_id,
            done.state,
            done.summary,
            done.output,
            done.result,
        )
    except ServerCTLError as exc:
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code)
    return JSONResponse({"ok": True, "state": final})


@router.post("/api/agents/enrol", responses=AGENT_ERRORS)
async def enrol(request: Request, state: State) -> Response:
    try:
        member, payload = state.gate.enrol(await _agent_request(request))
    except AgentAuthError as exc:
        return _refused(exc)
    result: dict[str, Any] = await asyncio.to_thread(
        state.pools.record_enrolment, member.member_id, payload.ip, payload.version
    )
    return JSONResponse(result)


@router.get("/agent/balctl.pyz", include_in_schema=False)
def agent_zipapp() -> Response:
    bundle = build_zipapp()
    return Response(
        bundle.data,
        media_type="application/zip",
        headers={
            "Content-Disposition": 'attachment; filename="balctl.pyz"',
            "X-Balctl-Version": bundle.version,
        },
    )


@router.get("/agent/balctl.pyz.sha256", include_in_schema=False)
def agent_zipapp_sha256() -> PlainTextResponse:
    return PlainTextResponse(f"{build_zipapp().sha256}  balctl.pyz\n")


@router.get("/agent/install.sh", include_in_schema=False)
def agent_install_script() -> PlainTextResponse:
    return PlainTextResponse(install_script(), media_type="text/x-shellscript")
