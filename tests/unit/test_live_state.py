from serverctl.domain.live import LiveState


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
