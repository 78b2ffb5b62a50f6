"""Backups through the REST API and the agent protocol, against the real app, its SQLite
database and the local store: queueing, the claim-time upload transfer, the one-time transfer
endpoint and its refusals, the result review and the finished snapshot."""

from __future__ import annotations

import hashlib
import json

import pytest
from backup_protocol import backup_world, make_archive
from fastapi.testclient import TestClient

import serverctl.api.backups as backups_api


@pytest.fixture
def world(tmp_path):
    with backup_world(tmp_path) as made:
        yield made


def test_a_backup_goes_from_queue_to_completed_snapshot_with_its_manifest(world):
    lb1 = world.members[0]
    job_id = world.enqueue(lb1)
    assert world.job(job_id)["state"] == "pending"
    job = lb1.claim()
    assert (job["id"], job["type"]) == (job_id, "haproxy.backup")
    params = job["params"]
    upload = params["upload"]
    assert upload["method"] == "PUT"
    assert upload["path"].startswith("/api/agents/backups/transfer/")
    assert upload["headers"] == {"Content-Type": "application/gzip"}
    assert "url" not in upload
    assert params["max_bytes"] == 256 * 1024 * 1024
    # The token is handed out, never stored: the job keeps its queued params.
    assert world.job(job_id)["params"] == {}
    running = world.client.get(world.backups_url(lb1)).json()["items"]
    assert [(s["id"], s["state"]) for s in running] == [(params["snapshot_id"], "running")]

    archive = make_archive()
    stored = lb1.put(upload["path"], archive.data)
    assert stored.status_code == 200, stored.text
    assert stored.json() == {"ok": True, "size": len(archive.data), "sha256": archive.sha256}
    done = lb1.complete(job_id, result=archive.result(params["snapshot_id"]))
    assert done.json() == {"ok": True, "state": "completed"}

    snapshot = world.client.get(f"/api/backups/{params['snapshot_id']}").json()
    assert snapshot["state"] == "completed"
    assert (snapshot["hostname"], snapshot["kind"], snapshot["store"]) == (
        "lb1",
        "haproxy",
        "local",
    )
    assert (snapshot["sha256"], snapshot["size"]) == (archive.sha256, len(archive.data))
    assert snapshot["haproxy_version"] == "2.6.12"
    assert snapshot["files"] == archive.files
    assert snapshot["skipped"] == [{"path": "/srv/certs/x.pem", "reason": "outside /etc"}]
    assert snapshot["config_valid"] is True
    assert (snapshot["job_id"], snapshot["source"], snapshot["enqueued_by"]) == (
        job_id,
        "operator",
        "token:tests",
    )
    assert snapshot["completed_at"] is not None
    assert snapshot["key"].startswith("edge/lb1/") and snapshot["key"].endswith(
        f"-{snapshot['id']}.tar.gz"
    )

    # The archive and its manifest are in the store, side by side.
    folder = world.data_dir / "backups"
    on_disk = folder / snapshot["key"]
    assert on_disk.read_bytes() == archive.data
    manifest = json.loads(
        (folder / snapshot["key"].replace(".tar.gz", ".manifest.json")).read_text()
    )
    assert manifest["sha256"] == archive.sha256 and manifest["files"] == archive.files
    assert manifest["hostname"] == "lb1" and manifest["id"] == snapshot["id"]

    listed = world.client.get(world.backups_url(lb1)).json()["items"]
    assert listed[0]["file_count"] == 2 and "files" not in listed[0]
    download = world.client.get(f"/api/backups/{snapshot['id']}/archive")
    assert download.status_code == 200
    assert download.content == archive.data
    assert (
        f'filename="lb1-{snapshot["key"].rsplit("/", 1)[-1]}"'
        in (download.headers["content-disposition"])
    )


def test_every_claim_gets_a_fresh_upload_transfer(world):
    lb1 = world.members[0]
    paths = []
    for _ in range(2):
        world.enqueue(lb1)
        job = lb1.claim()
        paths.append(job["params"]["upload"]["path"])
        lb1.complete(job["id"], state="failed", summary="stopped by the test")
    assert paths[0] != paths[1]


