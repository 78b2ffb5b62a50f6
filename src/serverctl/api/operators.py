"""Operator accounts, API tokens and the audit log (admin only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from serverctl.api.deps import Operator, State
from serverctl.api.errors import API_ERRORS
from serverctl.api.json_route import StrictJSONRoute
from serverctl.api.schemas import (
    AuditOut,
    Id,
    Page,
    TokenCreate,
    TokenCreated,
    TokenOut,
    UserCreate,
    UserCreated,
    UserOut,
)

router = APIRouter(
    prefix="/api", tags=["operators"], responses=API_ERRORS, route_class=StrictJSONRoute
)


@router.get("/users", response_model=Page[UserOut])
def list_users(state: State, who: Operator) -> dict[str, Any]:
    items = state.operators.list_users(who)
    return {"items": items, "total": len(items)}


@router.post("/users", status_code=201, response_model=UserCreated)
def create_user(body: UserCreate, state: State, who: Operator) -> dict[str, Any]:
    user, password = state.operators.create_user(who, body.name, body.role, body.password)
    return {**user, "password": password}


@router.delete("/users/{user_id}", status_code=204)
def delete_user(user_id: Id, state: State, who: Operator) -> Response:
    state.operators.delete_user(who, user_id)
    return Response(status_code=204)


@router.get("/tokens", response_model=Page[TokenOut])
def list_tokens(state: State, who: Operator) -> dict[str, Any]:
    items = state.operators.list_tokens(who)
    return {"items": items, "total": len(items)}


@router.post("/tokens", status_code=201, response_model=TokenCreated)
def create_token(body: TokenCreate, state: State, who: Operator) -> dict[str, Any]:
    token, secret = state.operators.create_token(who, body.name, body.role)
    return {**token, "token": secret}


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: Id, state: State, who: Operator) -> Response:
    state.operators.revoke_token(who, token_id)
    return Response(status_code=204)


@router.get("/audit", response_model=Page[AuditOut])
def audit_log(
    state: State,
    who: Operator,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    items, total = state.operators.audit_log(who, limit, offset)
    return {"items": items, "total": total}
