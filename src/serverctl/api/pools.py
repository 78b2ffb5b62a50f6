"""Pools and members: `/api/pools/...`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from serverctl.agent_dist import install_command
from serverctl.api.deps import Operator, State
from serverctl.api.errors import API_ERRORS
from serverctl.api.json_route import StrictJSONRoute
from serverctl.api.schemas import (
    FailoverSettings,
    FailoverUpdate,
    Id,
    MemberCreate,
    MemberCreated,
    MemberOut,
    Page,
    PoolCreate,
    PoolOut,
    RejectionOut,
)
from serverctl.errors import ValidationError

router = APIRouter(
    prefix="/api/pools", tags=["pools"], responses=API_ERRORS, route_class=StrictJSONRoute
)


def base_url(state: State, request: Request) -> str:
    return (state.settings.public_url or str(request.base_url)).rstrip("/")


@router.post("", status_code=201, response_model=PoolOut)
def create_pool(body: PoolCreate, state: State, who: Operator) -> dict[str, Any]:
    return state.pools.create_pool(who, body.name, body.template)


@router.get("", response_model=Page[PoolOut])
def list_pools(state: State, who: Operator) -> dict[str, Any]:
    items = state.pools.list_pools(who)
    return {"items": items, "total": len(items)}


@router.get("/{pool_id}", response_model=PoolOut)
def get_pool(pool_id: Id, state: State, who: Operator) -> dict[str, Any]:
    return state.pools.get_pool(who, pool_id)


@router.delete("/{pool_id}", status_code=204)
def delete_pool(pool_id: Id, state: State, who: Operator) -> Response:
    state.pools.delete_pool(who, pool_id)
    return Response(status_code=204)


@router.get("/{pool_id}/failover", response_model=FailoverSettings)
def get_failover(pool_id: Id, state: State, who: Operator) -> dict[str, Any]:
    failover: dict[str, Any] = state.pools.get_pool(who, pool_id)["failover"]
    return failover


@router.put("/{pool_id}/failover", response_model=FailoverSettings)
def set_failover(pool_id: Id, body: FailoverUpdate, state: State, who: Operator) -> dict[str, Any]:
    changes = body.model_dump(exclude_none=True)
    if not changes:
        raise ValidationError(
            "give one or more of automatic, delay_s, haproxy_monitored, cooldown_s"
        )
    return state.pools.set_failover(who, pool_id, **changes)


@router.post("/{pool_id}/members", status_code=201, response_model=MemberCreated)
def add_member(
    pool_id: Id, body: MemberCreate, state: State, who: Operator, request: Request
) -> dict[str, Any]:
    created = state.pools.add_member(who, pool_id, body.hostname, body.allowed_ips)
    return _with_secret(created.member, created.secret, base_url(state, request))


@router.get("/{pool_id}/members", response_model=Page[MemberOut])
def list_members(pool_id: Id, state: State, who: Operator) -> dict[str, Any]:
    items = state.pools.list_members(who, pool_id)
    return {"items": items, "total": len(items)}


@router.get("/{pool_id}/members/{member_id}", response_model=MemberOut)
def get_member(pool_id: Id, member_id: Id, state: State, who: Operator) -> dict[str, Any]:
    return state.pools.get_member(who, pool_id, member_id)


@router.get("/{pool_id}/members/{member_id}/rejections", response_model=Page[RejectionOut])
def list_rejections(pool_id: Id, member_id: Id, state: State, who: Operator) -> dict[str, Any]:
    items = state.pools.rejections(who, pool_id, member_id)
    return {"items": items, "total": len(items)}


@router.get("/{pool_id}/members/{member_id}/status")
def member_status(pool_id: Id, member_id: Id, state: State, who: Operator) -> dict[str, Any]:
    """The agent's latest `show stat` / `show info` summary and topology."""
    return state.pools.member_status(who, pool_id, member_id)


@router.post("/{pool_id}/members/{member_id}/rotate-secret", response_model=MemberCreated)
def rotate_secret(
    pool_id: Id, member_id: Id, state: State, who: Operator, request: Request
) -> dict[str, Any]:
    rotated = state.pools.rotate_secret(who, pool_id, member_id)
    return _with_secret(rotated.member, rotated.secret, base_url(state, request))


@router.delete("/{pool_id}/members/{member_id}", status_code=204)
def delete_member(pool_id: Id, member_id: Id, state: State, who: Operator) -> Response:
    state.pools.delete_member(who, pool_id, member_id)
    return Response(status_code=204)


def _with_secret(member: dict[str, Any], secret: str, base: str) -> dict[str, Any]:
    return {
        **member,
        "secret": secret,
        "install_command": install_command(base, secret, member["hostname"]),
    }
