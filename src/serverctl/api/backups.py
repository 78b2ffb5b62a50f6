"""Backups: the operator REST API (docs/backups.md, "REST") and the agents' one-time transfer
endpoint for stores they cannot reach directly (`/api/agents/backups/transfer/{token}`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import anyio.from_thread
import anyio.to_thread
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field, StrictInt
from starlette.requests import ClientDisconnect

from serverctl.api.deps import Operator, State, source_ip
from serverctl.api.errors import API_ERRORS, UPSTREAM_ERRORS
from serverctl.api.json_route import StrictJSONRoute
from serverctl.api.schemas import Id, Page, Strict
from serverctl.backups.base import MAX_ARCHIVE_BYTES
from serverctl.db.types import utcnow
from serverctl.domain.agents import AgentRequest
from serverctl.domain.backup_jobs import TransferGrant, store_errors
from serverctl.domain.live import Rejection
from serverctl.errors import AgentAuthError, ServerCTLError, StorageError
from serverctl.state import AppState

router = APIRouter(tags=["backups"], responses=API_ERRORS, route_class=StrictJSONRoute)
log = logging.getLogger(__name__)

MEMBER = "/api/pools/{pool_id}/members/{member_id}"


class BackupCreate(Strict):
    kind: Literal["haproxy", "ufw"] = Field(
        default="haproxy", description="haproxy queues haproxy.backup, ufw queues backup.ufw"
    )
    idempotency_key: str | None = Field(default=None, max_length=128)


class RestoreIn(Strict):
    target_member_id: Id | None = Field(
        default=None, description="a member of the snapshot's pool; default: its own member"
    )


class ProvisionIn(Strict):
    snapshot_id: Id | None = Field(
        default=None, description="default: the active member's latest completed HAProxy backup"
    )
    install_haproxy: Literal["auto"] | bool = Field(
        default="auto", description='"auto": install when the member reports no HAProxy'
    )


class PolicyIn(Strict):
    cron: str | None = Field(default=None, examples=["0 3 * * *"], description="UTC; null: off")
    keep_last: StrictInt | None = Field(default=None, description="1-1000, or null")
    keep_days: StrictInt | None = Field(default=None, description="1-3650, or null")


class JobQueued(Strict):
    job_id: int


# -- operators ----------------------------------------------------------------------------------


@router.post(MEMBER + "/backups", status_code=202, response_model=JobQueued)
def enqueue_backup(
    pool_id: Id,
    member_id: Id,
    state: State,
    who: Operator,
    body: BackupCreate | None = None,
) -> dict[str, Any]:
    body = body or BackupCreate()
    return state.backups.enqueue_backup(
        who, pool_id, member_id, body.kind, idempotency_key=body.idempotency_key
    )


@router.get(MEMBER + "/backups", response_model=Page[dict[str, Any]])
def list_backups(
    pool_id: Id,
    member_id: Id,
    state: State,
    who: Operator,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    items = state.backups.list_snapshots(who, pool_id, member_id, limit)
    return {"items": items, "total": len(items)}


@router.get("/api/pools/{pool_id}/backups", response_model=Page[dict[str, Any]])
def list_pool_backups(pool_id: Id, state: State, who: Operator) -> dict[str, Any]:
    items = state.backups.pool_snapshots(who, pool_id)
    return {"items": items, "total": len(items)}


@router.get("/api/backups/{snapshot_id}")
def get_backup(snapshot_id: Id, state: State, who: Operator) -> dict[str, Any]:
    return state.backups.get_snapshot(who, snapshot_id)


@router.get("/api/backups/{snapshot_id}/diff")
def diff_backup(
    snapshot_id: Id, state: State, who: Operator, target_member_id: Id | None = None
) -> dict[str, Any]:
    return state.backups.diff(who, snapshot_id, target_member_id)


@router.get("/api/backups/{snapshot_id}/archive", responses=UPSTREAM_ERRORS)
def download_archive(snapshot_id: Id, state: State, who: Operator) -> StreamingResponse:
    filename, chunks = state.backups.open_archive(who, snapshot_id)
    return StreamingResponse(
        chunks,
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.delete("/api/backups/{snapshot_id}", status_code=204, responses=UPSTREAM_ERRORS)
def delete_backup(snapshot_id: Id, state: State, who: Operator) -> Response:
    state.backups.delete_snapshot(who, snapshot_id)
    return Response(status_code=204)


@router.post("/api/backups/{snapshot_id}/restore", status_code=202, response_model=JobQueued)
def restore_backup(
    snapshot_id: Id, state: State, who: Operator, body: RestoreIn | None = None
) -> dict[str, Any]:
    target = body.target_member_id if body else None
    return state.backups.restore(who, snapshot_id, target)


@router.post(MEMBER + "/provision-from-backup", status_code=202, response_model=JobQueued)
def provision_from_backup(
    pool_id: Id, member_id: Id, state: State, who: Operator, body: ProvisionIn | None = None
) -> dict[str, Any]:
    body = body or ProvisionIn()
    return state.backups.provision_standby(
        who, pool_id, member_id, body.snapshot_id, body.install_haproxy
    )


@router.get(MEMBER + "/backup-policy")
def get_policy(pool_id: Id, member_id: Id, state: State, who: Operator) -> dict[str, Any]:
    return state.backups.get_policy(who, pool_id, member_id)


@router.put(MEMBER + "/backup-policy")
def set_policy(
    pool_id: Id, member_id: Id, body: PolicyIn, state: State, who: Operator
) -> dict[str, Any]:
    return state.backups.set_policy(
        who, pool_id, member_id, body.cron, body.keep_last, body.keep_days
    )


# -- agents: the one-time transfers -------------------------------------------------------------


class _TooLarge(Exception):
    pass


def _answer(exc: ServerCTLError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    if exc.status_code == 413:
        headers = {"Connection": "close"}  # the rest of the body is not read
    return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=headers)


async def _grant(request: Request, state: AppState, token: str, direction: str) -> TransferGrant:
    """The agent's checks (secret, address, X-Balctl-Hostname), then the token's."""
    ip = source_ip(request)
    member = state.gate.transfer(
        AgentRequest(request.headers.get("authorization"), ip, b""),
        request.headers.get("x-balctl-hostname"),
    )
    try:
        return await asyncio.to_thread(
            state.backups.open_transfer, member.member_id, token, direction
        )
    except AgentAuthError as exc:
        state.live.record_rejection(
            member.member_id, Rejection(utcnow(), exc.status_code, exc.message, ip)
        )
        log.info("backup transfer refused (%s): %s", exc.status_code, exc.message)
        raise


@router.put("/api/agents/backups/transfer/{token}", include_in_schema=False)
async def upload(token: str, request: Request, state: State) -> Response:
    """The agent's archive, streamed into the store (never held whole in memory)."""
    try:
        grant = await _grant(request, state, token, "upload")
    except ServerCTLError as exc:
        return _answer(exc)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_ARCHIVE_BYTES:
        state.backups.finish_transfer(grant, succeeded=False)
        return _answer(_too_large())
    stream = request.stream().__aiter__()

    async def next_chunk() -> bytes | None:
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return None

    def chunks() -> Iterator[bytes]:
        size = 0
        while (chunk := anyio.from_thread.run(next_chunk)) is not None:
            size += len(chunk)
            if size > MAX_ARCHIVE_BYTES:
                raise _TooLarge
            if chunk:
                yield chunk

    succeeded = False
    try:
        stored = await anyio.to_thread.run_sync(
            grant.store.write, grant.key, chunks(), MAX_ARCHIVE_BYTES
        )
        succeeded = True
    except _TooLarge:
        return _answer(_too_large())
    except ClientDisconnect:
        log.info("an agent's backup upload broke off before its end; nothing was stored")
        return JSONResponse({"detail": "the upload broke off; nothing was stored"}, status_code=400)
    except ServerCTLError as exc:
        log.warning("storing a backup upload failed: %s", exc.message)
        return _answer(exc)
    except Exception as exc:  # noqa: BLE001 - a store plugin's own failure: the agent retries
        log.exception("storing a backup upload failed")
        return _answer(StorageError(f"the backup store failed to store the upload: {exc}"))
    finally:
        await asyncio.to_thread(state.backups.finish_transfer, grant, succeeded)
    return JSONResponse({"ok": True, "size": stored.size, "sha256": stored.sha256})


@router.get("/api/agents/backups/transfer/{token}", include_in_schema=False)
async def download(token: str, request: Request, state: State) -> Response:
    """The archive a restore job needs, streamed from the store."""
    try:
        grant = await _grant(request, state, token, "download")
        chunks = await asyncio.to_thread(_open_download, grant)
    except ServerCTLError as exc:
        return _answer(exc)

    def send() -> Iterator[bytes]:
        yield from chunks
        # Spent only once every byte went out: a broken download can be tried again.
        state.backups.finish_transfer(grant, succeeded=True)

    return StreamingResponse(send(), media_type="application/gzip")


def _open_download(grant: TransferGrant) -> Iterator[bytes]:
    """Read the first chunk now, so a store failure is an answer, not a broken stream."""
    with store_errors("read an archive for a restore"):
        chunks = grant.store.read(grant.key)
        first = next(chunks, b"")

    def rest() -> Iterator[bytes]:
        if first:
            yield first
        yield from chunks

    return rest()


def _too_large() -> ServerCTLError:
    return AgentAuthError(
        f"the archive is larger than the {MAX_ARCHIVE_BYTES} bytes a backup may be", 413
    )
