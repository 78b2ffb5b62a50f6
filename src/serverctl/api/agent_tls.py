"""The agent's certificate order endpoints (docs/agent.md, "TLS certificates").

    POST /api/agents/tls/order          {"hostname", "job_id", "csr"} → 202 {"state": "pending"}
    POST /api/agents/tls/order/status   {"hostname", "job_id"} → {"state": "pending"}
        | {"state": "valid", "chain": PEM} | {"state": "failed", "error": "<the CA's message>"}

Authenticated like every agent request (the enrolment secret, the member's source IP, the
enrolled hostname: AgentGate), refused with the same 4xx answers; a job that is not this
member's certificate job is 404, one no longer running or an order the CA's limits forbid 409.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from pydantic import ValidationError as PydanticValidationError

from serverctl.api.agents import AGENT_ERRORS, _agent_request, _refused
from serverctl.api.deps import State
from serverctl.api.errors import error_responses
from serverctl.db.types import MAX_DB_INT
from serverctl.domain.agents import AgentRequest
from serverctl.domain.heartbeat import parse_json
from serverctl.errors import AgentAuthError, ServerCTLError, ValidationError
from serverctl.state import AppState

router = APIRouter(tags=["agents"])
ORDER_PATH = "/api/agents/tls/order"
STATUS_PATH = "/api/agents/tls/order/status"
# A CSR is a few KB.
MAX_ORDER_BYTES = 64 * 1024
ORDER_ERRORS = {**AGENT_ERRORS, **error_responses(404, 409)}


class OrderStatusBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    hostname: StrictStr = Field(min_length=1, max_length=253)
    job_id: int = Field(ge=1, le=MAX_DB_INT, strict=True)


class OrderBody(OrderStatusBody):
    csr: StrictStr = Field(min_length=1, max_length=MAX_ORDER_BYTES)


def _error(status: int, detail: str) -> Response:
    return JSONResponse({"detail": detail}, status_code=status)


def _parse(request: AgentRequest, model: type[OrderStatusBody]) -> tuple[Any, str | None]:
    """(the body, None), or (None, why not): the refusal is only said once the agent is
    authenticated, so a stranger learns nothing from it."""
    try:
        data = parse_json(request.body, MAX_ORDER_BYTES)
    except ServerCTLError as exc:
        return exc, None
    try:
        return model.model_validate(data), None
    except PydanticValidationError as exc:
        hostname = data.get("hostname") if isinstance(data, dict) else None
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        )
        return ValidationError(f"invalid certificate order request: {problems}"), (
            hostname if isinstance(hostname, str) else None
        )


async def _authenticated(
    state: AppState, request: Request, model: type[OrderStatusBody]
) -> tuple[int, Any] | Response:
    """(member id, body), or the refusal to send."""
    agent = await _agent_request(request, MAX_ORDER_BYTES)
    parsed, hostname = _parse(agent, model)
    if isinstance(parsed, OrderStatusBody):
        hostname = parsed.hostname
    try:
        member = state.gate.transfer(agent, hostname)
    except AgentAuthError as exc:
        if exc.reason == "hostname" and hostname is None and isinstance(parsed, ServerCTLError):
            # Secret and address were good; what is wrong is the body (no hostname in it).
            return _error(_status(parsed), parsed.message)
        return _refused(exc)
    if isinstance(parsed, ServerCTLError):
        return _error(_status(parsed), parsed.message)
    return member.member_id, parsed


def _status(exc: ServerCTLError) -> int:
    # parse_json says 413 or 400; a body of the wrong shape is 422.
    return exc.status_code if exc.status_code in (400, 413, 422) else 422


@router.post(ORDER_PATH, status_code=202, responses=ORDER_ERRORS)
async def order(request: Request, state: State) -> Response:
    """Take the CSR of a running `tls.acme_issue` / `tls.acme_renew_force` job; the order runs
    in the background. The same CSR again changes nothing; a new one replaces an order that has
    not finished (the agent restarted)."""
    checked = await _authenticated(state, request, OrderBody)
    if isinstance(checked, Response):
        return checked
    member_id, body = checked
    try:
        answer = await asyncio.to_thread(state.tls_orders.submit, member_id, body.job_id, body.csr)
    except ServerCTLError as exc:
        return _error(exc.status_code, exc.message)
    return JSONResponse(answer, status_code=202)


@router.post(STATUS_PATH, responses=ORDER_ERRORS)
async def order_status(request: Request, state: State) -> Response:
    """Where the job's order is: pending, valid (with the chain) or failed (the CA's message)."""
    checked = await _authenticated(state, request, OrderStatusBody)
    if isinstance(checked, Response):
        return checked
    member_id, body = checked
    try:
        answer = await asyncio.to_thread(state.tls_orders.status, member_id, body.job_id)
    except ServerCTLError as exc:
        return _error(exc.status_code, exc.message)
    return JSONResponse(answer)
