from datetime import UTC, datetime

from serverctl.domain.live import NO_CHANGE, LiveState


def _register(live, member_id, secret):
    live.register(
        member_id=member_id,
        pool_id=1,
        hostname=f"edge-{member_id}",
        allowed_ips=["203.0.113.10"],
        secret_hash=secret,
    )


def test_a_new_secret_replaces_the_old_one_in_the_index():
    live = LiveState()
    _register(live, 1, "old")
    _register(live, 2, "other")
    _register(live, 1, "new")
    assert live.by_secret == {"new": 1, "other": 2}


def test_forgetting_a_member_drops_its_secret_and_revoked_ones():
    live = LiveState()
    _register(live, 1, "first")
    live.revoke("first", 1)
    _register(live, 1, "second")
    _register(live, 2, "kept")
    live.forget(1)
    assert live.by_secret == {"kept": 2}
    assert live.revoked == {}
    assert 1 not in live.members


def test_an_address_let_in_before_is_refused_once_the_allowed_ips_change():
    live = LiveState()
    _register(live, 1, "secret")
    member = live.members[1]
    assert member.allows("203.0.113.10") and member.allows("203.0.113.10")
    assert not member.allows("203.0.113.11") and not member.allows("not an address")
    # The operator narrows the member to another address: the remembered one must not pass.
    live.register(
        member_id=1, pool_id=1, hostname="edge-1", allowed_ips=["198.51.100.7"], secret_hash="s"
    )
    assert not member.allows("203.0.113.10")
    assert member.allows("198.51.100.7")


def test_a_followed_ddns_address_replaces_the_old_one():
    live = LiveState()
    _register(live, 1, "secret")
    member = live.members[1]
    member.ip = "203.0.113.10"
    assert member.allows("203.0.113.10")
    live.follow_address(member, "203.0.113.20")
    assert member.allows("203.0.113.20")
    assert not member.allows("203.0.113.10")


def test_a_network_lets_in_each_of_its_addresses():
    live = LiveState()
    live.register(
        member_id=1, pool_id=1, hostname="edge-1", allowed_ips=["192.0.2.0/29"], secret_hash="s"
    )
    member = live.members[1]
    assert [member.allows(f"192.0.2.{n}") for n in (1, 7, 1, 8)] == [True, True, True, False]


def test_stats_are_kept_as_sent_and_outlive_heartbeats_without_them():
    live = LiveState()
    _register(live, 1, "secret")
    member = live.members[1]
    stats = {"at": 2**70, "frontends": [{"name": "fe", "rate": 0.5, "status": None}]}
    info = {"version": "2.6.12", "uptime_s": 3600}
    block = {"monitored": True, "active": True, "stats": stats, "info": info}
    first = datetime(2026, 1, 1, tzinfo=UTC)
    live.record_heartbeat(member, now=first, ip="203.0.113.10", version="1", haproxy=block)
    assert member.stats == stats and member.info == info and member.stats_at == first
    assert member.haproxy == {"monitored": True, "active": True}
    later = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    change = live.record_heartbeat(
        member,
        now=later,
        ip="203.0.113.10",
        version="1",
        haproxy={"monitored": True, "active": True},
    )
    assert change == NO_CHANGE
    assert member.stats == stats and member.info == info and member.stats_at == first
