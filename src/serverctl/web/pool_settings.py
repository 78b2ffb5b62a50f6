"""The pool Settings tab: failover delay, automatic failover, HAProxy monitoring, the cool-down,
alert recipients, and the worst-case failover time they add up to; and deleting the pool."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from serverctl.api.deps import State
from serverctl.api.schemas import Id
from serverctl.domain.alerts import email_addresses
from serverctl.errors import ServerCTLError, ValidationError
from serverctl.state import AppState
from serverctl.web.auth import CurrentUser, FormUser, WebUser
from serverctl.web.common import redirect, render, workspace
from serverctl.web.pool_summary import dns_summary, worst_case

router = APIRouter(include_in_schema=False)


def settings_context(state: AppState, user: WebUser, pool_id: int) -> dict[str, Any]:
    context = workspace(state, user, pool_id)
    dns = state.pool_dns.view(user.principal, pool_id, read_provider=False)
    context.update(
        tab="settings",
        dns=dns,
        dns_state=dns_summary(dns),
        worst=worst_case(state, context["pool"], dns),
        alerts=state.alerts.pool_alerts(user.principal, pool_id),
    )
    return context


def _seconds(value: str | None, what: str) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        return int(value.strip())
    except ValueError:
        raise ValidationError(f"{what} must be a whole number of seconds, not {value!r}") from None


def split_addresses(text: str) -> list[str]:
    """Recipients as typed: separated by commas, semicolons, spaces or new lines."""
    return [part for part in re.split(r"[\s,;]+", text) if part]


@router.get("/pools/{pool_id}/settings")
def settings_page(request: Request, pool_id: Id, state: State, user: CurrentUser) -> HTMLResponse:
    return render(request, "settings.html", user, **settings_context(state, user, pool_id))


@router.post("/pools/{pool_id}/settings")
def save_settings(
    request: Request,
    pool_id: Id,
    state: State,
    user: FormUser,
    delay_s: Annotated[str, Form()],
    automatic: Annotated[str | None, Form()] = None,
    haproxy_monitored: Annotated[str | None, Form()] = None,
    cooldown_s: Annotated[str | None, Form()] = None,
    recipients: Annotated[str | None, Form()] = None,
) -> Response:
    """Unticked boxes are not sent, so a missing box means off; a missing field means unchanged."""
    try:
        delay = _seconds(delay_s, "the failover delay")
        if delay is None:
            raise ValidationError("the failover delay is required (10-120 seconds)")
        cooldown = _seconds(cooldown_s, "the cool-down")
        # Check the addresses before saving anything, so a typo there saves nothing.
        addresses = email_addresses(split_addresses(recipients)) if recipients is not None else None
        state.pools.set_failover(
            user.principal,
            pool_id,
            automatic=automatic == "on",
            delay_s=delay,
            haproxy_monitored=haproxy_monitored == "on",
            cooldown_s=cooldown,
        )
        if addresses is not None:
            state.alerts.set_pool_alerts(user.principal, pool_id, recipients=addresses)
    except ServerCTLError as exc:
        return render(
            request,
            "settings.html",
            user,
            exc.status_code,
            error=exc.message,
            form={
                "delay_s": delay_s,
                "automatic": automatic == "on",
                "haproxy_monitored": haproxy_monitored == "on",
                "cooldown_s": cooldown_s,
                "recipients": recipients,
            },
            **settings_context(state, user, pool_id),
        )
    return render(
        request, "settings.html", user, saved=True, **settings_context(state, user, pool_id)
    )


@router.post("/pools/{pool_id}/delete")
def delete_pool(pool_id: Id, state: State, user: FormUser) -> Response:
    state.pools.delete_pool(user.principal, pool_id)
    return redirect("/pools")
