"""Pool and member lists read each member's last refusal in one query, not one per member (a
pool list of 1,000 members took seconds under heartbeat load before), and show the same as the
single-member view."""

from __future__ import annotations

from serverctl.db.models import AgentRejection
from serverctl.db.types import utcnow
from serverctl.domain.live import LiveState
from serverctl.domain.pools import PoolService
from serverctl.domain.principal import SYSTEM


def test_member_list_shows_each_members_latest_stored_refusal(app_env):
    client, state = app_env.client, app_env.state
    pool = client.post("/api/pools", json={"name": "edge"}).json()
    ids = [
        client.post(
            f"/api/pools/{pool['id']}/members",
            json={"hostname": f"edge-{n}", "allowed_ips": ["192.0.2.10"]},
        ).json()["id"]
        for n in (1, 2, 3)
    ]
    with state.db.session() as s:
        for member_id, reason in ((ids[0], "older"), (ids[0], "newest"), (ids[1], "only one")):
            s.add(
                AgentRejection(
                    member_id=member_id,
                    at=utcnow(),
                    status=401,
                    reason=reason,
                    source_ip="198.51.100.7",
                    count=1,
                )
            )
    # A fresh live state, as after a restart: the refusals come from the database.
    pools = PoolService(state.db, LiveState())
    listed = pools.list_members(SYSTEM, pool["id"])
    reasons = [(m["last_rejection"] or {}).get("reason") for m in listed]
    assert reasons == ["newest", "only one", None]
    for member in listed:
        assert member == pools.get_member(SYSTEM, pool["id"], member["id"])
    summary = pools.get_pool(SYSTEM, pool["id"])
    assert (summary["member_count"], summary["healthy_count"]) == (3, 0)