def test_backups_list_newest_first(world):
    lb1 = world.members[0]
    first = world.back_up(lb1)
    second = world.back_up(lb1)
    items = world.client.get(world.backups_url(lb1)).json()["items"]
    assert [s["id"] for s in items] == [second["id"], first["id"]]


def test_an_archive_that_differs_from_the_reported_one_fails_the_backup(world):
    lb1 = world.members[0]
    world.enqueue(lb1)
    job = lb1.claim()
    archive = make_archive()
    lb1.put(job["params"]["upload"]["path"], archive.data + b"tampered")
    done = lb1.complete(job["id"], result=archive.result(job["params"]["snapshot_id"]))
    assert done.json()["state"] == "failed"
    failed = world.job(job["id"])
    assert "is not the one the agent made" in failed["summary"]
    snapshot = world.client.get(f"/api/backups/{job['params']['snapshot_id']}").json()
    assert snapshot["state"] == "failed"
    assert "is not the one the agent made" in snapshot["error"]
    # The refused upload does not stay in the store looking like a backup.
    assert not [p for p in (world.data_dir / "backups").rglob("*") if p.is_file()]
    alerts = world.client.get(f"/api/pools/{world.pool_id}/alerts/history").json()["items"]
    assert [(a["kind"], a["member_id"]) for a in alerts] == [("backup.failed", lb1.member_id)]


def test_a_result_without_an_upload_fails_the_backup(world):
    lb1 = world.members[0]
    world.enqueue(lb1)
    job = lb1.claim()
    done = lb1.complete(job["id"], result=make_archive().result(job["params"]["snapshot_id"]))
    assert done.json()["state"] == "failed"
    assert "never reached the store" in world.job(job["id"])["summary"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"snapshot_id": 999}, "this job's snapshot is"),
        ({"files": [{"path": "/root/.ssh/id_rsa"}]}, "files.0"),
        (
            {
                "files": [
                    {
                        "path": "/etc/haproxy/../shadow",
                        "type": "file",
                        "size": 1,
                        "mode": "0640",
                        "sha256": "0" * 64,
                    }
                ]
            },
            "'..' in the path",
        ),
        (
            {
                "files": [
                    {
                        "path": "/var/lib/x",
                        "type": "file",
                        "size": 1,
                        "mode": "0640",
                        "sha256": "0" * 64,
                    }
                ]
            },
            "not under /etc/",
        ),
        ({"archive_sha256": "nope"}, "archive_sha256"),
    ],
)
def test_a_malformed_result_fails_the_backup_with_the_reason(world, change, reason):
    lb1 = world.members[0]
    world.enqueue(lb1)
    job = lb1.claim()
    archive = make_archive()
    lb1.put(job["params"]["upload"]["path"], archive.data)
    result = {**archive.result(job["params"]["snapshot_id"]), **change}
    assert lb1.complete(job["id"], result=result).json()["state"] == "failed"
    assert reason in world.job(job["id"])["summary"]
    snapshot = world.client.get(f"/api/backups/{job['params']['snapshot_id']}").json()
    assert snapshot["state"] == "failed" and reason in snapshot["error"]


def test_a_failed_backup_job_fails_its_snapshot_with_the_agents_summary(world):
    lb1 = world.members[0]
    world.enqueue(lb1)
    job = lb1.claim()
    lb1.complete(job["id"], state="failed", summary="tar: /etc/haproxy: Permission denied")
    snapshot = world.client.get(f"/api/backups/{job['params']['snapshot_id']}").json()
    assert snapshot["state"] == "failed"
    assert snapshot["error"] == "tar: /etc/haproxy: Permission denied"


# -- the transfer endpoint's refusals -----------------------------------------------------------


@pytest.fixture
def claimed(world):
    lb1 = world.members[0]
    world.enqueue(lb1)
    job = lb1.claim()
    return lb1, job, job["params"]["upload"]["path"]


