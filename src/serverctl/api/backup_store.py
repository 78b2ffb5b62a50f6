"""The backup store (Settings → Backups): where archives go, shown without its secrets, and a
connectivity test."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from serverctl.api.deps import Operator, State
from serverctl.api.errors import API_ERRORS, UPSTREAM_ERRORS
from serverctl.api.json_route import StrictJSONRoute
from serverctl.api.schemas import Strict

router = APIRouter(tags=["backups"], responses=API_ERRORS, route_class=StrictJSONRoute)


class BackupStoreIn(Strict):
    kind: str = Field(examples=["s3"], description="a store kind: local, s3 or a plugin's")
    settings: dict[str, Any] = Field(
        default_factory=dict,
        examples=[{"bucket": "acme-haproxy-backups", "prefix": "serverctl", "region": "eu-west-3"}],
    )
    secrets: dict[str, str | None] | None = Field(
        default=None,
        description="stored encrypted and never answered; left out or empty: keep the stored "
        "ones (same kind only)",
        examples=[{"access_key_id": "AKIA...", "secret_access_key": "..."}],
    )


class StoreField(BaseModel):
    name: str
    required: bool
    default: Any = None
    description: str


class StoreKind(BaseModel):
    kind: str
    title: str
    direct: bool = Field(description="agents transfer straight to the store (presigned URLs)")
    settings: list[StoreField]
    secrets: list[StoreField]


class BackupStoreOut(BaseModel):
    kind: str
    title: str
    direct: bool
    settings: dict[str, Any]
    secrets_set: list[str] = Field(description="names of the secrets stored; values never")
    location: dict[str, Any] | None = Field(
        description="where new snapshots go (saved on each snapshot)"
    )
    problem: str | None = Field(description="why the saved store cannot be used as it is")
    kinds: list[StoreKind]
    updated_at: datetime | None
    updated_by: str | None


class StoreTestOut(BaseModel):
    ok: bool
    kind: str
    detail: str


@router.get("/api/settings/backup-store", response_model=BackupStoreOut)
def get_backup_store(state: State, who: Operator) -> dict[str, Any]:
    return state.backup_stores.view(who)


@router.put("/api/settings/backup-store", response_model=BackupStoreOut, responses=UPSTREAM_ERRORS)
def put_backup_store(body: BackupStoreIn, state: State, who: Operator) -> dict[str, Any]:
    """Admin only. New snapshots go to this store; existing ones stay readable where they are
    while that store is reachable. Secrets are stored encrypted; leave them out to keep them."""
    return state.backup_stores.put(who, body.kind, body.settings, body.secrets)


@router.post(
    "/api/settings/backup-store/test", response_model=StoreTestOut, responses=UPSTREAM_ERRORS
)
def test_backup_store(state: State, who: Operator) -> dict[str, Any]:
    """Admin only. Writes, reads back and deletes a small object in the saved store; a failure
    answers 502 with the store's own reason."""
    return state.backup_stores.test(who)
