"""The life of backup and restore jobs, as JobHooks see it, and the transfers agents make.

- At claim (`handout`, in the claim's transaction): a backup gets its snapshot row (`running`)
  and an upload transfer; a restore gets the snapshot's manifest and a download transfer. A
  transfer is a presigned URL from a direct store (S3), or else a one-time token for
  `/api/agents/backups/transfer/{token}` of which only the SHA-256 is kept.
- At completion (`review`, before the transaction): the result must describe a sane archive,
  and the archive read back from the store must have the SHA-256 and size the agent reported.
- `recorded` finishes the snapshot in the completion's transaction; `committed` then writes the
  manifest beside the archive, applies the member's retention and alerts on a failed backup.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from serverctl.backups.base import MAX_ARCHIVE_BYTES, BackupStore
from serverctl.db.models import (
    Alert,
    BackupPolicy,
    BackupSnapshot,
    BackupTransfer,
    Job,
    Member,
    Pool,
)
from serverctl.db.session import Database
from serverctl.db.types import utcnow
from serverctl.domain import audit
from serverctl.domain.alerts import AlertService
from serverctl.domain.backup_policies import expired, retention_of
from serverctl.domain.backup_results import BadResult, check_result, manifest_of
from serverctl.domain.backup_views import manifest_document, manifest_key
from serverctl.domain.catalogue import TERMINAL, JobState
from serverctl.domain.principal import Principal
from serverctl.domain.secrets import hash_secret
from serverctl.errors import AgentAuthError, Conflict, ServerCTLError, StorageError

log = logging.getLogger(__name__)

# Job type -> the snapshot kind it makes.
BACKUP_JOBS = {"haproxy.backup": "haproxy", "backup.ufw": "ufw"}
RESTORE_JOB = "haproxy.restore"
TRANSFER_PATH = "/api/agents/backups/transfer/"
# A transfer stays valid this long past the job's timeout (the agent's clock and queue).
TRANSFER_SLACK_S = 60
ALERT_KIND = "backup.failed"
RETENTION = Principal(kind="system", name="backup-retention", role="admin")


class StoreSource(Protocol):
    """Where snapshots go (serverctl.backups.settings.BackupStores)."""

    def current(self) -> BackupStore: ...

    def for_snapshot(self, store_kind: str, location: dict[str, Any]) -> BackupStore: ...


@dataclass(frozen=True)
class TransferGrant:
    """A checked transfer token: what the agent may upload to, or download from."""

    transfer_id: int
    direction: str
    store: BackupStore
    key: str
    size: int | None


def stamp(at: datetime) -> str:
    return at.strftime("%Y%m%dT%H%M%SZ")


def restore_problem(snap: BackupSnapshot | None, pool_id: int) -> str | None:
    """Why `snap` cannot be restored onto a member of `pool_id`, or None."""
    if snap is None:
        return "the snapshot no longer exists (deleted, or removed by retention)"
    if snap.kind != "haproxy":
        return (
            f"snapshot {snap.id} is a {snap.kind} backup: those are kept for reference and "
            "download, and ServerCTL does not restore them"
        )
    if snap.state != "completed":
        reason = f": {snap.error}" if snap.error else ""
        return f"snapshot {snap.id} is {snap.state}{reason}; only a completed snapshot restores"
    if snap.pool_id != pool_id:
        return (
            f"snapshot {snap.id} belongs to another pool; restores stay within the pool the "
            "snapshot was taken in"
        )
    return None


@contextlib.contextmanager
def store_errors(what: str) -> Iterator[None]:
    """A store plugin's unexpected exception becomes a StorageError: a raw one would roll back
    the claim and leave the job pending for ever."""
    try:
        yield
    except ServerCTLError:
        raise
    except Exception as exc:  # noqa: BLE001 - any plugin failure, reported to the operator
        log.exception("backup store failed while it %s", what)
        reason = f"{type(exc).__name__}: {exc}"[:300]
        raise StorageError(f"the backup store failed while it {what} ({reason})") from exc


class BackupJobs:
    def __init__(self, db: Database, stores: StoreSource, alerts: AlertService | None) -> None:
        self.db = db
        self.stores = stores
        self.alerts = alerts
        # Upload transfers in progress: a second PUT with the same token waits its turn (409).
        self._busy: set[int] = set()
        self._lock = threading.Lock()

    def store_of(self, snap: BackupSnapshot) -> BackupStore:
        with store_errors(f"opened the {snap.store} store of snapshot {snap.id}"):
            return self.stores.for_snapshot(snap.store, dict(snap.location))

    # -- claim ----------------------------------------------------------------------------------

    def handout(self, s: Session, job: Job) -> dict[str, Any]:
        if job.type in BACKUP_JOBS:
            return self._backup_params(s, job)
        if job.type == RESTORE_JOB:
            return self._restore_params(s, job)
        return dict(job.params)

    def _backup_params(self, s: Session, job: Job) -> dict[str, Any]:
        pool, member = s.get(Pool, job.pool_id), s.get(Member, job.member_id)
        if pool is None or member is None:
            raise Conflict("the member of this backup job no longer exists")
        with store_errors("was chosen for a new backup"):
            store = self.stores.current()
            location = store.location()
        snap = BackupSnapshot(
            pool_id=pool.id,
            member_id=member.id,
            hostname=member.hostname,
            job_id=job.id,
            kind=BACKUP_JOBS[job.type],
            state="running",
            store=store.kind,
            location=location,
            key="",
            source=job.source,
            enqueued_by=job.enqueued_by,
        )
        s.add(snap)
        s.flush()
        try:
            with store_errors("named and presigned the new archive"):
                snap.key = store.key_for(pool.name, member.hostname, stamp(utcnow()), snap.id)
                upload = self._transfer(s, store, snap, job, "upload")
        except ServerCTLError:
            # The job fails with the message and the claim commits: leave no half-made snapshot.
            s.delete(snap)
            s.flush()
            raise
        return {"snapshot_id": snap.id, "upload": upload, "max_bytes": MAX_ARCHIVE_BYTES}

    def _restore_params(self, s: Session, job: Job) -> dict[str, Any]:
        snap = s.get(BackupSnapshot, job.params.get("snapshot_id"))
        problem = restore_problem(snap, job.pool_id)
        if problem is not None or snap is None:
            raise Conflict(problem or "no snapshot")
        store = self.store_of(snap)
        with store_errors("presigned a download"):
            download = self._transfer(s, store, snap, job, "download")
        return {
            "snapshot_id": snap.id,
            "source_hostname": snap.hostname,
            "archive_sha256": snap.sha256,
            "size": snap.size,
            "files": list((snap.manifest or {}).get("files") or []),
            "download": download,
        }

    @staticmethod
    def _transfer(
        s: Session, store: BackupStore, snap: BackupSnapshot, job: Job, direction: str
    ) -> dict[str, Any]:
        method: Literal["PUT", "GET"] = "PUT" if direction == "upload" else "GET"
        expires_s = job.timeout_s + TRANSFER_SLACK_S
        if store.direct:
            return store.presign(snap.key, method, expires_s)
        token = secrets.token_urlsafe(32)
        s.add(
            BackupTransfer(
                token_hash=hash_secret(token),
                snapshot_id=snap.id,
                member_id=job.member_id,
                job_id=job.id,
                direction=direction,
                expires_at=utcnow() + timedelta(seconds=expires_s),
            )
        )
        transfer: dict[str, Any] = {"method": method, "path": TRANSFER_PATH + token}
        if method == "PUT":
            transfer["headers"] = {"Content-Type": "application/gzip"}
        return transfer

    # -- completion -----------------------------------------------------------------------------

    def review(
        self, job_id: int, state: str, summary: str, result: dict[str, Any] | None
    ) -> tuple[str, str]:
        if state != JobState.COMPLETED:
            return state, summary
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None or job.type not in BACKUP_JOBS:
                return state, summary
            snap = _snapshot_of(s, job_id)
            if snap is None:
                return "failed", "the control plane has no snapshot for this backup job"
            try:
                parsed = check_result(result, snap.id)
                store = self.store_of(snap)
            except BadResult as exc:
                return "failed", str(exc)
            except ServerCTLError as exc:
                return "failed", f"cannot check the uploaded archive: {exc.message}"
            key = snap.key
        try:
            with store_errors("read the uploaded archive back"):
                stored = store.digest(key)
        except ServerCTLError as exc:
            return "failed", f"cannot check the uploaded archive: {exc.message}"
        if stored is None:
            return "failed", f"the archive never reached the store (no object {key})"
        if (stored.sha256, stored.size) != (parsed.archive_sha256, parsed.size):
            return "failed", (
                f"the archive in the store ({stored.size} bytes, SHA-256 {stored.sha256[:16]}…) "
                f"is not the one the agent made ({parsed.size} bytes, SHA-256 "
                f"{parsed.archive_sha256[:16]}…)"
            )
        return state, summary

    def recorded(self, s: Session, job: Job) -> None:
        s.execute(delete(BackupTransfer).where(BackupTransfer.job_id == job.id))
        if job.type not in BACKUP_JOBS:
            return
        snap = _snapshot_of(s, job.id)
        if snap is None or snap.state != "running":
            return
        if job.state != JobState.COMPLETED:
            _fail(snap, job.summary or f"the backup job ended {job.state}")
            return
        try:
            parsed = check_result(job.result, snap.id)
        except BadResult as exc:  # review saw it first; kept for a hook-less completion
            _fail(snap, str(exc))
            return
        snap.state = "completed"
        snap.sha256 = parsed.archive_sha256
        snap.size = parsed.size
        snap.manifest = manifest_of(parsed)
        snap.haproxy_version = parsed.haproxy_version
        snap.completed_at = utcnow()
        snap.error = None
        if snap.member_id is not None:
            s.execute(
                update(Alert)
                .where(
                    Alert.member_id == snap.member_id,
                    Alert.kind == ALERT_KIND,
                    Alert.resolved_at.is_(None),
                )
                .values(resolved_at=utcnow())
            )

    def committed(self, job_id: int) -> None:
        try:
            self._after_backup(job_id)
        except Exception:  # noqa: BLE001 - the job's result is recorded; this is housekeeping
            log.exception("after backup job %s: writing the manifest or retention failed", job_id)

    def _after_backup(self, job_id: int) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            snap = _snapshot_of(s, job_id) if job and job.type in BACKUP_JOBS else None
        if snap is None:
            return
        if snap.state == "failed":
            # An upload the review refused is garbage: it must not look like a backup.
            self.delete_objects(snap, strict=False)
            self._alert_failed([snap.id])
            return
        if snap.state != "completed":
            return
        document, key, store = manifest_document(snap), snap.key, self.store_of(snap)
        member_id, kind = snap.member_id, snap.kind
        with store_errors("wrote a manifest"):
            store.put_bytes(manifest_key(key), document)
        if member_id is not None:
            self.apply_retention(member_id, kind)

    # -- retention and tidying ------------------------------------------------------------------

    def apply_retention(self, member_id: int, kind: str, now: datetime | None = None) -> int:
        """Delete the member's snapshots of `kind` its policy no longer keeps: objects first,
        then rows (a store failure keeps the row, so the next round tries again)."""
        now = now or utcnow()
        with self.db.session() as s:
            snaps = list(
                s.scalars(
                    select(BackupSnapshot).where(
                        BackupSnapshot.member_id == member_id,
                        BackupSnapshot.kind == kind,
                        BackupSnapshot.state.in_(["completed", "failed"]),
                    )
                )
            )
            doomed = set(expired(snaps, retention_of(s.get(BackupPolicy, member_id)), now))
            targets = [x for x in snaps if x.id in doomed]
        gone = [x.id for x in targets if self.delete_objects(x, strict=x.state == "completed")]
        if gone:
            with self.db.session() as s:
                s.execute(delete(BackupSnapshot).where(BackupSnapshot.id.in_(gone)))
                audit.record(
                    s, RETENTION, "backup.retention", f"member:{member_id}", {"deleted": gone}
                )
        return len(gone)

    def delete_objects(self, snap: BackupSnapshot, strict: bool = True) -> bool:
        """Remove the archive and its manifest. `strict`: a store failure is raised; otherwise
        it is logged and reported as False (a failed backup may have left nothing)."""
        try:
            store = self.store_of(snap)
            with store_errors("deleted an archive"):
                store.delete(snap.key)
                store.delete(manifest_key(snap.key))
        except ServerCTLError as exc:
            if strict:
                raise
            log.warning("cannot delete the objects of snapshot %s: %s", snap.id, exc.message)
            return snap.state == "failed"
        return True

    def tidy(self, now: datetime | None = None) -> int:
        """Snapshots left `running` by a job that ended otherwise (timed out, cancelled, lost)
        become `failed` with the job's summary; expired transfers go. Returns the changes."""
        now = now or utcnow()
        failed: list[int] = []
        with self.db.session() as s:
            rows = s.execute(
                select(BackupSnapshot, Job)
                .outerjoin(Job, Job.id == BackupSnapshot.job_id)
                .where(BackupSnapshot.state == "running")
            ).all()
            for snap, job in rows:
                if job is not None and job.state not in TERMINAL:
                    continue
                reason = (
                    f"the backup job ended {job.state}: {job.summary or 'no summary'}"
                    if job is not None
                    else "the backup job is gone (its member was deleted?)"
                )
                _fail(snap, reason)
                failed.append(snap.id)
            cleared = s.execute(delete(BackupTransfer).where(BackupTransfer.expires_at < now))
            count = len(failed) + (cleared.rowcount or 0)  # type: ignore[attr-defined]
        self._alert_failed(failed)
        return count

    def _alert_failed(self, snapshot_ids: list[int]) -> None:
        if self.alerts is None or not snapshot_ids:
            return
        with self.db.session() as s:
            rows = s.execute(
                select(BackupSnapshot, Pool)
                .join(Pool, Pool.id == BackupSnapshot.pool_id)
                .where(BackupSnapshot.id.in_(snapshot_ids))
            ).all()
            found = [(p.id, p.name, x.member_id, x.hostname, x.kind, x.error) for x, p in rows]
        for pool_id, pool_name, member_id, hostname, kind, error in found:
            try:
                self.alerts.raise_alert(
                    pool_id,
                    ALERT_KIND,
                    f"[{pool_name}] {kind} backup of {hostname} failed",
                    f"The {kind} backup of {hostname} failed: {error or 'no reason given'}",
                    member_id=member_id,
                )
            except Exception:  # noqa: BLE001 - an alert must never break the job's bookkeeping
                log.exception("raising the backup alert for %s failed", hostname)

    # -- the agent's transfers ------------------------------------------------------------------

    def open_transfer(self, member_id: int, token: str, direction: str) -> TransferGrant:
        """Check a transfer token for this member and direction; AgentAuthError with the status
        (404 unknown, 403 not this member's or direction, 410 used/expired/job over, 409 busy)."""
        with self.db.session() as s:
            transfer = s.scalar(
                select(BackupTransfer).where(BackupTransfer.token_hash == hash_secret(token))
            )
            if transfer is None:
                raise AgentAuthError(
                    "unknown backup transfer token (never issued, or cleaned up after its job)",
                    404,
                )
            _check_transfer(s, transfer, member_id, direction)
            snap = s.get(BackupSnapshot, transfer.snapshot_id)
            assert snap is not None  # the transfer cascades away with its snapshot
            grant_id, key, size = transfer.id, snap.key, snap.size
            store = self.store_of(snap)
        if direction == "upload":
            with self._lock:
                if grant_id in self._busy:
                    raise AgentAuthError("an upload with this token is already in progress", 409)
                self._busy.add(grant_id)
        return TransferGrant(grant_id, direction, store, key, size)

    def finish_transfer(self, grant: TransferGrant, succeeded: bool) -> None:
        """An upload or download ended: the token is spent only when it succeeded."""
        try:
            if succeeded:
                with self.db.session() as s:
                    s.execute(
                        update(BackupTransfer)
                        .where(BackupTransfer.id == grant.transfer_id)
                        .values(used_at=utcnow())
                    )
        finally:
            with self._lock:
                self._busy.discard(grant.transfer_id)


def _check_transfer(s: Session, transfer: BackupTransfer, member_id: int, direction: str) -> None:
    if transfer.member_id != member_id:
        raise AgentAuthError("this backup transfer token was issued to another member", 403)
    if transfer.direction != direction:
        raise AgentAuthError(
            f"this backup transfer token is for {transfer.direction}ing, not {direction}ing", 403
        )
    if transfer.used_at is not None:
        raise AgentAuthError("this backup transfer token was already used (it works once)", 410)
    if transfer.expires_at <= utcnow():
        raise AgentAuthError("this backup transfer token has expired", 410)
    job = s.get(Job, transfer.job_id) if transfer.job_id is not None else None
    if job is None or job.state != JobState.RUNNING:
        ended = job.state if job is not None else "gone"
        raise AgentAuthError(f"the job of this backup transfer is over ({ended})", 410)


def _snapshot_of(s: Session, job_id: int) -> BackupSnapshot | None:
    return s.scalar(select(BackupSnapshot).where(BackupSnapshot.job_id == job_id))


def _fail(snap: BackupSnapshot, reason: str) -> None:
    snap.state = "failed"
    snap.error = reason[:2000]
