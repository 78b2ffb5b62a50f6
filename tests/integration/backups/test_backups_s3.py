"""Backups and restores through an S3 store (moto's S3 server behind a Signature V4 gate): the
agent gets presigned URLs and transfers straight to the bucket; the control plane checks the
object, writes the manifest beside it, and deletes both on retention."""

from __future__ import annotations

import hashlib
import json

import httpx2 as httpx
import pytest
from backup_protocol import backup_world, make_archive

from support import s3 as s3_support

moto_s3 = s3_support.moto_s3
BUCKET = "haproxy-backups"


@pytest.fixture
def world(tmp_path, moto_s3):
    moto_s3.create_bucket(BUCKET)
    with backup_world(tmp_path) as made:
        saved = made.client.put(
            "/api/settings/backup-store",
            json={"kind": "s3", "settings": moto_s3.settings(BUCKET), "secrets": moto_s3.secrets()},
        )
        assert saved.status_code == 200, saved.text
        yield made


def _objects(moto_s3):
    listed = moto_s3.client().list_objects_v2(Bucket=BUCKET)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_a_backup_uploads_to_a_presigned_url_and_is_checked_in_the_bucket(world, moto_s3):
    lb1 = world.members[0]
    world.enqueue(lb1)
    job = lb1.claim()
    upload = job["params"]["upload"]
    assert "path" not in upload
    assert upload["url"].startswith(f"{moto_s3.endpoint_url}/{BUCKET}/serverctl/edge/lb1/")
    assert "X-Amz-Signature=" in upload["url"]
    assert upload["headers"] == {"Content-Type": "application/gzip"}
    # The agent holds no credentials: the URL alone lets it in.
    assert moto_s3.secret_access_key not in json.dumps(job)

    archive = make_archive()
    put = httpx.put(upload["url"], content=archive.data, headers=upload["headers"], timeout=10)
    assert put.status_code == 200, put.text
    done = lb1.complete(job["id"], result=archive.result(job["params"]["snapshot_id"]))
    assert done.json()["state"] == "completed"

    snapshot = world.client.get(f"/api/backups/{job['params']['snapshot_id']}").json()
    assert (snapshot["store"], snapshot["state"]) == ("s3", "completed")
    assert snapshot["key"].startswith("serverctl/edge/lb1/")
    manifest_key = snapshot["key"].replace(".tar.gz", ".manifest.json")
    assert _objects(moto_s3) == sorted([snapshot["key"], manifest_key])
    body = moto_s3.client().get_object(Bucket=BUCKET, Key=manifest_key)["Body"].read()
    assert json.loads(body)["sha256"] == archive.sha256
    download = world.client.get(f"/api/backups/{snapshot['id']}/archive")
    assert download.content == archive.data


def test_an_object_that_differs_from_the_report_fails_the_backup(world, moto_s3):
    lb1 = world.members[0]
    world.enqueue(lb1)
    job = lb1.claim()
    upload = job["params"]["upload"]
    archive = make_archive()
    httpx.put(upload["url"], content=b"not the archive", headers=upload["headers"], timeout=10)
    done = lb1.complete(job["id"], result=archive.result(job["params"]["snapshot_id"]))
    assert done.json()["state"] == "failed"
    assert "is not the one the agent made" in world.job(job["id"])["summary"]


def test_a_restore_downloads_from_a_presigned_url_and_retention_empties_the_bucket(world, moto_s3):
    lb1, lb2 = world.members
    world.client.put(
        f"/api/pools/{world.pool_id}/members/{lb1.member_id}/backup-policy", json={"keep_last": 1}
    )
    snapshots = []
    for _ in range(2):
        world.enqueue(lb1)
        job = lb1.claim()
        archive = make_archive()
        upload = job["params"]["upload"]
        httpx.put(upload["url"], content=archive.data, headers=upload["headers"], timeout=10)
        lb1.complete(job["id"], result=archive.result(job["params"]["snapshot_id"]))
        snapshots.append(world.client.get(f"/api/backups/{job['params']['snapshot_id']}").json())
    kept = snapshots[1]
    assert _objects(moto_s3) == sorted(
        [kept["key"], kept["key"].replace(".tar.gz", ".manifest.json")]
    )

    queued = world.client.post(
        f"/api/backups/{kept['id']}/restore", json={"target_member_id": lb2.member_id}
    )
    job = lb2.claim()
    assert job["id"] == queued.json()["job_id"]
    download = job["params"]["download"]
    assert download["method"] == "GET" and "X-Amz-Signature=" in download["url"]
    got = httpx.get(download["url"], timeout=10)
    assert hashlib.sha256(got.content).hexdigest() == kept["sha256"]

    assert world.client.delete(f"/api/backups/{kept['id']}").status_code == 204
    assert _objects(moto_s3) == []
