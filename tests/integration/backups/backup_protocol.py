"""The backup side of the agent protocol spoken over HTTP, for the control plane's backup tests:
heartbeats that claim jobs, transfers to the one-time URLs, completions; and real tar.gz
archives with their manifests.

`BackupWorld` is the control plane in the test process (the app and its real SQLite database)
with a pool of members allowed from 127.0.0.0/8; `StandIn` is one member's agent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from serverctl.app import create_app
from serverctl.config import Settings
from serverctl.db.migrate import upgrade
from serverctl.domain.principal import SYSTEM
from serverctl.state import AppState
from support.standin_agent import tar_gz

AGENT_IP = "127.0.0.2"
HAPROXY_CFG = b"global\n    daemon\ndefaults\n    mode http\n"
CERT = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@dataclass
class Archive:
    data: bytes
    files: list[dict[str, Any]]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def result(self, snapshot_id: int, **changes: Any) -> dict[str, Any]:
        """The job result an agent reports for this archive."""
        return {
            "snapshot_id": snapshot_id,
            "archive_sha256": self.sha256,
            "size": len(self.data),
            "haproxy_version": "2.6.12",
            "files": self.files,
            "skipped": [{"path": "/srv/certs/x.pem", "reason": "outside /etc"}],
            "config_valid": True,
            **changes,
        }


def make_archive(files: dict[str, bytes] | None = None) -> Archive:
    """A real tar.gz of `files` (absolute paths) and the manifest entries describing it."""
    files = files or {
        "/etc/haproxy/haproxy.cfg": HAPROXY_CFG,
        "/etc/haproxy/certs/edge.pem": CERT,
    }
    data, entries = tar_gz(files)
    return Archive(data, entries)


@dataclass
class StandIn:
    """One member's agent, speaking the protocol by HTTP from an allowed address."""

    client: TestClient
    secret: str
    hostname: str
    member_id: int
    pool_id: int
    haproxy: dict[str, Any] = field(
        default_factory=lambda: {"monitored": True, "active": True, "source": "pidfile"}
    )

    def headers(self, hostname: str | None = None) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.secret}",
            "X-Balctl-Hostname": hostname or self.hostname,
        }

    def heartbeat(self, **haproxy: Any) -> list[dict[str, Any]]:
        answer = self.client.post(
            "/api/agents/heartbeat",
            json={
                "ip": AGENT_IP,
                "hostname": self.hostname,
                "version": "0.1.0",
                "haproxy": {**self.haproxy, **haproxy},
            },
            headers={"Authorization": f"Bearer {self.secret}"},
        )
        assert answer.status_code == 200, answer.text
        jobs: list[dict[str, Any]] = answer.json()["jobs"]
        return jobs

    def claim(self) -> dict[str, Any]:
        jobs = self.heartbeat()
        assert len(jobs) == 1, jobs
        return jobs[0]

    def put(self, path: str, data: bytes, **headers: str) -> Any:
        return self.client.put(
            path,
            content=data,
            headers={**self.headers(), "Content-Type": "application/gzip", **headers},
        )

    def get(self, path: str, **headers: str) -> Any:
        return self.client.get(path, headers={**self.headers(), **headers})

    def complete(
        self,
        job_id: int,
        state: str = "completed",
        result: dict[str, Any] | None = None,
        summary: str = "done",
    ) -> Any:
        body: dict[str, Any] = {
            "hostname": self.hostname,
            "job_id": job_id,
            "state": state,
            "summary": summary,
        }
        if result is not None:
            body["result"] = result
        return self.client.post(
            "/api/agents/jobs/complete",
            json=body,
            headers={"Authorization": f"Bearer {self.secret}"},
        )


@dataclass
class BackupWorld:
    state: AppState
    client: TestClient
    pool_id: int
    members: list[StandIn]

    @property
    def data_dir(self) -> Path:
        return self.state.settings.data_dir

    def add_pool(self, name: str, hostnames: list[str]) -> list[StandIn]:
        pool = self.client.post("/api/pools", json={"name": name}).json()
        made = []
        for hostname in hostnames:
            member = self.client.post(
                f"/api/pools/{pool['id']}/members",
                json={"hostname": hostname, "allowed_ips": ["127.0.0.0/8"]},
            ).json()
            made.append(StandIn(self.client, member["secret"], hostname, member["id"], pool["id"]))
        return made

    def backups_url(self, agent: StandIn) -> str:
        return f"/api/pools/{agent.pool_id}/members/{agent.member_id}/backups"

    def enqueue(self, agent: StandIn, **body: Any) -> int:
        answer = self.client.post(self.backups_url(agent), json=body)
        assert answer.status_code == 202, answer.text
        job_id: int = answer.json()["job_id"]
        return job_id

    def back_up(self, agent: StandIn, archive: Archive | None = None) -> dict[str, Any]:
        """One whole backup through the protocol; the snapshot as the API shows it."""
        archive = archive or make_archive()
        self.enqueue(agent)
        job = agent.claim()
        params = job["params"]
        assert agent.put(params["upload"]["path"], archive.data).status_code == 200
        done = agent.complete(job["id"], result=archive.result(params["snapshot_id"]))
        assert done.json()["state"] == "completed", done.text
        snapshot: dict[str, Any] = self.client.get(f"/api/backups/{params['snapshot_id']}").json()
        return snapshot

    def job(self, job_id: int) -> dict[str, Any]:
        found: dict[str, Any] = self.client.get(f"/api/jobs/{job_id}").json()
        return found

    def as_role(self, role: str) -> dict[str, str]:
        _, token = self.state.operators.create_token(SYSTEM, f"{role}-token", role)
        return {"Authorization": f"Bearer {token}"}


@contextmanager
def backup_world(
    tmp_path: Path, hostnames: tuple[str, ...] = ("lb1", "lb2")
) -> Iterator[BackupWorld]:
    settings = Settings(data_dir=tmp_path / "var", public_url="https://cp.example.net")
    state = AppState.build(settings)
    upgrade(state.db.engine)
    _, token = state.operators.create_token(SYSTEM, "tests", "admin")
    app = create_app(settings, state)
    with TestClient(app, client=(AGENT_IP, 50000)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        world = BackupWorld(state, client, 0, [])
        world.members = world.add_pool("edge", list(hostnames))
        world.pool_id = world.members[0].pool_id
        yield world
    state.db.dispose()
