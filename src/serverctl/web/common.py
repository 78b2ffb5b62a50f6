"""What every web route uses: templates, rendering, redirects, the workspace context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from serverctl import __version__
from serverctl.api.deps import State
from serverctl.web.auth import WebUser
from serverctl.web.format import register_filters

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
register_filters(templates.env)


def render(
    request: Request,
    template: str,
    user: WebUser | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    context.update(request=request, user=user, version=__version__)
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def base_url(state: State, request: Request) -> str:
    return (state.settings.public_url or str(request.base_url)).rstrip("/")


def workspace(state: State, user: WebUser, pool_id: int) -> dict[str, Any]:
    pool = state.pools.get_pool(user.principal, pool_id)
    members = state.pools.list_members(user.principal, pool_id)
    return {"pool": pool, "members": members}


def member_context(
    state: State, user: WebUser, pool_id: int, member_id: int, subtab: str
) -> dict[str, Any]:
    context = workspace(state, user, pool_id)
    context.update(
        tab=f"member-{member_id}",
        subtab=subtab,
        member=state.pools.get_member(user.principal, pool_id, member_id),
    )
    return context