def test_a_transfer_token_works_once(world, claimed):
    lb1, job, path = claimed
    archive = make_archive()
    assert lb1.put(path, archive.data).status_code == 200
    again = lb1.put(path, archive.data)
    assert again.status_code == 410
    assert "already used" in again.json()["detail"]


def test_a_failed_upload_leaves_the_token_usable(world, claimed, monkeypatch):
    lb1, job, path = claimed
    monkeypatch.setattr(backups_api, "MAX_ARCHIVE_BYTES", 1000)
    too_big = lb1.put(path, b"x" * 5000)
    assert too_big.status_code == 413
    assert "larger than the 1000 bytes" in too_big.json()["detail"]
    assert lb1.put(path, b"y" * 10).status_code == 200


def test_an_upload_streamed_past_the_limit_is_refused_and_nothing_is_kept(
    world, claimed, monkeypatch
):
    lb1, job, path = claimed
    monkeypatch.setattr(backups_api, "MAX_ARCHIVE_BYTES", 100_000)

    def body():
        for _ in range(10):
            yield b"z" * 20_000

    refused = lb1.client.put(path, content=body(), headers=lb1.headers())
    assert refused.status_code == 413
    stored = list((world.data_dir / "backups").rglob("*"))
    assert not [p for p in stored if p.is_file()]


def test_an_upload_over_the_declared_limit_is_refused_before_reading(world, claimed):
    lb1, job, path = claimed
    answer = lb1.client.put(
        path, content=b"x", headers={**lb1.headers(), "Content-Length": str(2**40)}
    )
    assert answer.status_code == 413


def test_another_members_token_is_refused(world, claimed):
    _, _, path = claimed
    lb2 = world.members[1]
    answer = lb2.put(path, make_archive().data)
    assert answer.status_code == 403
    assert "issued to another member" in answer.json()["detail"]
    # The operator sees why on lb2's card.
    rejections = world.client.get(f"/api/pools/{world.pool_id}/members/{lb2.member_id}").json()[
        "last_rejection"
    ]
    assert "another member" in rejections["reason"]


@pytest.mark.parametrize(
    ("hostname", "status", "reason"),
    [
        ("lb2", 401, "does not match the enrolled hostname"),
        ("", 401, "missing X-Balctl-Hostname header"),
    ],
)
def test_a_wrong_or_missing_hostname_is_refused(world, claimed, hostname, status, reason):
    lb1, _, path = claimed
    answer = lb1.client.put(
        path,
        content=b"x",
        headers={"Authorization": f"Bearer {lb1.secret}", "X-Balctl-Hostname": hostname},
    )
    assert answer.status_code == status
    assert reason in answer.json()["detail"]


def test_a_bad_secret_or_a_stranger_address_is_refused(world, claimed):
    lb1, _, path = claimed
    no_secret = lb1.client.put(path, content=b"x", headers={"Authorization": "Bearer nope"})
    assert no_secret.status_code == 401
    stranger = TestClient(lb1.client.app, client=("10.9.9.9", 50000))
    answer = stranger.put(path, content=b"x", headers=lb1.headers())
    assert answer.status_code == 403
    assert "10.9.9.9 is not allowed" in answer.json()["detail"]


def test_unknown_tokens_and_wrong_directions_are_refused(world, claimed):
    lb1, _, path = claimed
    unknown = lb1.put("/api/agents/backups/transfer/not-a-token", b"x")
    assert unknown.status_code == 404
    wrong_way = lb1.get(path)
    assert wrong_way.status_code == 403
    assert "for uploading, not downloading" in wrong_way.json()["detail"]


def test_an_upload_after_the_job_ended_is_refused(world, claimed):
    lb1, job, path = claimed
    world.client.post(f"/api/jobs/{job['id']}/cancel")
    answer = lb1.put(path, make_archive().data)
    assert answer.status_code == 410
    assert "is over (cancelled)" in answer.json()["detail"]


# -- queueing rules -----------------------------------------------------------------------------


