"""The audit log: every change, who made it, when and from where."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from serverctl.db.models import AuditEntry
from serverctl.domain.principal import Principal


def record(
    session: Session,
    principal: Principal,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Add an entry in the caller's transaction, so the change and its record land together."""
    session.add(
        AuditEntry(
            actor=principal.actor,
            action=action,
            target=target,
            detail=detail,
            source_ip=principal.source_ip,
        )
    )


def recent(session: Session, limit: int = 100, offset: int = 0) -> tuple[list[AuditEntry], int]:
    total = session.scalar(select(func.count()).select_from(AuditEntry)) or 0
    rows = session.scalars(
        select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit).offset(offset)
    ).all()
    return list(rows), total
