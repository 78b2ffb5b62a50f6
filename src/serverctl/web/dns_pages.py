"""The pool's Managed DNS tab: which provider and zone, the failover label and its FQDN, proxied
vs DNS-only, TTL, dynamic DNS sync, check servers; Save, Unlink, the connectivity test, the
record as the provider has it now (read lazily) and the latest DNS update.

Anything that talks to the provider (zones, the current record, the test) is its own small
partial fetched by HTMX, so the page itself renders even when the provider is slow."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from serverctl.api.deps import State
from serverctl.api.schemas import Id
from serverctl.dns import names
from serverctl.errors import ServerCTLError, ValidationError
from serverctl.state import AppState
from serverctl.web.auth import CurrentUser, FormUser, WebUser
from serverctl.web.common import redirect, render, workspace
from serverctl.web.pool_summary import dns_summary, worst_case

router = APIRouter(include_in_schema=False)
DNS = "/pools/{pool_id}/dns"
DEFAULT_TTL = 60


def dns_context(state: AppState, user: WebUser, pool_id: int) -> dict[str, Any]:
    context = workspace(state, user, pool_id)
    dns = state.pool_dns.view(user.principal, pool_id, read_provider=False)
    providers = state.dns_accounts.list_all(user.principal)
    linked_id = dns["provider"]["id"] if dns.get("linked") and dns.get("provider") else None
    selected = next((p for p in providers if p["id"] == linked_id), None) or (
        providers[0] if providers else None
    )
    context.update(
        tab="dns",
        dns=dns,
        dns_state=dns_summary(dns),
        worst=worst_case(state, context["pool"], dns),
        providers=providers,
        selected=selected,
        form={
            "provider_id": selected["id"] if selected else None,
            "zone": dns.get("zone", ""),
            "label": dns.get("label", "lb"),
            "ttl": dns.get("ttl", DEFAULT_TTL),
            "proxied": dns.get("proxied", False),
            "ddns": dns.get("ddns", False),
            "check_servers": ", ".join(dns.get("check_servers", [])),
        },
    )
    return context


def preview(label: str, zone: str) -> tuple[str | None, str | None]:
    """(FQDN, None) or (None, what is wrong) for a label and zone as typed."""
    if not zone.strip():
        return None, "choose a zone"
    try:
        return names.fqdn(label, zone), None
    except ValidationError as exc:
        return None, exc.message


def _page(
    request: Request,
    state: State,
    user: WebUser,
    pool_id: int,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    context = dns_context(state, user, pool_id)
    if "form" in extra:
        context["form"] = {**context["form"], **extra.pop("form")}
        chosen = context["form"]["provider_id"]
        context["selected"] = next(
            (p for p in context["providers"] if p["id"] == chosen), context["selected"]
        )
    label, zone = context["form"]["label"], context["form"]["zone"]
    context["fqdn"], context["fqdn_error"] = preview(str(label), str(zone))
    return render(request, "dns.html", user, status_code, **context, **extra)


@router.get(DNS)
def dns_page(
    request: Request,
    pool_id: Id,
    state: State,
    user: CurrentUser,
    saved: int = 0,
    unlinked: int = 0,
) -> HTMLResponse:
    return _page(request, state, user, pool_id, saved=bool(saved), unlinked=bool(unlinked))


# -- partials -------------------------------------------------------------------------------------


@router.get(DNS + "/zones")
def zone_field(
    request: Request,
    pool_id: Id,
    state: State,
    user: CurrentUser,
    provider_id: Id | None = None,
    zone: str = "",
    label: str = "",
    proxied: str | None = None,
) -> HTMLResponse:
    """The zone chooser for a provider (a text box when its zones cannot be listed), and, out
    of band, the proxied choice that provider allows and the FQDN preview."""
    state.pools.get_pool(user.principal, pool_id)
    zones: list[str] | None = None
    error = None
    provider = None
    zone = zone.strip().rstrip(".").lower()
    if provider_id is not None:
        try:
            provider = state.dns_accounts.get(user.principal, provider_id)
            if user.principal.role in ("operator", "admin"):
                zones = state.dns_accounts.zones(user.principal, provider_id)
        except ServerCTLError as exc:
            error = exc.message
    if zones and not zone:
        zone = zones[0]
    fqdn, fqdn_error = preview(label, zone)
    return render(
        request,
        "_dns_zone.html",
        user,
        pool={"id": pool_id},
        zones=zones,
        zones_error=error,
        zone=zone,
        selected=provider,
        form={"proxied": proxied == "on"},
        fqdn=fqdn,
        fqdn_error=fqdn_error,
        oob=True,
    )


@router.get(DNS + "/preview")
def fqdn_preview(
    request: Request, pool_id: Id, user: CurrentUser, label: str = "", zone: str = ""
) -> HTMLResponse:
    fqdn, error = preview(label, zone)
    return render(request, "_dns_preview.html", user, fqdn=fqdn, fqdn_error=error)


@router.get(DNS + "/current")
def current_record(request: Request, pool_id: Id, state: State, user: CurrentUser) -> HTMLResponse:
    """The A record as the provider has it now, and whether it matches the active member."""
    dns = state.pool_dns.view(user.principal, pool_id, read_provider=True)
    return render(request, "_dns_current.html", user, pool={"id": pool_id}, dns=dns)


@router.get(DNS + "/status")
def update_status(request: Request, pool_id: Id, state: State, user: CurrentUser) -> HTMLResponse:
    dns = state.pool_dns.view(user.principal, pool_id, read_provider=False)
    return render(
        request,
        "_dns_update.html",
        user,
        pool={"id": pool_id},
        dns=dns,
        dns_state=dns_summary(dns),
    )


# -- actions --------------------------------------------------------------------------------------


def _int(value: str, what: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValidationError(f"{what} must be a whole number, not {value!r}") from None


@router.post(DNS)
def save_dns(
    request: Request,
    pool_id: Id,
    state: State,
    user: FormUser,
    provider_id: Annotated[str, Form()] = "",
    zone: Annotated[str, Form()] = "",
    label: Annotated[str, Form()] = "",
    ttl: Annotated[str, Form()] = str(DEFAULT_TTL),
    proxied: Annotated[str | None, Form()] = None,
    ddns: Annotated[str | None, Form()] = None,
    check_servers: Annotated[str, Form()] = "",
) -> Response:
    """Save = PUT /api/pools/{id}/dns: link (or re-link) and publish for the active member."""
    chosen = int(provider_id) if provider_id.strip().isdigit() else None
    form = {
        "provider_id": chosen,
        "zone": zone,
        "label": label,
        "ttl": ttl,
        "proxied": proxied == "on",
        "ddns": ddns == "on",
        "check_servers": check_servers,
    }
    try:
        if chosen is None:
            raise ValidationError("choose a DNS provider (add one under Settings → API providers)")
        state.pool_dns.link(
            user.principal,
            pool_id,
            provider_id=chosen,
            zone=zone,
            label=label,
            ttl=_int(ttl, "the TTL"),
            proxied=proxied == "on",
            ddns=ddns == "on",
            check_servers=[s for s in re.split(r"[\s,]+", check_servers) if s],
        )
    except ServerCTLError as exc:
        return _page(request, state, user, pool_id, exc.status_code, error=exc.message, form=form)
    return redirect(f"/pools/{pool_id}/dns?saved=1")


@router.post(DNS + "/unlink")
def unlink_dns(request: Request, pool_id: Id, state: State, user: FormUser) -> Response:
    try:
        state.pool_dns.unlink(user.principal, pool_id)
    except ServerCTLError as exc:
        return _page(request, state, user, pool_id, exc.status_code, error=exc.message)
    return redirect(f"/pools/{pool_id}/dns?unlinked=1")


@router.post(DNS + "/test")
def test_dns(request: Request, pool_id: Id, state: State, user: FormUser) -> Response:
    """The DNS connectivity test; HTMX gets just the result, a plain form post the page."""
    try:
        result = state.pool_dns.test(user.principal, pool_id)
    except ServerCTLError as exc:
        result = {"ok": False, "detail": exc.message}
    if request.headers.get("hx-request"):
        return render(request, "_dns_test.html", user, test=result)
    return _page(request, state, user, pool_id, test=result)
