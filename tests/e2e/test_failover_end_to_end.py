"""Failover through the whole chain: real agents beside real haproxy processes on their own
loopback addresses, a real `serverctl serve`, and a real PowerDNS authoritative server whose
answers are read with real DNS queries (dnspython)."""

from __future__ import annotations

import time

import pytest

from support.fleet import Fleet
from support.server import start_server, stop_process
from support.util import wait_until

EDGE_1, EDGE_2 = "127.0.0.2", "127.0.0.3"


@pytest.fixture
def fleet(tmp_path):
    server = start_server(tmp_path / "cp")
    try:
        with Fleet(tmp_path / "fleet", server) as built:
            built.add_member("edge-1", EDGE_1)
            built.add_member("edge-2", EDGE_2)
            built.link_dns(ttl=1)
            assert built.answer() == [EDGE_1]
            yield built
    finally:
        stop_process(server.process)


def test_killing_the_active_haproxy_moves_the_record_to_the_standby(fleet):
    fleet.set_failover(automatic=True, delay_s=10, cooldown_s=0)
    edge_1, edge_2 = fleet.members
    started = time.monotonic()
    edge_1.haproxy.kill()
    took = fleet.wait_for_answer(EDGE_2, timeout=10)
    assert time.monotonic() - started < 10
    event = fleet.events()[0]
    assert event["trigger"] == "automatic"
    assert (event["from"]["hostname"], event["to"]["hostname"]) == ("edge-1", "edge-2")
    assert event["address"] == EDGE_2
    # The old active returns as a standby: nothing moves the record back.
    edge_1.haproxy.start()
    wait_until(lambda: fleet.health(edge_1) == "healthy", 15, what="edge-1 healthy again")
    time.sleep(2)
    assert fleet.active_id() == edge_2.id
    assert fleet.answer() == [EDGE_2]
    assert took < 10


def test_a_silent_active_host_fails_over_after_the_delay(fleet):
    fleet.set_failover(automatic=True, delay_s=10, cooldown_s=0)
    edge_1 = fleet.members[0]
    started = time.monotonic()
    edge_1.agent.stop()  # haproxy keeps running: only the heartbeats stop
    took = fleet.wait_for_answer(EDGE_2, timeout=20)
    waited = time.monotonic() - started
    assert 9 <= waited <= 10 + 3, f"moved after {waited:.1f} s with a 10 s failover delay"
    assert "no heartbeat" in fleet.events()[0]["reason"]
    assert took > 0


def test_flapping_haproxy_gives_one_promotion_per_cooldown(fleet):
    fleet.set_failover(automatic=True, delay_s=10, cooldown_s=60)
    edge_1, edge_2 = fleet.members
    edge_1.haproxy.kill()
    fleet.wait_for_answer(EDGE_2)
    edge_1.haproxy.start()  # edge-1 comes back; then edge-2 flaps twice inside the cool-down
    wait_until(lambda: fleet.health(edge_1) == "healthy", 15, what="edge-1 healthy")
    for _ in range(2):
        edge_2.haproxy.kill()
        time.sleep(2.5)
        edge_2.haproxy.start()
        wait_until(lambda: fleet.health(edge_2) == "healthy", 15, what="edge-2 healthy")
    assert len(fleet.events()) == 1
    assert fleet.answer() == [EDGE_2]


def test_the_dns_server_unreachable_during_failover_is_retried(fleet):
    fleet.set_failover(automatic=True, delay_s=10, cooldown_s=0)
    assert fleet.pdns is not None
    fleet.pdns.stop()
    fleet.members[0].haproxy.kill()

    def pending():
        update = fleet.call("GET", f"{fleet.pool_url}/dns")["update"]
        return update["state"] == "pending" and update["attempts"] >= 1

    wait_until(pending, 15, what="a failed, pending DNS update")
    fleet.pdns.start()
    fleet.wait_for_answer(EDGE_2, timeout=30)
    events = fleet.events()
    assert len(events) == 1 and events[0]["dns"]["state"] == "applied"


def test_automatic_promotion_emails_the_pools_recipients(fleet, smtp_server):
    fleet.call("PUT", "/api/settings/smtp", smtp_server.settings())
    fleet.call("PUT", f"{fleet.pool_url}/alerts", {"recipients": ["oncall@example.net"]})
    fleet.set_failover(automatic=True, delay_s=10, cooldown_s=0)
    fleet.members[0].haproxy.kill()
    fleet.wait_for_answer(EDGE_2)
    message = smtp_server.wait_for(1, timeout=10)[0]
    assert message.rcpt_tos == ["oncall@example.net"]
    assert "edge-2 is now active" in message.subject
    assert "edge-1" in message.body and EDGE_2 in message.body
