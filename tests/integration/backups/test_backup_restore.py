"""Restores, the restore diff and standby provisioning through the REST API and the agent
protocol, against the real app and the local store."""

from __future__ import annotations

import hashlib

import pytest
from backup_protocol import CERT, HAPROXY_CFG, backup_world, make_archive

from serverctl.domain.principal import SYSTEM


@pytest.fixture
def world(tmp_path):
    with backup_world(tmp_path, ("lb1", "lb2", "lb3")) as made:
        yield made


def _restore(world, snapshot_id, **body):
    return world.client.post(f"/api/backups/{snapshot_id}/restore", json=body)


def test_a_restore_job_gets_the_manifest_and_a_one_time_download(world):
    lb1, lb2 = world.members[:2]
    snapshot = world.back_up(lb1)
    queued = _restore(world, snapshot["id"], target_member_id=lb2.member_id)
    assert queued.status_code == 202
    job_id = queued.json()["job_id"]
    assert world.job(job_id)["params"] == {"snapshot_id": snapshot["id"]}

    job = lb2.claim()
    assert (job["id"], job["type"]) == (job_id, "haproxy.restore")
    params = job["params"]
    assert params["snapshot_id"] == snapshot["id"]
    assert params["source_hostname"] == "lb1"
    assert (params["archive_sha256"], params["size"]) == (snapshot["sha256"], snapshot["size"])
    assert params["files"] == snapshot["files"]
    download = params["download"]
    assert download["method"] == "GET"
    assert download["path"].startswith("/api/agents/backups/transfer/")

    # Only the target may fetch it, and only once it has all of it.
    assert lb1.get(download["path"]).status_code == 403
    got = lb2.get(download["path"])
    assert got.status_code == 200
    assert hashlib.sha256(got.content).hexdigest() == snapshot["sha256"]
    again = lb2.get(download["path"])
    assert again.status_code == 410

    result = {"snapshot_id": snapshot["id"], "added": [], "changed": [], "removed": []}
    done = lb2.complete(job_id, result={**result, "unchanged": 2, "reloaded": True})
    assert done.json()["state"] == "completed"


def test_restore_defaults_to_the_snapshots_own_member(world):
    lb1 = world.members[0]
    snapshot = world.back_up(lb1)
    job_id = _restore(world, snapshot["id"]).json()["job_id"]
    assert world.job(job_id)["member_id"] == lb1.member_id


def test_restores_are_refused_across_pools_and_for_unusable_snapshots(world):
    lb1, lb2 = world.members[:2]
    (stranger,) = world.add_pool("other", ["lb9"])
    snapshot = world.back_up(lb1)
    across = _restore(world, snapshot["id"], target_member_id=stranger.member_id)
    assert across.status_code == 409
    assert "restores stay within the pool" in across.json()["detail"]

    world.enqueue(lb1)
    job = lb1.claim()
    lb1.complete(job["id"], state="failed", summary="disk full")
    failed = _restore(world, job["params"]["snapshot_id"], target_member_id=lb2.member_id)
    assert failed.status_code == 409
    assert "is failed: disk full" in failed.json()["detail"]

    lb1.heartbeat(backup_files={"ufw": True, "files": []})
    world.enqueue(lb1, kind="ufw")
    job = lb1.claim()
    archive = make_archive({"/etc/ufw/user.rules": b"*filter\nCOMMIT\n"})
    lb1.put(job["params"]["upload"]["path"], archive.data)
    lb1.complete(job["id"], result=archive.result(job["params"]["snapshot_id"]))
    ufw = _restore(world, job["params"]["snapshot_id"], target_member_id=lb2.member_id)
    assert ufw.status_code == 409
    assert "ServerCTL does not restore them" in ufw.json()["detail"]

    assert _restore(world, 999).status_code == 404
    assert _restore(world, snapshot["id"], target_member_id=999).status_code == 404
    viewer = world.client.post(
        f"/api/backups/{snapshot['id']}/restore", headers=world.as_role("viewer")
    )
    assert viewer.status_code == 403
    restores = world.client.get(f"/api/pools/{world.pool_id}/jobs?type=haproxy.restore").json()
    assert restores["total"] == 0


