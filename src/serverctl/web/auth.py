"""Web sessions: the session cookie, the CSRF check on every form, and the login redirect."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request

from serverctl.api.deps import SourceIP, State
from serverctl.domain.principal import Principal

COOKIE = "serverctl_session"


class LoginRequired(Exception):
    """Raised for a page that needs a session; answered with a redirect to /login."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


class CsrfFailed(Exception):
    """A form post without the session's CSRF token."""


@dataclass(frozen=True)
class WebUser:
    principal: Principal
    csrf_token: str
    session_id: str


def _current(request: Request, state: State, ip: SourceIP) -> WebUser:
    session_id = request.cookies.get(COOKIE)
    found = state.operators.session(session_id, ip) if session_id else None
    if found is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    principal, csrf = found
    return WebUser(principal, csrf, session_id or "")


CurrentUser = Annotated[WebUser, Depends(_current)]


async def _checked(request: Request, user: CurrentUser) -> WebUser:
    """For POSTs: the CSRF token must come in the form or in the X-CSRF-Token header."""
    sent = request.headers.get("x-csrf-token")
    if sent is None:
        form = await request.form()
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, user.csrf_token):
        raise CsrfFailed()
    return user


FormUser = Annotated[WebUser, Depends(_checked)]


def login_url(next_url: str) -> str:
    return f"/login?next={quote(next_url, safe='/')}"


def safe_next(value: str | None) -> str:
    """Only same-site paths: never redirect to another host after login."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/pools"
