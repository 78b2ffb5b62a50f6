"""The agent API (`/api/agents/*`) and the agent downloads (`/agent/*`).

The heartbeat handler is the hot path: it runs on the event loop, touches only the live state,
and answers every refusal with a 4xx and a reason (never a 5xx).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from serverctl.agent_dist import build_zipapp, install_script
from serverctl.api.deps import State, source_ip
from serverctl.domain.agents import Accepted, AgentRequest
from serverctl.domain.heartbeat import MAX_BODY_BYTES, MAX_COMPLETION_BYTES
from serverctl.errors import AgentAuthError, ServerCTLError
from serverctl.state import AppState

router = APIRouter(tags=["agents"])
log = logging.getLogger(__name__)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, but no more than one byte past the limit, so the payload check can refuse it."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return b"\0" * (limit + 1)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(chunks)


async def _agent_request(request: Request, limit: int = MAX_BODY_BYTES) -> AgentRequest:
    return AgentRequest(
        authorization=request.headers.get("authorization"),
        source_ip=source_ip(request),
        body=await _read_body(request, limit),
    )


def _refused(exc: AgentAuthError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    # Close the connection after refusing an oversized body we did not read to the end.
    if exc.status_code == 413:
        headers = {**(headers or {}), "Connection": "close"}
    return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=headers)


@router.post("/api/agents/heartbeat")
async def heartbeat(request: Request, state: State) -> Response:
    try:
        accepted = state.gate.heartbeat(await _agent_request(request))
    except AgentAuthError as exc:
        state.metrics.heartbeat_rejected(exc.reason)
        return _refused(exc)
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
    return JSONResponse(
        {"ok": True, "jobs": jobs, "heartbeat_interval_s": state.settings.heartbeat_interval_s}
    )


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


@router.post("/api/agents/jobs/complete")
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


@router.post("/api/agents/enrol")
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
