"""The ACME settings (Settings → TLS): which CA issues the pools' certificates, the account's
contact, a CA bundle for a private ACME server, DNS servers that show the challenge records.
The account key is kept encrypted and never answered."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from serverctl.acme.settings import LETS_ENCRYPT, LETS_ENCRYPT_STAGING
from serverctl.api.deps import Operator, State
from serverctl.api.errors import API_ERRORS
from serverctl.api.json_route import StrictJSONRoute
from serverctl.api.schemas import Strict

router = APIRouter(tags=["tls"], responses=API_ERRORS, route_class=StrictJSONRoute)


class AcmeSettingsIn(Strict):
    directory_url: str = Field(
        examples=[LETS_ENCRYPT],
        description=f"the ACME directory (https only): Let's Encrypt {LETS_ENCRYPT}, its "
        f"staging {LETS_ENCRYPT_STAGING}, or any RFC 8555 server. Changing it drops the "
        "stored account: the next order registers a new one on the new CA.",
    )
    email: str = Field(examples=["ops@example.com"], description="the ACME account's contact")
    ca_bundle: str | None = Field(
        default=None,
        description="PEM certificates that verify a private ACME server's HTTPS; empty or "
        "left out: the system's trust store",
    )
    check_servers: list[str] | None = Field(
        default=None,
        examples=[["192.0.2.53", "ns2.example.net:53"]],
        description="DNS servers (host or host:port, at most 8) that must show a challenge's "
        "TXT record before it is answered; empty: the zone's own servers",
    )


class AcmeSettingsOut(BaseModel):
    configured: bool
    directory_url: str
    email: str
    ca_bundle: str | None
    check_servers: list[str]
    account_registered: bool = Field(
        description="an account is registered on this directory (its key is never returned)"
    )
    account_url: str | None
    updated_at: datetime | None
    updated_by: str | None


@router.get("/api/settings/acme", response_model=AcmeSettingsOut)
def get_acme(state: State, who: Operator) -> dict[str, Any]:
    return state.acme_settings.get(who)


@router.put("/api/settings/acme", response_model=AcmeSettingsOut)
def set_acme(body: AcmeSettingsIn, state: State, who: Operator) -> dict[str, Any]:
    """Admin only; audited. A changed directory drops the stored account."""
    return state.acme_settings.set(who, **body.model_dump())
