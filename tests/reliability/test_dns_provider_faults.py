"""A DNS provider failing during a failover (5xx, 429 with Retry-After, requests that hang past
the client's timeout): the update is retried, shown as pending with its error meanwhile, and
applied exactly once when the provider answers; the failover is one event, one promotion.

A real fleet (two members, real agents and haproxy) whose pool is linked to the Cloudflare
contract emulator (support.cloudflare_emulator) with its fault knobs. The control plane's DNS
client timeout is 2 s (SERVERCTL_DNS_TIMEOUT_S), so a hang costs seconds, not minutes. Each case
kills the active member's haproxy with a fault queued; cases alternate the active member.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from support.cloudflare_emulator import WRITES, CloudflareEmulator
from support.fleet import Fleet, FleetMember
from support.server import start_server, stop_process
from support.util import wait_until

pytestmark = pytest.mark.timeout(240)

EDGE_1, EDGE_2 = "127.0.0.2", "127.0.0.3"
ZONE = "demo.example"
CLIENT_TIMEOUT_S = 2


@dataclass
class World:
    fleet: Fleet
    cloudflare: CloudflareEmulator

    def record(self) -> list[str]:
        return sorted(r["content"] for r in self.cloudflare.records_of(ZONE, self.fleet.fqdn))

    def dns_update(self) -> dict[str, Any]:
        update: dict[str, Any] = self.fleet.call("GET", f"{self.fleet.pool_url}/dns")["update"]
        return update


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("dnsfaults")
    server = start_server(tmp / "cp", env={"SERVERCTL_DNS_TIMEOUT_S": str(CLIENT_TIMEOUT_S)})
    try:
        with CloudflareEmulator(zones=(ZONE,)) as cloudflare, Fleet(tmp / "fleet", server) as fleet:
            assert fleet.zone == ZONE
            fleet.add_member("edge-1", EDGE_1)
            fleet.add_member("edge-2", EDGE_2)
            fleet.provider = fleet.call(
                "POST",
                "/api/dns-providers",
                {
                    "name": "cloudflare",
                    "kind": "cloudflare",
                    "config": cloudflare.provider_settings(),
                },
            )
            fleet.link_dns(ttl=1)  # Cloudflare's "automatic" TTL
            built = World(fleet, cloudflare)
            wait_until(lambda: built.record() == [EDGE_1], 15, what="the record on edge-1")
            fleet.set_failover(automatic=True, delay_s=10, cooldown_s=0)
            yield built
    finally:
        stop_process(server.process)


Faults = Callable[[CloudflareEmulator], None]


def _five_hundreds(cf: CloudflareEmulator) -> None:
    for status in (500, 503):
        cf.fail_next(1, status, methods=WRITES)


def _hanging(cf: CloudflareEmulator) -> None:
    cf.hang_next(1, CLIENT_TIMEOUT_S + 1.5, methods=WRITES)


def _everything(cf: CloudflareEmulator) -> None:
    # A bad minute: a 500, then a 429, then a request that hangs. (Writes only: the pool's DNS
    # view reads the record through the provider too, and would take a fault meant for the
    # publisher.)
    cf.fail_next(1, 500, methods=WRITES)
    cf.fail_next(1, 429, retry_after=1, methods=WRITES)
    cf.hang_next(1, CLIENT_TIMEOUT_S + 1.5, methods=WRITES)


# name -> (queue the faults, failed attempts before the one that works, the error shown, the
# waits the retry rules give: backoff 1, 2, 4 s, Retry-After, the client's timeout)
# (429 alone: test_retries_wait_for_the_providers_retry_after.)
CASES: dict[str, tuple[Faults, int, str, float]] = {
    "5xx": (_five_hundreds, 2, "Cloudflare answered HTTP 50", 1 + 2),
    "timeout": (_hanging, 1, "did not answer in time", CLIENT_TIMEOUT_S + 1),
    "5xx-429-timeout": (_everything, 3, "", 1 + 2 + CLIENT_TIMEOUT_S + 4),
}
# What request handling and thread wake-ups may add to those waits on a busy machine.
SLACK_S = 3.0


def _roles(world: World) -> tuple[FleetMember, FleetMember]:
    active_id = world.fleet.active_id()
    active = next(m for m in world.fleet.members if m.id == active_id)
    standby = next(m for m in world.fleet.members if m.id != active_id)
    return active, standby


def _pending_with_error(world: World, address: str) -> dict[str, Any] | None:
    update = world.dns_update()
    if update["address"] == address and update["state"] == "pending" and update["last_error"]:
        return update
    return None


@pytest.mark.parametrize("case", list(CASES))
def test_a_failing_provider_is_retried_and_the_failover_applied_once(
    world: World, case: str, figures: dict[str, object]
) -> None:
    inject, failures, error, waits_s = CASES[case]
    fleet, cf = world.fleet, world.cloudflare
    active, standby = _roles(world)
    events_before = len(fleet.events())
    writes_before = len(cf.seen(WRITES))
    inject(cf)

    active.haproxy.kill()
    # While the provider fails: promoted once, and the update is shown pending with its error.
    pending = wait_until(
        lambda: _pending_with_error(world, standby.ip), 20, interval=0.05, what="pending update"
    )
    assert isinstance(pending, dict)
    assert error.lower() in pending["last_error"].lower(), pending
    assert fleet.active_id() == standby.id
    event = fleet.events()[0]
    assert event["dns"]["state"] in ("pending", "applied"), event
    assert world.record() == [active.ip], "nothing applied while the provider fails"

    wait_until(lambda: world.record() == [standby.ip], 45, interval=0.1, what="the record moved")
    assert cf.faults_left() == 0
    time.sleep(1.5)  # evaluator ticks and publisher rounds: nothing more may happen

    events = fleet.events()
    assert len(events) == events_before + 1, events
    event = events[0]
    assert event["trigger"] == "automatic"
    assert (event["from"]["id"], event["to"]["id"]) == (active.id, standby.id)
    assert event["dns"]["state"] == "applied"
    assert event["dns"]["attempts"] == failures + 1, event["dns"]
    # Retried as the rules say, not slower (a retry once waited out a 5 s idle round).
    took = event["timings"]["promote_to_dns_applied_s"]
    assert waits_s <= took + 0.5 and took <= waits_s + SLACK_S, (took, waits_s)
    assert fleet.active_id() == standby.id
    # Applied once: exactly one write got through, and it set the new address.
    through = [r for r in cf.seen(WRITES)[writes_before:] if r.status == 200]
    assert [r.body["content"] for r in through] == [standby.ip], through
    assert world.record() == [standby.ip]
    figures.update(
        failed_attempts=failures,
        attempts=event["dns"]["attempts"],
        failover_events=1,
        writes_applied=len(through),
        retry_waits_s=waits_s,
        promote_to_dns_applied_s=took,
    )

    active.haproxy.start()
    wait_until(lambda: fleet.health(active) == "healthy", 15, what=f"{active.hostname} back")


def test_retries_wait_for_the_providers_retry_after(
    world: World, figures: dict[str, object]
) -> None:
    """Three 429s asking for 3 s each: no write comes sooner than that after the one before."""
    fleet, cf = world.fleet, world.cloudflare
    active, standby = _roles(world)
    writes_before = len(cf.seen(WRITES))
    cf.fail_next(3, 429, retry_after=3, methods=WRITES)
    active.haproxy.kill()
    wait_until(lambda: world.record() == [standby.ip], 45, interval=0.1, what="the record moved")
    writes = cf.seen(WRITES)[writes_before:]
    assert [r.status for r in writes] == [429, 429, 429, 200]
    gaps = [later.at - earlier.at for earlier, later in zip(writes, writes[1:], strict=False)]
    # Retry-After 3 s, or the backoff (1, 2, 4 s) when that is longer: 3, 3, 4.
    expected = [3.0, 3.0, 4.0]
    assert all(gap >= want - 0.2 for gap, want in zip(gaps, expected, strict=True)), gaps
    assert all(gap <= want + SLACK_S for gap, want in zip(gaps, expected, strict=True)), gaps
    assert fleet.events()[0]["dns"]["attempts"] == 4
    figures.update(rate_limited=3, retry_after_s=3, shortest_gap_s=round(min(gaps), 2))
    active.haproxy.start()
    wait_until(lambda: fleet.health(active) == "healthy", 15, what=f"{active.hostname} back")
