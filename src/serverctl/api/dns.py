"""Managed DNS, cutover and failover: provider accounts, a pool's record, Make active, Cut DNS
to standby, and failover events."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from serverctl.api.deps import Operator, State
from serverctl.api.errors import API_ERRORS, UPSTREAM_ERRORS
from serverctl.api.json_route import StrictJSONRoute
from serverctl.api.schemas import (
    DnsProviderCreate,
    DnsProviderOut,
    DnsTestIn,
    DnsTestOut,
    Id,
    Page,
    PoolDnsIn,
)

router = APIRouter(tags=["dns and failover"], responses=API_ERRORS, route_class=StrictJSONRoute)


@router.post("/api/dns-providers", status_code=201, response_model=DnsProviderOut)
def create_provider(body: DnsProviderCreate, state: State, who: Operator) -> dict[str, Any]:
    """Save named credentials; the secret settings are encrypted and never shown again."""
    return state.dns_accounts.create(who, body.name, body.kind, body.config)


@router.get("/api/dns-providers", response_model=Page[DnsProviderOut])
def list_providers(state: State, who: Operator) -> dict[str, Any]:
    items = state.dns_accounts.list_all(who)
    return {"items": items, "total": len(items)}


@router.get("/api/dns-providers/{provider_id}", response_model=DnsProviderOut)
def get_provider(provider_id: Id, state: State, who: Operator) -> dict[str, Any]:
    return state.dns_accounts.get(who, provider_id)


@router.delete("/api/dns-providers/{provider_id}", status_code=204)
def delete_provider(provider_id: Id, state: State, who: Operator) -> Response:
    state.dns_accounts.delete(who, provider_id)
    state.publisher.forget_provider(provider_id)
    return Response(status_code=204)


@router.post(
    "/api/dns-providers/{provider_id}/test", response_model=DnsTestOut, responses=UPSTREAM_ERRORS
)
def test_provider(
    provider_id: Id, state: State, who: Operator, body: DnsTestIn | None = None
) -> dict[str, Any]:
    """Connectivity test: says exactly what is wrong (credentials, permission, zone, network)."""
    result = state.dns_accounts.test(who, provider_id, body.zone if body else None)
    return {"ok": result.ok, "detail": result.detail}


@router.get("/api/dns-providers/{provider_id}/zones", responses=UPSTREAM_ERRORS)
def provider_zones(provider_id: Id, state: State, who: Operator) -> dict[str, Any]:
    """The zones these credentials can edit (to choose one when linking a pool)."""
    zones = state.dns_accounts.zones(who, provider_id)
    return {"items": zones, "total": len(zones)}


@router.put("/api/pools/{pool_id}/dns", responses=UPSTREAM_ERRORS)
def link_dns(pool_id: Id, body: PoolDnsIn, state: State, who: Operator) -> dict[str, Any]:
    """Link the pool's record and publish it for the active member at once."""
    return state.pool_dns.link(who, pool_id, **body.model_dump())


@router.get("/api/pools/{pool_id}/dns", responses=UPSTREAM_ERRORS)
def get_dns(pool_id: Id, state: State, who: Operator) -> dict[str, Any]:
    """The link, the last update, and `current`: the A record as the provider has it now."""
    return state.pool_dns.view(who, pool_id)


@router.delete("/api/pools/{pool_id}/dns", status_code=204)
def unlink_dns(pool_id: Id, state: State, who: Operator) -> Response:
    state.pool_dns.unlink(who, pool_id)
    return Response(status_code=204)


@router.post("/api/pools/{pool_id}/dns/test", response_model=DnsTestOut, responses=UPSTREAM_ERRORS)
def test_pool_dns(pool_id: Id, state: State, who: Operator) -> dict[str, Any]:
    return state.pool_dns.test(who, pool_id)


@router.post("/api/pools/{pool_id}/members/{member_id}/activate", responses=UPSTREAM_ERRORS)
def activate(pool_id: Id, member_id: Id, state: State, who: Operator) -> dict[str, Any]:
    """Make active: the member becomes active and the A record moves to its IPv4 (on the
    active member, the record is published again)."""
    return state.failover.activate(who, pool_id, member_id)


@router.post("/api/pools/{pool_id}/cutover", responses=UPSTREAM_ERRORS)
def cutover(pool_id: Id, state: State, who: Operator) -> dict[str, Any]:
    """Cut DNS to standby: promote the next failover-ready standby."""
    return state.failover.cutover(who, pool_id)


@router.get("/api/pools/{pool_id}/events")
def failover_events(pool_id: Id, state: State, who: Operator, limit: int = 50) -> dict[str, Any]:
    items = state.failover.events(who, pool_id, limit)
    return {"items": items, "total": len(items)}
