"""The flusher (loops/flush.py) against a real SQLite database: changes within a round, last-seen
times only on the rounds that include them, all members in one batch, and a member deleted
between the heartbeat and the write costs nothing but its own row."""

from __future__ import annotations

import collections.abc
import contextlib
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from serverctl.db.models import Member
from serverctl.db.types import utcnow
from serverctl.domain.principal import SYSTEM
from serverctl.loops.flush import flush_once
from serverctl.state import AppState

UP = {"monitored": True, "active": True, "source": "systemd", "topology": {"listeners": []}}


@pytest.fixture
def state(state: AppState) -> AppState:
    """tests/conftest.py's services with a pool of three members."""
    pool = state.pools.create_pool(SYSTEM, "edge", "haproxy")
    for number in range(3):
        state.pools.add_member(SYSTEM, pool["id"], f"edge-{number}", [f"127.0.0.{number + 2}"])
    return state


def _beat(state: AppState, member_id: int, at, active: bool = True) -> None:
    live = state.live.members[member_id]
    state.live.record_heartbeat(
        live,
        now=at,
        ip=f"127.0.0.{member_id + 1}",
        version="0.6.0",
        haproxy={**UP, "active": active},
    )


def _rows(state: AppState) -> dict[int, Member]:
    with state.db.session() as s:
        return {m.id: m for m in s.scalars(select(Member))}


def test_changes_are_written_in_the_next_round_and_last_seen_only_when_due(state):
    t0 = utcnow()
    for member_id in state.live.members:
        _beat(state, member_id, t0)
    assert flush_once(state.db, state.live, include_seen=False) == 3
    for member_id, row in _rows(state).items():
        assert row.last_ip == f"127.0.0.{member_id + 1}" and row.agent_version == "0.6.0"
        assert row.haproxy == UP and row.enrolled_at == t0 and row.last_seen_at == t0

    # The same heartbeats again: nothing changed, so only the last-seen round writes them.
    t1 = t0 + timedelta(seconds=1)
    for member_id in state.live.members:
        _beat(state, member_id, t1)
    assert flush_once(state.db, state.live, include_seen=False) == 0
    assert {row.last_seen_at for row in _rows(state).values()} == {t0}
    assert flush_once(state.db, state.live, include_seen=True) == 3
    assert {row.last_seen_at for row in _rows(state).values()} == {t1}
    assert flush_once(state.db, state.live, include_seen=True) == 0


def test_a_change_and_a_plain_heartbeat_in_one_round(state):
    first, second, _ = state.live.members
    t0 = utcnow()
    _beat(state, first, t0)
    _beat(state, second, t0)
    flush_once(state.db, state.live, include_seen=True)
    t1 = t0 + timedelta(seconds=5)
    _beat(state, first, t1, active=False)
    _beat(state, second, t1)
    assert flush_once(state.db, state.live, include_seen=True) == 2
    rows = _rows(state)
    assert rows[first].haproxy == {**UP, "active": False} and rows[first].last_seen_at == t1
    assert rows[second].haproxy == UP and rows[second].last_seen_at == t1


def test_a_member_deleted_before_the_write_does_not_stop_the_others(state):
    doomed, *others = state.live.members
    t0 = utcnow()
    for member_id in state.live.members:
        _beat(state, member_id, t0)
    with state.db.session() as s:
        s.delete(s.get(Member, doomed))
    assert flush_once(state.db, state.live, include_seen=True) == 3
    rows = _rows(state)
    assert doomed not in rows
    assert all(rows[m].last_seen_at == t0 for m in others)


def test_a_failed_write_is_tried_again_in_the_next_round(state, monkeypatch):
    member_id = next(iter(state.live.members))
    t0 = utcnow()
    _beat(state, member_id, t0)

    @contextlib.contextmanager
    def locked() -> collections.abc.Iterator[None]:
        raise OperationalError("UPDATE members", {}, Exception("database is locked"))
        yield

    with monkeypatch.context() as patched:
        patched.setattr(state.db, "session", locked)
        with pytest.raises(OperationalError):
            flush_once(state.db, state.live, include_seen=True)
    # Flagged again: the next round writes the change, even one that leaves last-seen out.
    assert flush_once(state.db, state.live, include_seen=False) == 1
    assert _rows(state)[member_id].last_seen_at == t0
