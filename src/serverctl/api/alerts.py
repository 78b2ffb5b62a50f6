"""Alerts and email: the SMTP server, a pool's recipients and alert kinds, member alert
thresholds, test emails and alert history."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from serverctl.api.deps import Operator, State
from serverctl.api.errors import API_ERRORS, UPSTREAM_ERRORS
from serverctl.api.json_route import StrictJSONRoute
from serverctl.api.schemas import Id, Page, Strict

router = APIRouter(tags=["alerts and email"], responses=API_ERRORS, route_class=StrictJSONRoute)


class SmtpIn(Strict):
    host: str = Field(examples=["smtp.example.com"])
    port: int = Field(default=587, description="1-65535")
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str = Field(default="", description="empty: no login")
    password: str | None = Field(
        default=None, description="empty or left out: keep the stored password"
    )
    from_address: str = Field(examples=["serverctl@example.com"])


class SmtpOut(BaseModel):
    configured: bool
    host: str
    port: int
    security: str
    username: str
    from_address: str
    password_set: bool = Field(description="the password itself is never returned")
    updated_at: datetime | None
    updated_by: str | None


class TestEmailIn(Strict):
    to: list[str] | str = Field(examples=["ops@example.com"])


class SendResult(BaseModel):
    ok: bool
    detail: str


class PoolAlertsIn(Strict):
    recipients: list[str] | None = Field(default=None, examples=[["ops@example.com"]])
    email_on: dict[str, bool] | None = Field(
        default=None, examples=[{"failover.promoted": True, "failover.cooldown": False}]
    )


class PoolAlertsOut(BaseModel):
    recipients: list[str]
    email_on: dict[str, bool]


class AlertOut(BaseModel):
    id: int
    at: datetime
    pool_id: int
    member_id: int | None
    hostname: str | None
    kind: str
    title: str
    subject: str
    message: str
    resolved_at: datetime | None
    email_state: Literal["none", "pending", "sent", "failed"]
    email_error: str | None


class MemberAlertIn(Strict):
    enabled: bool | None = None
    threshold: int | None = Field(default=None, description="within the kind's min-max")
    email: bool | None = Field(default=None, description="email the pool's recipients")


class MemberAlertsIn(Strict):
    alerts: dict[str, MemberAlertIn] = Field(
        examples=[{"member.heartbeat_lost": {"enabled": True, "threshold": 30}}]
    )


class MemberAlertOut(BaseModel):
    enabled: bool
    threshold: int
    email: bool
    title: str
    unit: str
    help: str
    default: int
    min: int
    max: int
    open: bool = Field(description="an incident is open (raised, not yet resolved)")


class MemberAlertsOut(BaseModel):
    pool_id: int
    member_id: int
    hostname: str
    haproxy_monitored: bool
    rejection_window_s: int
    alerts: dict[str, MemberAlertOut]


@router.get("/api/settings/smtp", response_model=SmtpOut)
def get_smtp(state: State, who: Operator) -> dict[str, Any]:
    return state.smtp.get(who)


@router.put("/api/settings/smtp", response_model=SmtpOut)
def set_smtp(body: SmtpIn, state: State, who: Operator) -> dict[str, Any]:
    """Admin only. The password is stored encrypted; leave it out to keep the stored one."""
    return state.smtp.set(who, **body.model_dump())


@router.post("/api/settings/smtp/test", response_model=SendResult, responses=UPSTREAM_ERRORS)
def test_smtp(body: TestEmailIn, state: State, who: Operator) -> dict[str, Any]:
    """Send a test email now; `detail` says what the SMTP server answered."""
    to = [body.to] if isinstance(body.to, str) else body.to
    return state.smtp.send_test(who, to)


@router.get("/api/pools/{pool_id}/alerts", response_model=PoolAlertsOut)
def get_pool_alerts(pool_id: Id, state: State, who: Operator) -> dict[str, Any]:
    return state.alerts.pool_alerts(who, pool_id)


@router.put("/api/pools/{pool_id}/alerts", response_model=PoolAlertsOut)
def set_pool_alerts(pool_id: Id, body: PoolAlertsIn, state: State, who: Operator) -> dict[str, Any]:
    """Who gets the pool's alert emails, and which pool alerts are emailed."""
    return state.alerts.set_pool_alerts(
        who, pool_id, recipients=body.recipients, email_on=body.email_on
    )


@router.post(
    "/api/pools/{pool_id}/alerts/test", response_model=SendResult, responses=UPSTREAM_ERRORS
)
def test_pool_alerts(pool_id: Id, state: State, who: Operator) -> dict[str, Any]:
    """Send a test email to the pool's recipients."""
    return state.smtp.send_pool_test(who, pool_id)


@router.get("/api/pools/{pool_id}/alerts/history", response_model=Page[AlertOut])
def pool_history(pool_id: Id, state: State, who: Operator, limit: int = 50) -> dict[str, Any]:
    """The pool's newest alerts, its members' included."""
    items = state.alerts.history(who, pool_id, limit=limit)
    return {"items": items, "total": len(items)}


@router.get("/api/pools/{pool_id}/members/{member_id}/alerts", response_model=MemberAlertsOut)
def get_member_alerts(pool_id: Id, member_id: Id, state: State, who: Operator) -> dict[str, Any]:
    return state.alerts.member_alerts(who, pool_id, member_id)


@router.put("/api/pools/{pool_id}/members/{member_id}/alerts", response_model=MemberAlertsOut)
def set_member_alerts(
    pool_id: Id, member_id: Id, body: MemberAlertsIn, state: State, who: Operator
) -> dict[str, Any]:
    """Change some of the member's alerts; fields left out keep their value."""
    changes = {kind: values.model_dump(exclude_none=True) for kind, values in body.alerts.items()}
    return state.alerts.set_member_alerts(who, pool_id, member_id, changes)


@router.get(
    "/api/pools/{pool_id}/members/{member_id}/alerts/history", response_model=Page[AlertOut]
)
def member_history(
    pool_id: Id, member_id: Id, state: State, who: Operator, limit: int = 50
) -> dict[str, Any]:
    items = state.alerts.history(who, pool_id, member_id, limit=limit)
    return {"items": items, "total": len(items)}
