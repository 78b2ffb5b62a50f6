"""A network partition of the active member, on a LAN of network namespaces.

The control plane and two members each run on a host of their own (a network namespace with a
documentation-range address on one bridge); the agents talk HTTPS to the control plane and
trust only the test CA that signed its certificate. The active member's link goes down: its
haproxy keeps running and its agent keeps trying, but nothing reaches the control plane, so the
only sign is silence. Failover must come after the pool's failover delay (not earlier: a
partition looks like a slow network at first), and when the link comes back the old active must
reconnect and stay a standby.
"""

from __future__ import annotations

import time

import pytest

from support.netns_fleet import netns_fleet, netns_unavailable
from support.util import wait_until

UNAVAILABLE = netns_unavailable()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")

# The smallest failover delay a pool accepts (docs/dns-and-failover.md: 10-120 s).
DELAY_S = 10
# The last heartbeat before the cut may be a beat old (about a second, more on a busy machine).
EARLY_MARGIN_S = 2.0
# The evaluator's tick, the DNS update and a loaded machine.
LATE_MARGIN_S = 5.0
# After the link returns, the agent's backoff (1, 2, 4 ... s, with 10 s connect timeouts while
# the link was down) decides when it tries again.
RECONNECT_TIMEOUT_S = 60


@pytest.fixture
def fleet(tmp_path):
    with netns_fleet(tmp_path, "sctpart") as built:
        built.add_member("edge-a", built.lan_address(11))
        built.add_member("edge-b", built.lan_address(12))
        built.link_dns(ttl=1)
        assert built.answer() == [built.lan_address(11)]
        yield built


def test_partitioned_active_fails_over_after_the_delay_and_returns_as_standby(fleet, figures):
    # No cool-down: nothing but the rules keeps the record from moving back to edge-a.
    fleet.set_failover(automatic=True, delay_s=DELAY_S, cooldown_s=0)
    edge_a, edge_b = fleet.members
    partitioned = fleet.host(edge_a)

    cut = time.monotonic()
    partitioned.link_down()
    fleet.wait_for_answer(edge_b.ip, timeout=DELAY_S + LATE_MARGIN_S + 5)
    moved_after = time.monotonic() - cut
    assert DELAY_S - EARLY_MARGIN_S <= moved_after <= DELAY_S + LATE_MARGIN_S, (
        f"the record moved {moved_after:.1f} s after the cut, with a {DELAY_S} s failover delay"
    )
    [event] = fleet.events()
    assert event["trigger"] == "automatic"
    assert (event["from"]["hostname"], event["to"]["hostname"]) == ("edge-a", "edge-b")
    assert "no heartbeat" in event["reason"]
    assert fleet.health(edge_a) != "healthy"

    partitioned.link_up()
    restored = time.monotonic()
    # Silent for over the delay, so only fresh heartbeats (HTTPS through the bridge) make it
    # healthy again.
    wait_until(
        lambda: fleet.health(edge_a) == "healthy",
        RECONNECT_TIMEOUT_S,
        interval=0.5,
        what="edge-a to reconnect and turn healthy",
    )
    figures.update(
        failover_delay_s=DELAY_S,
        moved_after_cut_s=round(moved_after, 2),
        healthy_after_link_up_s=round(time.monotonic() - restored, 1),
    )
    # It stays a standby: the record, the active role and the event list stay as they are.
    watch_until = time.monotonic() + 2 * DELAY_S
    while time.monotonic() < watch_until:
        assert fleet.answer() == [edge_b.ip]
        assert fleet.active_id() == edge_b.id
        time.sleep(1)
    assert len(fleet.events()) == 1
    assert fleet.health(edge_a) == "healthy" and fleet.health(edge_b) == "healthy"
    assert "Traceback" not in fleet.server.log()
