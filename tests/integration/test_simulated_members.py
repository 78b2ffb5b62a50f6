"""The seeded simulated members (support/simulated_members.py) are members like any other: a
control plane started on their data directory loads them, shows each pool's first member as
active, and takes their realistic heartbeats."""

from __future__ import annotations

from fastapi.testclient import TestClient

from serverctl.app import create_app
from serverctl.config import Settings
from serverctl.domain.principal import SYSTEM
from serverctl.state import AppState
from support.simulated_members import SOURCE_IP, heartbeat_body, seed_simulated


def test_seeded_members_are_loaded_and_heartbeat(tmp_path):
    members = seed_simulated(tmp_path / "var", 25, per_pool=10, prefix="seed")
    assert len({m.pool_id for m in members}) == 3
    settings = Settings(data_dir=tmp_path / "var")
    state = AppState.build(settings)
    try:
        with TestClient(create_app(settings, state), client=(SOURCE_IP, 40000)) as client:
            assert len(state.live.members) == 25
            for member in (members[0], members[-1]):
                answer = client.post(
                    "/api/agents/heartbeat",
                    content=heartbeat_body(member),
                    headers={"Authorization": f"Bearer {member.secret}"},
                )
                assert answer.status_code == 200, answer.text
            pool = state.pools.get_pool(SYSTEM, members[-1].pool_id)
            assert pool["name"] == "seed-002"
            assert pool["active_member_id"] == members[20].member_id
            view = state.pools.get_member(SYSTEM, members[-1].pool_id, members[-1].member_id)
            assert view["hostname"] == "seed-00024"
            assert view["health"]["state"] == "healthy"
    finally:
        state.db.dispose()
