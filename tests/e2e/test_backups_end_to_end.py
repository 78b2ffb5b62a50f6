"""Backups and restores through the whole chain: a real `serverctl serve`, real agents beside
real haproxy processes on their own loopback addresses, and a real store: the local directory,
or an S3 API server (moto in server mode) that the agents reach only through presigned URLs.

The members' HAProxy configurations are portable (paths and addresses through the environment,
see support.haproxy.ROOT_VAR), as a fleet's configuration is when it can move between hosts.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from support.fleet import Fleet, FleetMember
from support.s3 import MotoS3
from support.server import start_server, stop_process
from support.util import wait_until

EDGE_1, EDGE_2, EDGE_3 = "127.0.0.2", "127.0.0.3", "127.0.0.4"
BUCKET = "edge-backups"
TERMINAL = ("completed", "failed", "cancelled", "timed_out")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> Iterator[MotoS3 | None]:
    if request.param == "local":
        yield None
        return
    with MotoS3() as s3:
        s3.create_bucket(BUCKET)
        yield s3


def _fleet(tmp_path: Path, s3: MotoS3 | None = None, **env: str) -> Iterator[Fleet]:
    server = start_server(tmp_path / "cp")
    try:
        with Fleet(tmp_path / "fleet", server) as built:
            if s3 is not None:
                built.call(
                    "PUT",
                    "/api/settings/backup-store",
                    {
                        "kind": "s3",
                        "settings": s3.settings(BUCKET),
                        "secrets": s3.secrets(),
                    },
                )
            built.add_member("edge-1", EDGE_1, dict(env), portable=True, tls=True)
            built.add_member("edge-2", EDGE_2, portable=True, tls=True)
            yield built
    finally:
        stop_process(server.process)


@pytest.fixture
def fleet(tmp_path: Path, store: MotoS3 | None) -> Iterator[Fleet]:
    yield from _fleet(tmp_path, store)


@pytest.fixture
def plain_fleet(tmp_path: Path) -> Iterator[Fleet]:
    yield from _fleet(tmp_path)


@pytest.fixture
def local_fleet(tmp_path: Path) -> Iterator[Fleet]:
    # Each file placed during a restore's swap waits 0.4 s: time to kill the agent mid-swap.
    yield from _fleet(tmp_path, BALCTL_RESTORE_STEP_PAUSE_S="0.4")


# -- helpers ----------------------------------------------------------------------------------


def _job(fleet: Fleet, job_id: int, timeout: float = 90) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job: dict[str, Any] = fleet.call("GET", f"/api/jobs/{job_id}")
        return job if job["state"] in TERMINAL else None

    found: dict[str, Any] = wait_until(done, timeout, interval=0.2, what=f"job {job_id} to end")
    return found


def _backup(fleet: Fleet, member: FleetMember) -> dict[str, Any]:
    queued = fleet.call("POST", f"{fleet.pool_url}/members/{member.id}/backups", {})
    job = _job(fleet, queued["job_id"])
    assert job["state"] == "completed", job
    newest = fleet.call("GET", f"{fleet.pool_url}/members/{member.id}/backups")["items"][0]
    assert newest["job_id"] == queued["job_id"]
    snapshot: dict[str, Any] = fleet.call("GET", f"/api/backups/{newest['id']}")
    assert snapshot["state"] == "completed"
    return snapshot


def _restore(fleet: Fleet, snapshot_id: int, target: FleetMember) -> dict[str, Any]:
    queued = fleet.call(
        "POST", f"/api/backups/{snapshot_id}/restore", {"target_member_id": target.id}
    )
    return _job(fleet, queued["job_id"])


def _haproxy_files(member: FleetMember) -> dict[str, str]:
    """Path (as in a manifest) -> SHA-256 of every file of the member's HAProxy set."""
    root = member.haproxy.root
    found: dict[str, str] = {}
    for path in sorted((root / "etc/haproxy").rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            found["/" + str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _manifest_files(snapshot: dict[str, Any]) -> dict[str, str]:
    return {f["path"]: f["sha256"] for f in snapshot["files"] if f["type"] == "file"}


def _keys(s3: MotoS3) -> set[str]:
    listed = s3.client().list_objects_v2(Bucket=BUCKET)
    return {item["Key"] for item in listed.get("Contents", [])}


def _served(member: FleetMember) -> str:
    return httpx.get(f"http://{member.haproxy.bind}/", timeout=5).text.strip()


# -- tests ------------------------------------------------------------------------------------


def test_backup_then_restore_on_the_same_member_another_member_and_a_new_standby(
    fleet: Fleet, store: MotoS3 | None
) -> None:
    edge_1, edge_2 = fleet.members
    snapshot = _backup(fleet, edge_1)
    files = _manifest_files(snapshot)
    assert "/etc/haproxy/haproxy.cfg" in files
    assert "/etc/haproxy/certs/site.pem" in files  # named by `ssl crt` and under certs/
    assert files == _haproxy_files(edge_1)
    assert snapshot["haproxy_version"] and snapshot["config_valid"] is True
    stem = snapshot["key"].removesuffix(".tar.gz")
    assert "edge/edge-1/" in snapshot["key"] and stem.endswith(f"-{snapshot['id']}")
    if store is not None:
        keys = _keys(store)
        assert snapshot["key"].startswith("serverctl/edge/edge-1/")
        assert {snapshot["key"], stem + ".manifest.json"} <= keys
        archive = store.client().get_object(Bucket=BUCKET, Key=snapshot["key"])["Body"].read()
    else:
        archive = (fleet.server.data_dir / "backups" / snapshot["key"]).read_bytes()
    assert hashlib.sha256(archive).hexdigest() == snapshot["sha256"]

    # The same member: a changed file and an extra conf.d file; the diff shows them, the
    # restore puts the snapshot's set back and reloads.
    config = edge_1.haproxy.config
    config.write_text(config.read_text().replace("served by edge-1", "served by someone"))
    extra = config.parent / "conf.d" / "extra.cfg"
    extra.parent.mkdir(exist_ok=True)
    extra.write_text("backend extra\n    server s1 127.0.0.1:9\n")
    diff_path = f"/api/backups/{snapshot['id']}/diff?target_member_id={edge_1.id}"

    def reported() -> dict[str, Any] | None:
        diff: dict[str, Any] = fleet.call("GET", diff_path)
        return diff if "/etc/haproxy/haproxy.cfg" in diff["changed"] else None

    diff = wait_until(reported, 30, interval=0.5, what="edge-1 to report its changed files")
    assert diff["known"] is True and "/etc/haproxy/conf.d/extra.cfg" in diff["removed"]
    old_pid = edge_1.haproxy.pid()
    job = _restore(fleet, snapshot["id"], edge_1)
    assert job["state"] == "completed", job
    assert "/etc/haproxy/haproxy.cfg" in job["result"]["changed"]
    assert "/etc/haproxy/conf.d/extra.cfg" in job["result"]["removed"]
    assert _haproxy_files(edge_1) == files
    assert not extra.exists()
    assert edge_1.haproxy.pid() != old_pid and edge_1.haproxy.alive()
    assert _served(edge_1) == "served by edge-1"

    # Another member: edge-2 now runs edge-1's configuration on its own address.
    job = _restore(fleet, snapshot["id"], edge_2)
    assert job["state"] == "completed", job
    assert _haproxy_files(edge_2) == files
    assert _served(edge_2) == "served by edge-1"

    # A new standby, provisioned from the active member's latest snapshot in one action.
    edge_3 = fleet.add_member("edge-3", EDGE_3, portable=True, tls=True)
    queued = fleet.call("POST", f"{fleet.pool_url}/members/{edge_3.id}/provision-from-backup", {})
    job = _job(fleet, queued["job_id"])
    assert job["state"] == "completed", job
    assert [step["type"] for step in job["steps"]] == ["haproxy.restore"]
    assert _haproxy_files(edge_3) == files
    assert _served(edge_3) == "served by edge-1"

    # Retention: keep the last two; the oldest snapshot and its objects go.
    fleet.call(
        "PUT",
        f"{fleet.pool_url}/members/{edge_1.id}/backup-policy",
        {"cron": None, "keep_last": 2, "keep_days": None},
    )
    second, third = _backup(fleet, edge_1), _backup(fleet, edge_1)

    def kept() -> list[int]:
        listed = fleet.call("GET", f"{fleet.pool_url}/members/{edge_1.id}/backups")["items"]
        return [s["id"] for s in listed]

    # Retention runs once the backup's result is recorded, so it may trail the job by a moment.
    wait_until(lambda: len(kept()) == 2, 15, what="retention to remove the oldest snapshot")
    assert kept() == [third["id"], second["id"]]
    fleet.call("GET", f"/api/backups/{snapshot['id']}", expect=404)
    if store is not None:
        assert snapshot["key"] not in _keys(store)
        assert {second["key"], third["key"]} <= _keys(store)
    else:
        assert not (fleet.server.data_dir / "backups" / snapshot["key"]).exists()


def test_a_restore_whose_config_fails_the_check_leaves_files_and_process_alone(
    local_fleet: Fleet,
) -> None:
    fleet = local_fleet
    edge_1, edge_2 = fleet.members
    # A backup takes the files as they are, even when the configuration does not validate.
    good = edge_2.haproxy.config.read_text()
    edge_2.haproxy.config.write_text(good + "\nfrontend broken\n    bind 127.0.0.1:notaport\n")
    broken = _backup(fleet, edge_2)
    assert broken["config_valid"] is False
    edge_2.haproxy.config.write_text(good)

    config = edge_1.haproxy.config
    before = {p: (p.read_bytes(), os.stat(p)) for p in config.parent.rglob("*") if p.is_file()}
    pid = edge_1.haproxy.pid()
    job = _restore(fleet, broken["id"], edge_1)
    assert job["state"] == "failed"
    assert "invalid" in job["summary"] or "haproxy -c" in job["summary"], job["summary"]
    after = {p: (p.read_bytes(), os.stat(p)) for p in config.parent.rglob("*") if p.is_file()}
    assert after.keys() == before.keys()
    for path, (data, st) in before.items():
        now_data, now_st = after[path]
        assert now_data == data, path
        assert (now_st.st_ino, now_st.st_mode, now_st.st_uid) == (st.st_ino, st.st_mode, st.st_uid)
    assert edge_1.haproxy.pid() == pid and edge_1.haproxy.alive()
    assert _served(edge_1) == "served by edge-1"


def test_an_agent_killed_during_the_swap_leaves_the_old_set(local_fleet: Fleet) -> None:
    fleet = local_fleet
    edge_1 = fleet.members[0]
    snapshot = _backup(fleet, edge_1)
    new_set = _manifest_files(snapshot)
    # The member moves on: every file of the set changes, so a restore swaps them all.
    haproxy_dir = edge_1.haproxy.config.parent
    config = edge_1.haproxy.config
    config.write_text(config.read_text() + "\n# edited after the backup\n")
    (haproxy_dir / "certs/site.pem.ca").write_text("not the CA any more\n")
    for name in ("a", "b", "c"):
        (haproxy_dir / "conf.d").mkdir(exist_ok=True)
        (haproxy_dir / f"conf.d/{name}.cfg").write_text(f"backend {name}\n")
    old_set = _haproxy_files(edge_1)
    pid = edge_1.haproxy.pid()

    queued = fleet.call(
        "POST", f"/api/backups/{snapshot['id']}/restore", {"target_member_id": edge_1.id}
    )

    def mixed() -> bool:
        current = _haproxy_files(edge_1)
        return current != old_set and current != new_set

    wait_until(mixed, 30, interval=0.02, what="the swap to be half done")
    assert edge_1.agent.process is not None
    edge_1.agent.process.send_signal(signal.SIGKILL)
    edge_1.agent.process.wait(10)
    assert mixed(), "the kill should land in the middle of the swap"

    # The agent finishes nothing it started: at start it puts the old set back.
    edge_1.agent.start()
    wait_until(lambda: _haproxy_files(edge_1) == old_set, 30, what="the old set to be back")
    assert edge_1.haproxy.pid() == pid and edge_1.haproxy.alive()
    job = _job(fleet, queued["job_id"], timeout=60)
    assert job["state"] == "failed"


def test_a_fresh_host_is_rebuilt_from_a_lost_members_snapshot_and_made_active(
    plain_fleet: Fleet,
) -> None:
    fleet = plain_fleet
    edge_1, edge_2 = fleet.members
    fleet.link_dns(ttl=1)
    wait_until(lambda: fleet.answer() == [EDGE_1], 15, what="DNS to answer edge-1")
    snapshot = _backup(fleet, edge_1)
    # edge-1's VM is lost; traffic goes to edge-2, and edge-1 leaves the pool.
    edge_1.stop()
    fleet.call("POST", f"{fleet.pool_url}/members/{edge_2.id}/activate", {})
    fleet.wait_for_answer(EDGE_2)
    fleet.call("DELETE", f"{fleet.pool_url}/members/{edge_1.id}", expect=204)
    kept = fleet.call("GET", f"/api/backups/{snapshot['id']}")
    assert kept["member_id"] is None and kept["hostname"] == "edge-1"

    # The replacement: a fresh host with only the agent; install HAProxy (already there
    # on this machine, so the job says so), restore the snapshot, make it active.
    rebuilt = fleet.add_member("edge-1b", EDGE_3, portable=True, tls=True, bare=True)
    assert not rebuilt.haproxy.config.exists()
    queued = fleet.call(
        "POST",
        f"{fleet.pool_url}/members/{rebuilt.id}/jobs",
        {"type": "haproxy.install", "params": {}},
    )
    assert _job(fleet, queued["job_id"])["state"] == "completed"
    job = _restore(fleet, snapshot["id"], rebuilt)
    assert job["state"] == "completed", (job["summary"], job["output"])
    assert _haproxy_files(rebuilt) == _manifest_files(snapshot)
    wait_until(lambda: fleet.health(rebuilt) == "healthy", 20, what="edge-1b healthy")
    assert _served(rebuilt) == "served by edge-1"
    fleet.call("POST", f"{fleet.pool_url}/members/{rebuilt.id}/activate", {})
    fleet.wait_for_answer(EDGE_3)
