"""Request and response bodies of the REST API (they make the OpenAPI document at /docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from annotated_types import Interval
from pydantic import BaseModel, ConfigDict, Field

from serverctl.db.types import MAX_DB_INT

T = TypeVar("T")

# An id in a path, a query or a body: a huge one is refused as input (422), see MAX_DB_INT.
Id = Annotated[int, Interval(ge=1, le=MAX_DB_INT)]


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FailoverSettings(BaseModel):
    automatic: bool
    delay_s: int
    haproxy_monitored: bool
    cooldown_s: int
    last_auto_failover_at: datetime | None = None


class FailoverUpdate(Strict):
    automatic: bool | None = Field(default=None, description="automatic failover on/off")
    delay_s: int | None = Field(default=None, description="10-120 seconds")
    haproxy_monitored: bool | None = None
    cooldown_s: int | None = Field(
        default=None, description="0-3600 seconds after an automatic promotion"
    )


class DnsProviderCreate(Strict):
    name: str = Field(examples=["cloudflare-prod"])
    kind: str = Field(examples=["cloudflare", "cpanel", "rfc2136", "powerdns"])
    config: dict[str, Any] = Field(
        examples=[{"api_url": "http://127.0.0.1:8081", "api_key": "...", "server_id": "localhost"}]
    )


class DnsProviderOut(BaseModel):
    id: int
    name: str
    kind: str
    title: str
    supports_proxied: bool
    settings: dict[str, Any] = Field(description="the non-secret settings; secrets never return")
    created_at: datetime
    created_by: str
    linked_pools: int


class DnsTestIn(Strict):
    zone: str | None = Field(default=None, description="also check this zone is there")


class DnsTestOut(BaseModel):
    ok: bool
    detail: str


class PoolDnsIn(Strict):
    provider_id: Id
    zone: str = Field(examples=["example.com"])
    label: str = Field(examples=["lb"], description="'@' for the zone apex")
    ttl: int = Field(default=60, description="1-86400 seconds")
    proxied: bool = Field(default=False, description="Cloudflare only; raw TCP needs false")
    ddns: bool = Field(default=False, description="dynamic DNS sync of the active member's IPv4")
    check_servers: list[str] = Field(
        default_factory=list,
        description="authoritative servers to query for propagation (host or host:port)",
    )


class PoolCreate(Strict):
    name: str = Field(examples=["production-edge"])
    template: Literal["haproxy", "linux"] = "haproxy"


class PoolOut(BaseModel):
    id: int
    name: str
    template: str
    created_at: datetime
    active_member_id: int | None
    failover: FailoverSettings
    member_count: int
    healthy_count: int


class MemberCreate(Strict):
    hostname: str = Field(examples=["edge-1"])
    allowed_ips: list[str] = Field(examples=[["203.0.113.10"]])


class Heartbeat(BaseModel):
    at: datetime
    ip: str | None
    version: str | None
    haproxy: dict[str, Any] | None


class HealthOut(BaseModel):
    state: Literal["pending", "healthy", "unhealthy"]
    heartbeat_age_s: float | None
    reason: str | None


class RejectionOut(BaseModel):
    at: datetime
    status: int
    reason: str
    source_ip: str
    count: int = 1


class MemberOut(BaseModel):
    id: int
    pool_id: int
    hostname: str
    allowed_ips: list[str]
    role: Literal["active", "standby"]
    created_at: datetime
    enrolled_at: datetime | None
    heartbeat: Heartbeat | None
    health: HealthOut
    last_rejection: RejectionOut | None


class MemberCreated(MemberOut):
    secret: str = Field(description="The enrolment secret: shown in this answer only.")
    install_command: str = Field(description="The one-shot install command: shown once.")


class UserCreate(Strict):
    name: str
    role: Literal["viewer", "operator", "admin"] = "viewer"
    password: str | None = Field(default=None, description="Generated when left out.")


class UserOut(BaseModel):
    id: int
    name: str
    role: str
    created_at: datetime
    disabled: bool


class UserCreated(UserOut):
    password: str = Field(description="Shown in this answer only.")


class TokenCreate(Strict):
    name: str
    role: Literal["viewer", "operator", "admin"] = "admin"


class TokenOut(BaseModel):
    id: int
    name: str
    role: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="Shown in this answer only.")


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any] | None
    source_ip: str | None
