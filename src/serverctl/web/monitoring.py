"""Monitoring pages: the pool's Monitoring tab (recipients, which pool alerts email, a test
email, the pool's alert history), a member's Monitoring sub-tab (its alerts' thresholds and its
alert history) and Settings → Email (the SMTP server).

The test-email buttons post with HTMX and get only the result line back; without JavaScript
the form posts and the whole page comes back with the result on it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from serverctl.api.deps import State
from serverctl.api.schemas import Id
from serverctl.domain.alerts import MEMBER_ALERTS, POOL_ALERTS
from serverctl.domain.mailer import DEFAULT_PORTS, SECURITY
from serverctl.errors import ServerCTLError, ValidationError
from serverctl.state import AppState
from serverctl.web.auth import CurrentUser, FormUser, WebUser
from serverctl.web.common import member_context, redirect, render, workspace

router = APIRouter(include_in_schema=False)
POOL = "/pools/{pool_id}/monitoring"
MEMBER = "/pools/{pool_id}/members/{member_id}/monitoring"
EMAIL = "/settings/email"


def _wants_partial(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


# -- the pool's Monitoring tab --------------------------------------------------------------------


def pool_context(state: AppState, user: WebUser, pool_id: int) -> dict[str, Any]:
    context = workspace(state, user, pool_id)
    settings = state.alerts.pool_alerts(user.principal, pool_id)
    smtp = state.smtp.get(user.principal)
    context.update(
        tab="monitoring",
        recipients="\n".join(settings["recipients"]),
        email_on=settings["email_on"],
        pool_alerts=POOL_ALERTS,
        smtp_configured=smtp["configured"],
        history=state.alerts.history(user.principal, pool_id, limit=50),
    )
    return context


def _pool_page(
    request: Request,
    state: State,
    user: WebUser,
    pool_id: int,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    context = pool_context(state, user, pool_id)
    context.update(extra)
    return render(request, "pool_monitoring.html", user, status_code, **context)


@router.get(POOL)
def pool_monitoring(
    request: Request, pool_id: Id, state: State, user: CurrentUser, saved: int = 0
) -> HTMLResponse:
    return _pool_page(request, state, user, pool_id, saved=bool(saved))


@router.post(POOL)
async def save_pool_monitoring(
    request: Request,
    pool_id: Id,
    state: State,
    user: FormUser,
    recipients: Annotated[str, Form()] = "",
) -> Response:
    form = await request.form()
    email_on = {kind: form.get(f"email_{kind}") == "on" for kind in POOL_ALERTS}
    addresses = [part for part in recipients.replace(",", " ").split() if part]
    try:
        state.alerts.set_pool_alerts(
            user.principal, pool_id, recipients=addresses, email_on=email_on
        )
    except ServerCTLError as exc:
        return _pool_page(
            request,
            state,
            user,
            pool_id,
            exc.status_code,
            error=exc.message,
            recipients=recipients,
            email_on=email_on,
        )
    return redirect(f"/pools/{pool_id}/monitoring?saved=1")


@router.post(POOL + "/test")
def pool_test_email(request: Request, pool_id: Id, state: State, user: FormUser) -> HTMLResponse:
    result = state.smtp.send_pool_test(user.principal, pool_id)
    if _wants_partial(request):
        return render(request, "_send_result.html", user, result=result)
    return _pool_page(request, state, user, pool_id, result=result)


# -- a member's Monitoring sub-tab ----------------------------------------------------------------


def _member_page(
    request: Request,
    state: State,
    user: WebUser,
    pool_id: int,
    member_id: int,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    context = member_context(state, user, pool_id, member_id, "monitoring")
    context.update(
        member_alerts=state.alerts.member_alerts(user.principal, pool_id, member_id),
        history=state.alerts.history(user.principal, pool_id, member_id, limit=50),
        **extra,
    )
    return render(request, "member_monitoring.html", user, status_code, **context)


@router.get(MEMBER)
def member_monitoring(
    request: Request,
    pool_id: Id,
    member_id: Id,
    state: State,
    user: CurrentUser,
    saved: int = 0,
) -> HTMLResponse:
    return _member_page(request, state, user, pool_id, member_id, saved=bool(saved))


@router.post(MEMBER)
async def save_member_monitoring(
    request: Request, pool_id: Id, member_id: Id, state: State, user: FormUser
) -> Response:
    form = await request.form()
    changes: dict[str, dict[str, Any]] = {}
    bad: list[str] = []
    for kind, spec in MEMBER_ALERTS.items():
        raw = str(form.get(f"threshold_{kind}") or "").strip()
        change: dict[str, Any] = {
            "enabled": form.get(f"enabled_{kind}") == "on",
            "email": form.get(f"email_{kind}") == "on",
        }
        if raw:
            try:
                change["threshold"] = int(raw)
            except ValueError:
                bad.append(f"{spec.title}: threshold {raw!r} is not a whole number")
        changes[kind] = change
    try:
        if bad:
            raise ValidationError("; ".join(bad))
        state.alerts.set_member_alerts(user.principal, pool_id, member_id, changes)
    except ServerCTLError as exc:
        return _member_page(
            request, state, user, pool_id, member_id, exc.status_code, error=exc.message
        )
    return redirect(f"/pools/{pool_id}/members/{member_id}/monitoring?saved=1")


# -- Settings → Email -----------------------------------------------------------------------------


def _email_page(
    request: Request, state: State, user: WebUser, status_code: int = 200, **extra: Any
) -> HTMLResponse:
    smtp = state.smtp.get(user.principal)
    form = {k: smtp[k] for k in ("host", "port", "security", "username", "from_address")}
    form.update(extra.pop("form", {}))
    return render(
        request,
        "settings_email.html",
        user,
        status_code,
        smtp=smtp,
        form=form,
        security=SECURITY,
        default_ports=DEFAULT_PORTS,
        **extra,
    )


@router.get(EMAIL)
def email_settings(request: Request, state: State, user: CurrentUser, saved: int = 0) -> Response:
    return _email_page(request, state, user, saved=bool(saved))


@router.post(EMAIL)
def save_email_settings(
    request: Request,
    state: State,
    user: FormUser,
    host: Annotated[str, Form()] = "",
    port: Annotated[str, Form()] = "",
    security: Annotated[str, Form()] = "starttls",
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    from_address: Annotated[str, Form()] = "",
) -> Response:
    form = {
        "host": host,
        "port": port,
        "security": security,
        "username": username,
        "from_address": from_address,
    }
    try:
        number = _port(port, security)
        state.smtp.set(
            user.principal,
            host=host,
            port=number,
            security=security,
            username=username,
            password=password or None,
            from_address=from_address,
        )
    except ServerCTLError as exc:
        return _email_page(request, state, user, exc.status_code, error=exc.message, form=form)
    return redirect(f"{EMAIL}?saved=1")


@router.post(EMAIL + "/test")
def email_test(
    request: Request, state: State, user: FormUser, to: Annotated[str, Form()] = ""
) -> HTMLResponse:
    addresses = [part for part in to.replace(",", " ").split() if part]
    result = state.smtp.send_test(user.principal, addresses)
    if _wants_partial(request):
        return render(request, "_send_result.html", user, result=result)
    return _email_page(request, state, user, result=result, test_to=to)


def _port(raw: str, security: str) -> int:
    raw = raw.strip()
    if not raw:
        return DEFAULT_PORTS.get(security, 587)
    try:
        return int(raw)
    except ValueError:
        raise ValidationError(f"port {raw!r} is not a number (1-65535)") from None
