"""The pool Overview: the traffic-flow diagram, KPI tiles, member cards, Add member, Make active
and Cut DNS to standby. The live part (`/pools/{id}/cards`) is polled every 2 s."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from serverctl.agent_dist import install_command
from serverctl.api.deps import State
from serverctl.api.schemas import Id
from serverctl.dns import registry
from serverctl.domain.certificates import from_member_views
from serverctl.errors import ServerCTLError
from serverctl.state import AppState
from serverctl.web.auth import CurrentUser, FormUser, WebUser
from serverctl.web.common import base_url, redirect, render, workspace
from serverctl.web.pool_summary import dns_summary, is_ready, kpis, worst_case

router = APIRouter(include_in_schema=False)

# The diagram's geometry (SVG user units): DNS, then the active member, then the standbys.
NODE_W, NODE_H, ROW_H, PAD = 230, 66, 84, 16
COLUMNS = (16, 386, 756)
DIAGRAM_W = COLUMNS[2] + NODE_W + 16


def diagram(members: list[dict[str, Any]]) -> dict[str, Any]:
    """Where each node of the traffic-flow diagram goes."""
    active = next((m for m in members if m["role"] == "active"), None)
    standbys = [m for m in members if m["role"] != "active"]
    rows = max(1, len(standbys))
    height = PAD * 2 + rows * ROW_H - (ROW_H - NODE_H)
    middle = (height - NODE_H) // 2
    return {
        "width": DIAGRAM_W,
        "height": height,
        "w": NODE_W,
        "h": NODE_H,
        "dns": {"x": COLUMNS[0], "y": middle},
        "active": {"x": COLUMNS[1], "y": middle, "member": active},
        "standbys": [
            {"x": COLUMNS[2], "y": PAD + i * ROW_H, "member": m, "ready": is_ready(m)}
            for i, m in enumerate(standbys)
        ],
        "empty_standby": {"x": COLUMNS[2], "y": middle} if not standbys else None,
    }


def overview_context(state: AppState, user: WebUser, pool_id: int) -> dict[str, Any]:
    """Everything the Overview and its live partial show."""
    context = workspace(state, user, pool_id)
    members = context["members"]
    dns = state.pool_dns.view(user.principal, pool_id, read_provider=False)
    context.update(
        tab="overview",
        provider_title=_title(dns),
        dns=dns,
        dns_state=dns_summary(dns),
        worst=worst_case(state, context["pool"], dns),
        kpis=kpis(state, user, pool_id, members),
        flow=diagram(members),
        incident=state.failover.incident(pool_id),
        certificates=from_member_views(pool_id, members, dns),
        cert_failures=state.tls_renewal.open_failures(pool_id),
    )
    return context


def _title(dns: dict[str, Any]) -> str | None:
    """'Cloudflare', 'PowerDNS'...: the linked provider's kind as people write it."""
    provider = dns.get("provider") if dns.get("linked") else None
    if not provider:
        return None
    try:
        return registry.provider_class(provider["kind"]).title
    except ServerCTLError:
        return str(provider["kind"])


def _notice(context: dict[str, Any], done: str | None, member_id: int | None) -> str | None:
    """The message after a Make active / Cut DNS that redirected back here."""
    member = next((m for m in context["members"] if m["id"] == member_id), None)
    if done == "activated" and member:
        return f"{member['hostname']} is now the active member; the A record is moving to it."
    if done == "republished" and member:
        return f"The A record was published again for {member['hostname']}."
    last = context["kpis"]["last_failover"]
    if done == "cutover" and last:
        was = f" (was {last['from']['hostname']})" if last["from"] else ""
        return f"Cut DNS to standby: {last['to']['hostname']} is now active{was}."
    return None


@router.get("/pools/{pool_id}")
def overview(
    request: Request,
    pool_id: Id,
    state: State,
    user: CurrentUser,
    created: int = 0,
    done: str | None = None,
    member: int | None = None,
) -> HTMLResponse:
    context = overview_context(state, user, pool_id)
    return render(
        request,
        "overview.html",
        user,
        created=bool(created),
        notice=_notice(context, done, member),
        **context,
    )


@router.get("/pools/{pool_id}/cards")
def overview_live(request: Request, pool_id: Id, state: State, user: CurrentUser) -> HTMLResponse:
    return render(request, "_cards.html", user, oob=True, **overview_context(state, user, pool_id))


def _refused(
    request: Request, state: State, user: WebUser, pool_id: int, exc: ServerCTLError
) -> HTMLResponse:
    context = overview_context(state, user, pool_id)
    return render(
        request, "overview.html", user, exc.status_code, action_error=exc.message, **context
    )


@router.post("/pools/{pool_id}/members/{member_id}/activate")
def make_active(
    request: Request, pool_id: Id, member_id: Id, state: State, user: FormUser
) -> Response:
    """Make active (or, on the active member, publish the record again)."""
    was_active = state.pools.get_pool(user.principal, pool_id)["active_member_id"] == member_id
    try:
        state.failover.activate(user.principal, pool_id, member_id)
    except ServerCTLError as exc:
        return _refused(request, state, user, pool_id, exc)
    done = "republished" if was_active else "activated"
    return redirect(f"/pools/{pool_id}?done={done}&member={member_id}")


@router.post("/pools/{pool_id}/cutover")
def cut_dns(request: Request, pool_id: Id, state: State, user: FormUser) -> Response:
    """Cut DNS to standby: the next failover-ready standby becomes active."""
    try:
        state.failover.cutover(user.principal, pool_id)
    except ServerCTLError as exc:
        return _refused(request, state, user, pool_id, exc)
    return redirect(f"/pools/{pool_id}?done=cutover")


@router.post("/pools/{pool_id}/members")
def add_member(
    request: Request,
    pool_id: Id,
    state: State,
    user: FormUser,
    hostname: Annotated[str, Form()],
    allowed_ips: Annotated[str, Form()],
) -> HTMLResponse:
    ips = [part for part in allowed_ips.replace(",", " ").split() if part]
    try:
        created = state.pools.add_member(user.principal, pool_id, hostname.strip(), ips)
    except ServerCTLError as exc:
        return render(
            request,
            "overview.html",
            user,
            exc.status_code,
            member_error=exc.message,
            form_hostname=hostname,
            form_ips=allowed_ips,
            **overview_context(state, user, pool_id),
        )
    command = install_command(base_url(state, request), created.secret, created.member["hostname"])
    return render(
        request,
        "overview.html",
        user,
        201,
        new_member=created.member,
        install=command,
        **overview_context(state, user, pool_id),
    )