def test_ufw_backups_are_refused_where_the_agent_reports_no_ufw(world):
    lb1 = world.members[0]
    lb1.heartbeat(backup_files={"ufw": False, "files": []})
    refused = world.client.post(world.backups_url(lb1), json={"kind": "ufw"})
    assert refused.status_code == 409
    assert "reports no ufw" in refused.json()["detail"]
    lb1.heartbeat(backup_files={"ufw": True, "files": []})
    job_id = world.enqueue(lb1, kind="ufw")
    assert world.job(job_id)["type"] == "backup.ufw"
    job = lb1.claim()
    archive = make_archive({"/etc/ufw/user.rules": b"*filter\nCOMMIT\n"})
    lb1.put(job["params"]["upload"]["path"], archive.data)
    lb1.complete(job["id"], result=archive.result(job["params"]["snapshot_id"]))
    snapshot = world.client.get(f"/api/backups/{job['params']['snapshot_id']}").json()
    assert (snapshot["kind"], snapshot["state"]) == ("ufw", "completed")


def test_the_reported_backup_files_survive_heartbeats_that_leave_them_out(world):
    lb1 = world.members[0]
    lb1.heartbeat(backup_files={"ufw": False, "files": []})
    lb1.heartbeat()
    assert world.client.post(world.backups_url(lb1), json={"kind": "ufw"}).status_code == 409


def test_bad_kinds_viewers_and_unknown_members_are_refused(world):
    lb1 = world.members[0]
    assert world.client.post(world.backups_url(lb1), json={"kind": "etc"}).status_code == 422
    viewer = world.client.post(world.backups_url(lb1), headers=world.as_role("viewer"))
    assert viewer.status_code == 403
    missing = world.client.post(f"/api/pools/{world.pool_id}/members/999/backups")
    assert missing.status_code == 404
    assert (
        world.client.get(f"/api/pools/{world.pool_id}/members/{lb1.member_id}/jobs").json()["total"]
        == 0
    )


def test_an_idempotency_key_queues_one_backup(world):
    lb1 = world.members[0]
    first = world.enqueue(lb1, idempotency_key="nightly-1")
    assert world.enqueue(lb1, idempotency_key="nightly-1") == first


def test_archive_downloads_are_for_operators_and_completed_snapshots(world):
    lb1 = world.members[0]
    snapshot = world.back_up(lb1)
    viewer = world.client.get(
        f"/api/backups/{snapshot['id']}/archive", headers=world.as_role("viewer")
    )
    assert viewer.status_code == 403
    world.enqueue(lb1)
    running = lb1.claim()["params"]["snapshot_id"]
    assert world.client.get(f"/api/backups/{running}/archive").status_code == 409
    assert world.client.get("/api/backups/999").status_code == 404


def test_deleting_a_snapshot_removes_its_objects(world):
    lb1 = world.members[0]
    snapshot = world.back_up(lb1)
    archive = world.data_dir / "backups" / snapshot["key"]
    manifest = archive.with_name(archive.name.replace(".tar.gz", ".manifest.json"))
    assert archive.exists() and manifest.exists()
    assert world.client.delete(f"/api/backups/{snapshot['id']}").status_code == 204
    assert not archive.exists() and not manifest.exists()
    assert world.client.get(f"/api/backups/{snapshot['id']}").status_code == 404


def test_a_running_snapshot_cannot_be_deleted(world, claimed):
    _, job, _ = claimed
    answer = world.client.delete(f"/api/backups/{job['params']['snapshot_id']}")
    assert answer.status_code == 409
    assert "still being made" in answer.json()["detail"]


def test_the_stored_archive_is_the_uploaded_bytes(world):
    lb1 = world.members[0]
    archive = make_archive({"/etc/haproxy/haproxy.cfg": b"x" * 300_000})
    snapshot = world.back_up(lb1, archive)
    on_disk = (world.data_dir / "backups" / snapshot["key"]).read_bytes()
    assert hashlib.sha256(on_disk).hexdigest() == archive.sha256
