"""The tables. Portable SQL only: the same migrations serve SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from serverctl.db.types import JSONText, UTCDateTime, utcnow


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebSession(Base):
    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Pool(Base):
    __tablename__ = "pools"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    template: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    failover_delay_s: Mapped[int] = mapped_column(Integer, default=30)
    haproxy_monitored: Mapped[bool] = mapped_column(Boolean, default=True)
    # No foreign key: members point at their pool, and a cycle would complicate deletes.
    active_member_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    failover_automatic: Mapped[bool] = mapped_column(Boolean, default=False)
    failover_cooldown_s: Mapped[int] = mapped_column(Integer, default=300)
    # The cool-down counts from the last automatic promotion only (manual cutovers do not).
    last_auto_failover_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    alert_recipients: Mapped[list[str]] = mapped_column(JSONText, default=list)
    # Which pool events email the recipients; see serverctl.domain.alerts.POOL_ALERTS.
    alert_settings: Mapped[dict[str, Any] | None] = mapped_column(JSONText, nullable=True)

    members: Mapped[list[Member]] = relationship(
        back_populates="pool", cascade="all, delete-orphan", order_by="Member.id"
    )


class Member(Base):
    __tablename__ = "members"
    __table_args__ = (UniqueConstraint("pool_id", "hostname", name="uq_members_pool_hostname"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"), index=True)
    hostname: Mapped[str] = mapped_column(String(253))
    allowed_ips: Mapped[list[str]] = mapped_column(JSONText)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The latest heartbeat, written when it changes and, for last_seen_at, in batches.
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_ip: Mapped[str | None] = mapped_column(String(45), nullable=True)
    agent_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    haproxy: Mapped[dict[str, Any] | None] = mapped_column(JSONText, nullable=True)
    # Per-member alert thresholds; see serverctl.domain.alerts.MEMBER_ALERTS.
    alert_settings: Mapped[dict[str, Any] | None] = mapped_column(JSONText, nullable=True)

    pool: Mapped[Pool] = relationship(back_populates="members")


class RevokedSecret(Base):
    """Hashes of rotated or revoked enrolment secrets, so a late agent is told why it is refused."""

    __tablename__ = "revoked_secrets"

    id: Mapped[int] = mapped_column(primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AgentRejection(Base):
    """A refused agent request that could be tied to a member (shown on its card)."""

    __tablename__ = "agent_rejections"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    source_ip: Mapped[str] = mapped_column(String(45))
    count: Mapped[int] = mapped_column(Integer, default=1)


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONText, nullable=True)
    source_ip: Mapped[str | None] = mapped_column(String(45), nullable=True)


class Job(Base):
    """One unit of remote work on one member; see serverctl.domain.jobs for its life."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("member_id", "idempotency_key", name="uq_jobs_member_idempotency"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"), index=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    # Recipe steps point at the recipe's job; their order is step_index.
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True, index=True
    )
    step_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    type: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSONText)
    state: Mapped[str] = mapped_column(String(16), index=True)
    source: Mapped[str] = mapped_column(String(16))
    enqueued_by: Mapped[str] = mapped_column(String(128))
    idempotency_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    timeout_s: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    output: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONText, nullable=True)


class Schedule(Base):
    """A cron schedule (UTC) that enqueues a job on one member or every member of a pool."""

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"), index=True)
    member_id: Mapped[int | None] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), nullable=True, index=True
    )
    job_type: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSONText)
    cron: Mapped[str] = mapped_column(String(120))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    next_run_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AppSetting(Base):
    """Control-plane-wide settings edited in the UI (SMTP, later ACME). Secret parts are kept
    apart, encrypted (serverctl.crypto)."""

    __tablename__ = "app_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSONText)
    secrets_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(128))


class DnsProviderAccount(Base):
    """Named, reusable DNS provider credentials (Settings → API providers)."""

    __tablename__ = "dns_providers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    # The non-secret settings (shown); the secret ones only encrypted (never shown again).
    settings: Mapped[dict[str, Any]] = mapped_column(JSONText)
    secrets_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))


