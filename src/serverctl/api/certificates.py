"""The TLS certificate inventory of a pool: `GET /api/pools/{pool_id}/certificates`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from serverctl.api.deps import Operator, State
from serverctl.api.errors import API_ERRORS
from serverctl.api.json_route import StrictJSONRoute
from serverctl.api.schemas import Id
from serverctl.domain.certificates import pool_certificates

router = APIRouter(
    prefix="/api/pools", tags=["certificates"], responses=API_ERRORS, route_class=StrictJSONRoute
)


class CertificateOut(BaseModel):
    member_id: int
    hostname: str
    path: str = Field(examples=["/etc/haproxy/certs/lb.example.com.pem"])
    subject: str | None = Field(description="null when the file could not be read")
    sans: list[str] = Field(description="the DNS names the certificate covers")
    issuer: str | None
    not_after: datetime | None = Field(description="expiry, UTC; null when not readable")
    days_left: int | None = Field(description="whole days left, negative once expired")
    serial: str | None
    referenced: bool = Field(description="HAProxy's configuration loads this file")
    status: Literal["ok", "expiring", "critical", "expired", "error"] = Field(
        description="expiring: under 30 days left (the renewal window); critical: under 7"
    )
    failover_cert: bool = Field(
        description="the pool's failover certificate, /etc/haproxy/certs/<fqdn>.pem"
    )
    error: str | None = Field(
        default=None, description="only when status is error: why the file could not be read"
    )


class MemberCertificatesOut(BaseModel):
    member_id: int
    hostname: str
    reporting: bool = Field(description="false: the agent has never reported certificates")
    certificates: int
    failover_days_left: int | None = Field(
        description="days left of the member's failover certificate, null when it has none"
    )


class PoolCertificatesOut(BaseModel):
    pool_id: int
    fqdn: str | None = Field(description="the pool's failover FQDN; null while DNS is not linked")
    failover_path: str | None
    items: list[CertificateOut]
    total: int
    members: list[MemberCertificatesOut]


@router.get(
    "/{pool_id}/certificates",
    response_model=PoolCertificatesOut,
    # `error` only on the entries that have one.
    response_model_exclude_unset=True,
)
def list_certificates(pool_id: Id, state: State, who: Operator) -> dict[str, Any]:
    """Every member's TLS certificates as its agent last reported them, with the days left."""
    inventory = pool_certificates(state.db, state.live, who, pool_id).as_dict()
    return {**inventory, "total": len(inventory["items"])}
