"""The backup REST API with a real agent beside a real haproxy (support.fleet), through the
local store: the agent uploads to the one-time URL, the control plane checks and keeps the
snapshot, the agent's reported files make the diff, and a restore onto the member completes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.fleet import Fleet
from support.server import start_server, stop_process
from support.util import wait_until

TERMINAL = ("completed", "failed", "cancelled", "timed_out")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    server = start_server(tmp_path / "cp")
    try:
        with Fleet(tmp_path / "fleet", server) as built:
            built.add_member("edge-1", "127.0.0.2")
            yield built
    finally:
        stop_process(server.process)


def _finished(fleet: Fleet, job_id: int) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job: dict[str, Any] = fleet.call("GET", f"/api/jobs/{job_id}")
        return job if job["state"] in TERMINAL else None

    found: dict[str, Any] = wait_until(done, 90, interval=0.2, what=f"job {job_id} to end")
    return found


def test_a_real_agent_backs_up_and_restores_through_the_control_plane(fleet: Fleet) -> None:
    edge = fleet.members[0]
    member_url = f"{fleet.pool_url}/members/{edge.id}"
    queued = fleet.call("POST", f"{member_url}/backups", {}, expect=202)
    job = _finished(fleet, queued["job_id"])
    assert job["state"] == "completed", job

    (listed,) = fleet.call("GET", f"{member_url}/backups")["items"]
    snapshot = fleet.call("GET", f"/api/backups/{listed['id']}")
    assert (snapshot["state"], snapshot["store"], snapshot["job_id"]) == (
        "completed",
        "local",
        queued["job_id"],
    )
    paths = {f["path"] for f in snapshot["files"]}
    assert "/etc/haproxy/haproxy.cfg" in paths
    stored = fleet.server.data_dir / "backups" / snapshot["key"]
    assert stored.stat().st_size == snapshot["size"]
    assert stored.with_name(stored.name.replace(".tar.gz", ".manifest.json")).exists()

    # The agent reports the files of its backup scope: nothing differs from the snapshot.
    def diff() -> dict[str, Any] | None:
        found: dict[str, Any] = fleet.call("GET", f"/api/backups/{snapshot['id']}/diff")
        return found if found["known"] else None

    known = wait_until(diff, 30, what="the agent's backup_files")
    assert isinstance(known, dict)
    assert (known["added"], known["changed"], known["removed"]) == ([], [], [])
    assert known["unchanged"] == len(snapshot["files"])

    restored = fleet.call("POST", f"/api/backups/{snapshot['id']}/restore", {}, expect=202)
    job = _finished(fleet, restored["job_id"])
    assert job["state"] == "completed", job
    assert job["result"]["snapshot_id"] == snapshot["id"]
    assert (job["result"]["added"], job["result"]["changed"]) == ([], [])