class PoolDns(Base):
    """A pool's managed A record: where it lives and what was last published."""

    __tablename__ = "pool_dns"

    pool_id: Mapped[int] = mapped_column(
        ForeignKey("pools.id", ondelete="CASCADE"), primary_key=True
    )
    provider_id: Mapped[int] = mapped_column(ForeignKey("dns_providers.id"), index=True)
    zone: Mapped[str] = mapped_column(String(253))
    label: Mapped[str] = mapped_column(String(253))
    ttl: Mapped[int] = mapped_column(Integer)
    proxied: Mapped[bool] = mapped_column(Boolean, default=False)
    ddns: Mapped[bool] = mapped_column(Boolean, default=False)
    # Authoritative servers to query for propagation ("host" or "host:port"); empty: ask the
    # provider, then the zone's NS records.
    check_servers: Mapped[list[str]] = mapped_column(JSONText, default=list)
    linked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DnsUpdate(Base):
    """One intended A record change. Only the newest pending one of a pool is applied; older
    pending ones are superseded, so changes never land out of order."""

    __tablename__ = "dns_updates"

    id: Mapped[int] = mapped_column(primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"), index=True)
    address: Mapped[str] = mapped_column(String(45))
    reason: Mapped[str] = mapped_column(String(255))
    # pending → applied | superseded
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Read back through the provider; then seen on the authoritative servers.
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    propagated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    propagation: Mapped[str | None] = mapped_column(Text, nullable=True)
    alerted: Mapped[bool] = mapped_column(Boolean, default=False)


class FailoverEvent(Base):
    """One promotion: when, why, from, to, the DNS result and the timings."""

    __tablename__ = "failover_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # automatic | manual (Make active) | cutover (Cut DNS to standby)
    trigger: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(128))
    from_member_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    from_hostname: Mapped[str | None] = mapped_column(String(253), nullable=True)
    to_member_id: Mapped[int] = mapped_column(Integer)
    to_hostname: Mapped[str] = mapped_column(String(253))
    address: Mapped[str | None] = mapped_column(String(45), nullable=True)
    # When the failure was first seen (automatic only): detection → promotion → DNS.
    detected_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    dns_update_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Alert(Base):
    """Something operators should hear about; emailed to the pool's recipients when enabled."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"), index=True)
    member_id: Mapped[int | None] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), nullable=True, index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255))
    message: Mapped[str] = mapped_column(Text)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # none (not emailed) | pending | sent | failed
    email_state: Mapped[str] = mapped_column(String(16), default="none")
    email_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class BackupSnapshot(Base):
    """One backup: an archive in a store plus its manifest. Created when an agent claims the
    backup job (`running`), finished by the job's result (`completed` / `failed`). Kept when its
    member is deleted: a replacement host is rebuilt from it (`hostname` says whose it was)."""

    __tablename__ = "backup_snapshots"

    id: Mapped[int] = mapped_column(primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"), index=True)
    member_id: Mapped[int | None] = mapped_column(
        ForeignKey("members.id", ondelete="SET NULL"), nullable=True, index=True
    )
    hostname: Mapped[str] = mapped_column(String(253))
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True, index=True
    )
    # "haproxy" (haproxy.backup) or "ufw" (backup.ufw).
    kind: Mapped[str] = mapped_column(String(16))
    # "running", "completed" or "failed".
    state: Mapped[str] = mapped_column(String(16), index=True)
    # The store plugin's name ("local", "s3") and where it was (no secrets): a snapshot stays
    # readable from the store it went to.
    store: Mapped[str] = mapped_column(String(32))
    location: Mapped[dict[str, Any]] = mapped_column(JSONText)
    key: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # {"files": [...], "skipped": [...], "config_valid": bool, ...} as the agent reported them.
    manifest: Mapped[dict[str, Any] | None] = mapped_column(JSONText, nullable=True)
    haproxy_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    source: Mapped[str] = mapped_column(String(16))
    enqueued_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class BackupTransfer(Base):
    """A one-time URL of this control plane for an agent's upload to, or download from, the
    local store. Only the token's hash is kept; it works once, for one member, until it expires."""

    __tablename__ = "backup_transfers"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    snapshot_id: Mapped[int] = mapped_column(
        ForeignKey("backup_snapshots.id", ondelete="CASCADE"), index=True
    )
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # "upload" or "download".
    direction: Mapped[str] = mapped_column(String(8))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class BackupPolicy(Base):
    """A member's own backup schedule and retention (the Restore Backups tab)."""

    __tablename__ = "backup_policies"

    member_id: Mapped[int] = mapped_column(
        ForeignKey("members.id", ondelete="CASCADE"), primary_key=True
    )
    # Cron expression (UTC) for haproxy.backup, or None for on-demand only.
    cron: Mapped[str | None] = mapped_column(String(120), nullable=True)
    keep_last: Mapped[int | None] = mapped_column(Integer, nullable=True)
    keep_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str] = mapped_column(String(128))


class TlsOrder(Base):
    """One certificate order for a `tls.acme_issue` / `tls.acme_renew_force` job: the agent's CSR,
    then the CA's chain or error (domain/tls_orders.py). One per job: a new CSR for the same job
    (the agent restarted) replaces it until it is finished. Kept 90 days: the back-offs and
    Let's Encrypt's duplicate-certificate count are read from them."""

    __tablename__ = "tls_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"), index=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    names: Mapped[list[str]] = mapped_column(JSONText)
    # The names sorted and joined with ",": the exact name set the CA's limits count by.
    names_key: Mapped[str] = mapped_column(String(2600), index=True)
    csr: Mapped[str] = mapped_column(Text)
    csr_sha256: Mapped[str] = mapped_column(String(64))
    # pending → running → valid | failed
    state: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    chain: Mapped[str | None] = mapped_column(Text, nullable=True)
    not_after: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    serial: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Set when the CA answered rateLimited: no new order for this pool and name set before it.
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