def test_a_restore_whose_snapshot_was_deleted_meanwhile_fails_at_claim(world):
    lb1, lb2 = world.members[:2]
    snapshot = world.back_up(lb1)
    job_id = _restore(world, snapshot["id"], target_member_id=lb2.member_id).json()["job_id"]
    assert world.client.delete(f"/api/backups/{snapshot['id']}").status_code == 204
    assert lb2.heartbeat() == []
    failed = world.job(job_id)
    assert failed["state"] == "failed"
    assert "no longer exists" in failed["summary"]


# -- the diff -----------------------------------------------------------------------------------


def test_the_diff_compares_the_snapshot_with_the_targets_reported_files(world):
    lb1, lb2 = world.members[:2]
    snapshot = world.back_up(lb1)
    unknown = world.client.get(
        f"/api/backups/{snapshot['id']}/diff", params={"target_member_id": lb2.member_id}
    ).json()
    assert unknown == {
        "target_member_id": lb2.member_id,
        "known": False,
        "added": [],
        "changed": [],
        "removed": [],
        "unchanged": 0,
    }

    def sha(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    lb2.heartbeat(
        backup_files={
            "ufw": False,
            "files": [
                {"path": "/etc/haproxy/haproxy.cfg", "sha256": sha(b"other config")},
                {"path": "/etc/haproxy/certs/edge.pem", "sha256": sha(CERT)},
                {"path": "/etc/haproxy/conf.d/extra.cfg", "sha256": sha(b"x")},
                {"path": "/etc/haproxy/certs/old/gone.pem", "sha256": sha(b"y")},
                {"path": "/etc/letsencrypt/live/x/fullchain.pem", "sha256": sha(b"z")},
                {"path": "/etc/haproxy/conf.d/notes.txt", "sha256": sha(b"n")},
            ],
        }
    )
    diff = world.client.get(
        f"/api/backups/{snapshot['id']}/diff", params={"target_member_id": lb2.member_id}
    ).json()
    assert diff == {
        "target_member_id": lb2.member_id,
        "known": True,
        "added": [],
        "changed": ["/etc/haproxy/haproxy.cfg"],
        "removed": ["/etc/haproxy/certs/old/gone.pem", "/etc/haproxy/conf.d/extra.cfg"],
        "unchanged": 1,
    }
    # A list the agent had to cut short would invent additions: the diff is not known.
    lb2.heartbeat(backup_files={"ufw": False, "files": [], "truncated": True})
    cut = world.client.get(
        f"/api/backups/{snapshot['id']}/diff", params={"target_member_id": lb2.member_id}
    ).json()
    assert cut["known"] is False
    # Against its own member, which reported nothing yet.
    own = world.client.get(f"/api/backups/{snapshot['id']}/diff").json()
    assert own["target_member_id"] == lb1.member_id and own["known"] is False


def test_the_diff_lists_files_the_target_lacks_as_added(world):
    lb1, lb2 = world.members[:2]
    snapshot = world.back_up(lb1)
    lb2.heartbeat(
        backup_files={
            "ufw": False,
            "files": {"/etc/haproxy/haproxy.cfg": hashlib.sha256(HAPROXY_CFG).hexdigest()},
        }
    )
    diff = world.state.backups.diff(SYSTEM, snapshot["id"], lb2.member_id)
    assert diff["added"] == ["/etc/haproxy/certs/edge.pem"]
    assert (diff["changed"], diff["removed"], diff["unchanged"]) == ([], [], 1)


# -- provisioning a standby ---------------------------------------------------------------------


def _provision(world, member, **body):
    url = f"/api/pools/{world.pool_id}/members/{member.member_id}/provision-from-backup"
    return world.client.post(url, json=body)


def _steps(world, job_id):
    return [(s["type"], s["state"]) for s in world.job(job_id)["steps"]]


def test_provisioning_installs_haproxy_then_restores_the_active_members_latest_backup(world):
    lb1, lb2 = world.members[:2]
    world.back_up(lb1)
    latest = world.back_up(lb1)
    lb2.heartbeat(monitored=False, active=None)
    queued = _provision(world, lb2)
    assert queued.status_code == 202
    parent = world.job(queued.json()["job_id"])
    assert (parent["type"], parent["params"]["recipe"]) == ("recipe", "provision-standby")
    assert parent["params"]["steps"] == ["haproxy.install", "haproxy.restore"]
    assert parent["params"]["step_params"] == [{}, {"snapshot_id": latest["id"]}]

    install = lb2.claim()
    assert install["type"] == "haproxy.install"
    lb2.complete(install["id"])
    restore = lb2.claim()
    assert restore["type"] == "haproxy.restore"
    assert restore["params"]["snapshot_id"] == latest["id"]
    assert lb2.get(restore["params"]["download"]["path"]).status_code == 200
    lb2.complete(restore["id"], result={"snapshot_id": latest["id"], "reloaded": True})
    finished = world.job(parent["id"])
    assert finished["state"] == "completed"
    assert _steps(world, parent["id"]) == [
        ("haproxy.install", "completed"),
        ("haproxy.restore", "completed"),
    ]


SHOW_INFO = {"pid": 1, "uptime_s": 60, "curr_conns": 0, "conn_rate": 0, "sess_rate": 0}


@pytest.mark.parametrize(
    ("haproxy", "steps"),
    [
        ({"monitored": True, "active": True}, ["haproxy.restore"]),
        ({"monitored": True, "active": False, "version": "2.8.5"}, ["haproxy.restore"]),
        (
            # `show info` as the agent reports it (every key; domain/enrichment.py checks).
            {"monitored": True, "active": False, "info": {**SHOW_INFO, "version": "2.8.5"}},
            ["haproxy.restore"],
        ),
        ({"monitored": True, "active": False}, ["haproxy.install", "haproxy.restore"]),
        ({"monitored": False, "source": "none"}, ["haproxy.install", "haproxy.restore"]),
    ],
)
def test_auto_installs_haproxy_only_where_the_agent_reports_none(world, haproxy, steps):
    lb1, lb2 = world.members[:2]
    world.back_up(lb1)
    lb2.heartbeat(**haproxy)
    parent = world.job(_provision(world, lb2).json()["job_id"])
    assert parent["params"]["steps"] == steps


def test_provisioning_can_force_the_install_and_name_the_snapshot(world):
    lb1, lb2 = world.members[:2]
    snapshot = world.back_up(lb1)
    lb2.heartbeat()
    forced = world.job(_provision(world, lb2, install_haproxy=True).json()["job_id"])
    assert forced["params"]["steps"] == ["haproxy.install", "haproxy.restore"]
    chosen = world.job(
        _provision(world, lb2, snapshot_id=snapshot["id"], install_haproxy=False).json()["job_id"]
    )
    assert chosen["params"]["step_params"] == [{"snapshot_id": snapshot["id"]}]


def test_provisioning_is_refused_on_the_active_member_and_without_a_backup(world):
    lb1, lb2 = world.members[:2]
    no_backup = _provision(world, lb2)
    assert no_backup.status_code == 409
    assert "the active member lb1 has no completed HAProxy backup" in no_backup.json()["detail"]
    world.back_up(lb1)
    active = _provision(world, lb1)
    assert active.status_code == 409
    assert "is the active member" in active.json()["detail"]
    bad = _provision(world, lb2, install_haproxy="sometimes")
    assert bad.status_code == 422
    (stranger,) = world.add_pool("other", ["lb9"])
    theirs = world.back_up(stranger)
    across = _provision(world, lb2, snapshot_id=theirs["id"])
    assert across.status_code == 409
    assert world.client.get(f"/api/pools/{world.pool_id}/jobs?type=recipe").json()["total"] == 0


def test_pool_snapshots_lists_every_members_completed_backups_newest_first(world):
    lb1, lb2 = world.members[:2]
    first = world.back_up(lb1)
    second = world.back_up(lb2)
    world.enqueue(lb1)
    lb1.claim()  # a running one is not listed
    items = world.client.get(f"/api/pools/{world.pool_id}/backups").json()["items"]
    assert [(s["id"], s["hostname"]) for s in items] == [
        (second["id"], "lb2"),
        (first["id"], "lb1"),
    ]
    # A deleted member's snapshots stay: they rebuild its replacement.
    world.client.delete(f"/api/pools/{world.pool_id}/members/{lb2.member_id}")
    kept = world.client.get(f"/api/pools/{world.pool_id}/backups").json()["items"]
    assert [(s["hostname"], s["member_id"]) for s in kept] == [
        ("lb2", None),
        ("lb1", lb1.member_id),
    ]
    orphan = _restore(world, second["id"])
    assert orphan.status_code == 422
    assert "name the target_member_id" in orphan.json()["detail"]
    assert _restore(world, second["id"], target_member_id=lb1.member_id).status_code == 202
