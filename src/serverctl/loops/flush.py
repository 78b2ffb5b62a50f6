"""Writes the live heartbeat state to the database in batches.

Changes (IP, version, HAProxy state, first enrolment) are written within about a second;
last-seen times of members whose heartbeat changed nothing else only every
`last_seen_flush_s`, all members in one transaction. Rejections are written here too, so a
flood of refused requests never touches the database from the request path.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import select, update

from serverctl.db.models import AgentRejection, Member
from serverctl.db.session import Database
from serverctl.domain.live import LiveState, PendingRejection

log = logging.getLogger(__name__)


def flush_once(db: Database, live: LiveState, *, include_seen: bool) -> int:
    """Write what changed; returns how many member rows were written."""
    rows = []
    flagged = []
    for member in list(live.members.values()):
        if member.changed or (include_seen and member.seen):
            changed = member.changed
            flagged.append((member, changed))
            member.changed = False
            member.seen = False
            values: dict[str, object] = {"last_seen_at": member.last_seen}
            if changed:
                values.update(
                    last_ip=member.ip,
                    agent_version=member.version,
                    haproxy=member.haproxy,
                    enrolled_at=member.enrolled_at,
                )
            rows.append((member.member_id, values))
    rejections = live.take_rejections()
    if not rows and not rejections:
        return 0
    try:
        with db.session() as s:
            for member_id, values in rows:
                s.execute(update(Member).where(Member.id == member_id).values(**values))
            existing = set(
                s.scalars(select(Member.id).where(Member.id.in_({r.member_id for r in rejections})))
            )
            for pending in _coalesce(rejections):
                if pending.member_id in existing:
                    s.add(pending)
    except Exception:
        # Put the flags back so the next round writes these rows again.
        for member, changed in flagged:
            member.changed = member.changed or changed
            member.seen = True
        raise
    return len(rows)


def _coalesce(pending: list[PendingRejection]) -> list[AgentRejection]:
    """Identical refusals in a row become one row with a count."""
    out: list[AgentRejection] = []
    last: dict[int, AgentRejection] = {}
    for item in pending:
        r = item.rejection
        prev = last.get(item.member_id)
        if prev is not None and (prev.status, prev.reason, prev.source_ip) == (
            r.status,
            r.reason,
            r.source_ip,
        ):
            prev.count += 1
            prev.at = r.at
            continue
        row = AgentRejection(
            member_id=item.member_id,
            at=r.at,
            status=r.status,
            reason=r.reason,
            source_ip=r.source_ip,
            count=1,
        )
        last[item.member_id] = row
        out.append(row)
    return out


async def run(db: Database, live: LiveState, last_seen_every_s: float) -> None:
    next_seen = time.monotonic() + last_seen_every_s
    while True:
        await asyncio.sleep(1.0)
        include_seen = time.monotonic() >= next_seen
        if include_seen:
            next_seen = time.monotonic() + last_seen_every_s
        try:
            await asyncio.to_thread(flush_once, db, live, include_seen=include_seen)
        except Exception:  # noqa: BLE001 - a failed flush is retried; the loop must live on
            log.exception("writing heartbeat state to the database failed; will retry")
