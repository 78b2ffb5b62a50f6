"""An agent's side of the protocol, spoken by the test itself: heartbeats that claim jobs,
completions, and whole backups (a real tar.gz uploaded to the one-time URL, then its manifest).

Works against the app in the test process (a `TestClient` made with `client=(ip, port)`) or a
real server (an `httpx.Client` bound to the member's address): anything with `.request`.
Every field the agent controls can be chosen, for the suites that feed hostile agent input.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from dataclasses import dataclass, field
from typing import Any

DAY = 86_400


def reported_cert(
    path: str,
    days: float,
    *names: str,
    serial: str = "0A1B2C",
    referenced: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """One entry of the agent's `haproxy.certificates` report: a Pebble-issued certificate for
    `names` expiring in `days`; `extra` overrides or adds keys (a malformed entry)."""
    return {
        "path": path,
        "subject": f"CN={names[0]}",
        "sans": list(names),
        "issuer": "CN=Pebble Intermediate CA",
        "not_after": int(time.time() + days * DAY),
        "serial": serial,
        "referenced": referenced,
        **extra,
    }


DEFAULT_FILES = {"/etc/haproxy/haproxy.cfg": b"global\n    daemon\ndefaults\n    mode http\n"}


@dataclass
class StandInAgent:
    client: Any
    secret: str
    hostname: str
    ip: str
    version: str = "0.1.0"
    member_id: int = 0
    haproxy: dict[str, Any] = field(
        default_factory=lambda: {"monitored": True, "active": True, "source": "pidfile"}
    )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.secret}", **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)

    def send_heartbeat(self, **haproxy: Any) -> Any:
        """One heartbeat (the `haproxy` block merged with `haproxy`): the raw answer."""
        return self.call(
            "POST",
            "/api/agents/heartbeat",
            json={
                "ip": self.ip,
                "hostname": self.hostname,
                "version": self.version,
                "haproxy": {**self.haproxy, **haproxy},
            },
        )

    def heartbeat(self, **haproxy: Any) -> list[dict[str, Any]]:
        """One accepted heartbeat: the jobs it handed out."""
        answer = self.send_heartbeat(**haproxy)
        assert answer.status_code == 200, answer.text
        jobs: list[dict[str, Any]] = answer.json()["jobs"]
        return jobs

    def claim(self) -> dict[str, Any]:
        jobs = self.heartbeat()
        assert len(jobs) == 1, f"expected one job to claim, got {jobs}"
        return jobs[0]

    def complete(
        self,
        job_id: int,
        state: str = "completed",
        summary: str = "done",
        output: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "hostname": self.hostname,
            "job_id": job_id,
            "state": state,
            "summary": summary,
        }
        if output is not None:
            body["output"] = output
        if result is not None:
            body["result"] = result
        answer = self.call("POST", "/api/agents/jobs/complete", json=body)
        assert answer.status_code == 200, answer.text
        done: dict[str, Any] = answer.json()
        return done

    def back_up(self, files: dict[str, bytes] | None = None) -> int:
        """Claim the backup job already queued for this member and do it all: the snapshot id."""
        job = self.claim()
        params = job["params"]
        data, manifest = tar_gz(files or DEFAULT_FILES)
        upload = self.call(
            "PUT",
            params["upload"]["path"],
            content=data,
            headers={"X-Balctl-Hostname": self.hostname, "Content-Type": "application/gzip"},
        )
        assert upload.status_code == 200, upload.text
        result = {
            "snapshot_id": params["snapshot_id"],
            "archive_sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "haproxy_version": "2.6.12",
            "files": manifest,
            "skipped": [],
            "config_valid": True,
        }
        done = self.complete(job["id"], summary=f"backed up {len(manifest)} files", result=result)
        assert done["state"] == "completed", done
        snapshot_id: int = params["snapshot_id"]
        return snapshot_id


def tar_gz(files: dict[str, bytes]) -> tuple[bytes, list[dict[str, Any]]]:
    """A real tar.gz of `files` (absolute paths) and the manifest entries an agent reports."""
    buffer = io.BytesIO()
    manifest = []
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, content in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(content), 0o640
            tar.addfile(info, io.BytesIO(content))
            manifest.append(
                {
                    "path": path,
                    "type": "file",
                    "size": len(content),
                    "mode": "0640",
                    "owner": "root:haproxy",
                    "sha256": hashlib.sha256(content).hexdigest(),
                }
            )
    return buffer.getvalue(), manifest
