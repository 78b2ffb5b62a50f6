"""Backups against a real `serverctl serve` process: a stand-in agent on 127.0.0.2 streams a
multi-megabyte archive through uvicorn to the one-time transfer URL, and the backup loop started
with the server fails a snapshot whose job was cancelled."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile

import httpx2 as httpx
import pytest

from support.server import start_server, stop_process
from support.util import wait_until

AGENT_IP = "127.0.0.2"


@pytest.fixture
def cp(tmp_path):
    server = start_server(tmp_path / "cp")
    yield server
    stop_process(server.process)


@pytest.fixture
def member(cp):
    with cp.api() as api:
        pool = api.post("/api/pools", json={"name": "edge"}).json()
        made = api.post(
            f"/api/pools/{pool['id']}/members",
            json={"hostname": "lb1", "allowed_ips": [AGENT_IP]},
        ).json()
    agent = httpx.Client(
        base_url=cp.url,
        timeout=30,
        transport=httpx.HTTPTransport(local_address=AGENT_IP),
        headers={"Authorization": f"Bearer {made['secret']}"},
    )
    yield pool["id"], made["id"], agent
    agent.close()


def _claim(agent: httpx.Client) -> dict:
    answer = agent.post(
        "/api/agents/heartbeat",
        json={
            "ip": AGENT_IP,
            "hostname": "lb1",
            "version": "0.1.0",
            "haproxy": {"monitored": True, "active": True, "source": "pidfile"},
        },
    )
    assert answer.status_code == 200, answer.text
    (job,) = answer.json()["jobs"]
    return job


def _archive() -> tuple[bytes, list[dict]]:
    # Random bytes do not compress: a real multi-megabyte archive.
    content = os.urandom(6 * 1024 * 1024)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("etc/haproxy/certs/bundle.pem")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    entry = {
        "path": "/etc/haproxy/certs/bundle.pem",
        "type": "file",
        "size": len(content),
        "mode": "0600",
        "owner": "root:root",
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    return buffer.getvalue(), [entry]


def test_a_streamed_upload_through_the_real_server_completes_the_backup(cp, member):
    pool_id, member_id, agent = member
    with cp.api() as api:
        queued = api.post(f"/api/pools/{pool_id}/members/{member_id}/backups")
        assert queued.status_code == 202
    job = _claim(agent)
    params = job["params"]
    data, files = _archive()

    def chunks():
        for start in range(0, len(data), 100_000):
            yield data[start : start + 100_000]

    # No Content-Length: a chunked body the server must stream, as the agent sends it.
    put = agent.put(
        params["upload"]["path"],
        content=chunks(),
        headers={"X-Balctl-Hostname": "lb1", "Content-Type": "application/gzip"},
    )
    assert put.status_code == 200, put.text
    assert put.json()["sha256"] == hashlib.sha256(data).hexdigest()
    done = agent.post(
        "/api/agents/jobs/complete",
        json={
            "hostname": "lb1",
            "job_id": job["id"],
            "state": "completed",
            "summary": "backed up 1 file",
            "result": {
                "snapshot_id": params["snapshot_id"],
                "archive_sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "haproxy_version": "2.6.12",
                "files": files,
                "skipped": [],
                "config_valid": True,
            },
        },
    )
    assert done.json() == {"ok": True, "state": "completed"}
    with cp.api() as api:
        snapshot = api.get(f"/api/backups/{params['snapshot_id']}").json()
        assert (snapshot["state"], snapshot["size"]) == ("completed", len(data))
        archive = api.get(f"/api/backups/{snapshot['id']}/archive")
        assert archive.content == data
    stored = cp.data_dir / "backups" / snapshot["key"]
    assert stored.stat().st_mode & 0o777 == 0o600


def test_the_backup_loop_fails_a_snapshot_whose_job_was_cancelled(cp, member):
    pool_id, member_id, agent = member
    with cp.api() as api:
        api.post(f"/api/pools/{pool_id}/members/{member_id}/backups")
        job = _claim(agent)
        api.post(f"/api/jobs/{job['id']}/cancel")
        url = f"/api/backups/{job['params']['snapshot_id']}"
        wait_until(lambda: api.get(url).json()["state"] == "failed", 20, what="the backup loop")
        assert "ended cancelled" in api.get(url).json()["error"]
