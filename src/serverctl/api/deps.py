"""Shared request dependencies, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serverctl.domain import client_ip
from serverctl.domain.principal import Principal
from serverctl.errors import AuthError
from serverctl.state import AppState


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.serverctl
    return state


State = Annotated[AppState, Depends(get_state)]


def source_ip(request: Request) -> str:
    state = get_state(request)
    return client_ip.resolve(
        request.client.host if request.client else None,
        request.headers.get,
        state.settings.trusted_proxies,
    )


SourceIP = Annotated[str, Depends(source_ip)]

_bearer = HTTPBearer(auto_error=False, description="An API token from `serverctl tokens create`.")


def operator(
    state: State,
    ip: SourceIP,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise AuthError("missing API token: send Authorization: Bearer <token>")
    return state.operators.authenticate_token(credentials.credentials, ip)


Operator = Annotated[Principal, Depends(operator)]
