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

from sqlalchemy import bindparam, select, update

from serverctl.db.models import AgentRejection, Member
from serverctl.db.session import Database
from serverctl.domain.live import LiveState, PendingRejection

log = logging.getLogger(__name__)


_members = Member.metadata.tables[Member.__tablename__]
# Executemany statements: one UPDATE compiled once for thousands of rows (a statement per row
# cost about a millisecond each, held the GIL, and so slowed the heartbeats being taken).
_SEEN = (
    update(_members)
    .where(_members.c.id == bindparam("member_id"))
    .values(last_seen_at=bindparam("seen"))
)
_CHANGED = _SEEN.values(
    last_ip=bindparam("ip"),
    agent_version=bindparam("version"),
    haproxy=bindparam("haproxy"),
    enrolled_at=bindparam("enrolled"),
)


def flush_once(db: Database, live: LiveState, *, include_seen: bool) -> int:
    """Write what changed; returns how many member rows were written."""
    seen: list[dict[str, object]] = []
    changed: list[dict[str, object]] = []
    flagged = []
    for member in list(live.members.values()):
        if member.changed:
            changed.append(
                {
                    "member_id": member.member_id,
                    "seen": member.last_seen,
                    "ip": member.ip,
                    "version": member.version,
                    "haproxy": member.haproxy,
                    "enrolled": member.enrolled_at,
                }
            )
        elif include_seen and member.seen:
            seen.append({"member_id": member.member_id, "seen": member.last_seen})
        else:
            continue
        flagged.append((member, member.changed))
        member.changed = False
        member.seen = False
    rejections = live.take_rejections()
    if not flagged and not rejections:
        return 0
    try:
        with db.session() as s:
            # A member deleted meanwhile matches no row: nothing to write, and no error.
            for statement, rows in ((_CHANGED, changed), (_SEEN, seen)):
                if rows:
                    s.execute(statement, rows)
            existing = set(
                s.scalars(select(Member.id).where(Member.id.in_({r.member_id for r in rejections})))
            )
            for pending in _coalesce(rejections):
                if pending.member_id in existing:
                    s.add(pending)
    except Exception:
        # Put the flags back so the next round writes these rows again.
        for member, was_changed in flagged:
            member.changed = member.changed or was_changed
            member.seen = True
        raise
    return len(flagged)


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
