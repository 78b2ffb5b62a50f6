"""HAProxy flapping on the active member (killed and started again every second): at most one
automatic promotion per cool-down, each promotion moves the role once, and DNS ends on the
active member.

A real fleet: two members (real agents beside real haproxy processes), PowerDNS, automatic
failover with a short cool-down. Whichever member is active has its haproxy killed, then
started again half a second later, over and over: each kill is a new incident, and only the
cool-down stands between the flapping and a promotion storm.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from support.fleet import Fleet
from support.server import start_server, stop_process
from support.util import wait_until

pytestmark = pytest.mark.timeout(180)

EDGE_1, EDGE_2 = "127.0.0.2", "127.0.0.3"
COOLDOWN_S = 4
FLAP_S = 13.0
# Server timestamps of one machine; a little slack for the evaluator's own round.
SLACK_S = 0.3


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("flapping")
    server = start_server(tmp / "cp")
    try:
        with Fleet(tmp / "fleet", server) as built:
            built.add_member("edge-1", EDGE_1)
            built.add_member("edge-2", EDGE_2)
            built.link_dns(ttl=1)
            built.wait_for_answer(EDGE_1)
            yield built
    finally:
        stop_process(server.process)


def _flap_the_active(fleet: Fleet, seconds: float) -> int:
    """Kill the active member's haproxy, start it 0.5 s later, again and again; how many kills."""
    by_id = {member.id: member for member in fleet.members}
    kills = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        active = by_id[fleet.active_id() or 0]
        active.haproxy.kill()
        kills += 1
        time.sleep(0.5)
        active.haproxy.start()
        time.sleep(0.5)
    return kills


def _settle(fleet: Fleet) -> None:
    for member in fleet.members:
        if not member.haproxy.alive():
            member.haproxy.start()
        wait_until(lambda m=member: fleet.health(m) == "healthy", 15, what=f"{member.hostname}")
    time.sleep(2)  # evaluator ticks with everything healthy: nothing more may happen


def _at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["at"].replace("Z", "+00:00"))


def test_flapping_inside_a_long_cooldown_promotes_once(
    fleet: Fleet, figures: dict[str, object]
) -> None:
    # First in this module: no automatic promotion has started a cool-down yet.
    fleet.set_failover(automatic=True, delay_s=10, cooldown_s=600)
    kills = _flap_the_active(fleet, 6.0)
    _settle(fleet)
    events = fleet.events()
    assert len(events) == 1, events
    assert (events[0]["from"]["id"], events[0]["to"]["id"]) == (
        fleet.members[0].id,
        fleet.members[1].id,
    )
    assert fleet.active_id() == fleet.members[1].id
    fleet.wait_for_answer(EDGE_2)
    figures.update(cooldown_s=600, haproxy_kills=kills, promotions=len(events))


def test_flapping_promotes_at_most_once_per_cooldown_and_dns_follows(
    fleet: Fleet, figures: dict[str, object]
) -> None:
    before = len(fleet.events())
    # Settings change after an automatic promotion (this answered 500 once: the audit record
    # carried the promotion's time, which JSON could not hold).
    changed = fleet.set_failover(automatic=True, delay_s=10, cooldown_s=COOLDOWN_S)
    assert changed["cooldown_s"] == COOLDOWN_S and changed["last_auto_failover_at"]
    kills = _flap_the_active(fleet, FLAP_S)
    _settle(fleet)

    events = list(reversed(fleet.events()))[before:]  # this test's, oldest first
    assert kills >= 6
    assert events, "the first kill must promote: nothing held it back"
    assert all(e["trigger"] == "automatic" for e in events)
    gaps = [(_at(b) - _at(a)).total_seconds() for a, b in zip(events, events[1:], strict=False)]
    assert all(gap >= COOLDOWN_S - SLACK_S for gap in gaps), f"promotions {gaps} s apart"
    assert len(events) <= FLAP_S // COOLDOWN_S + 1, events
    # Each promotion moved the role away from the member the one before had promoted.
    for earlier, later in zip(events, events[1:], strict=False):
        assert later["from"]["id"] == earlier["to"]["id"], (earlier, later)
    active_id = fleet.active_id()
    assert active_id == events[-1]["to"]["id"]
    active = next(m for m in fleet.members if m.id == active_id)
    fleet.wait_for_answer(active.ip)
    assert events[-1]["dns"]["state"] == "applied"
    figures.update(
        cooldown_s=COOLDOWN_S,
        flapping_s=FLAP_S,
        haproxy_kills=kills,
        promotions=len(events),
        shortest_gap_s=round(min(gaps), 2) if gaps else None,
    )
