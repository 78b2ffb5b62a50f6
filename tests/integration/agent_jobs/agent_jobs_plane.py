"""A loopback stand-in for the control plane's agent endpoints, for `balctl run` end to end.

It hands out `jobs` with every heartbeat answer until each is completed (as the real server
does while a job is running), records every request, and can answer the first completions with
503 to exercise the agent's retries. It also serves files under /agent/ (the zipapp).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from support.loopback import LoopbackServer


class JobsPlane(LoopbackServer):
    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.completions: list[dict[str, Any]] = []  # every attempt, including refused ones
        self.files: dict[str, bytes] = {}
        self.events: list[str] = []  # "heartbeat <version>" / "complete <job id>", in order
        self.fail_completions = 0  # answer this many completion attempts with 503
        self.lock = threading.Lock()
        plane = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with plane.lock:
                    status, answer = plane.answer(self.path, body)
                self._send(status, json.dumps(answer).encode(), "application/json")

            def do_GET(self) -> None:
                data = plane.files.get(self.path)
                if data is None:
                    self._send(404, b'{"detail": "not found"}', "application/json")
                else:
                    self._send(200, data, "application/octet-stream")

            def _send(self, status: int, data: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler)

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path == "/api/agents/heartbeat":
            self.heartbeats.append(body)
            self.events.append(f"heartbeat {body['version']}")
            return 200, {"ok": True, "jobs": list(self.jobs), "heartbeat_interval_s": 0.2}
        if path == "/api/agents/jobs/complete":
            self.completions.append(body)
            self.events.append(f"complete {body['job_id']}")
            if self.fail_completions > 0:
                self.fail_completions -= 1
                return 503, {"detail": "database is busy"}
            self.jobs = [job for job in self.jobs if job["id"] != body["job_id"]]
            return 200, {"ok": True, "state": body["state"]}
        return 404, {"detail": "not found"}

    def accepted(self) -> dict[int, dict[str, Any]]:
        """The last completion body per job id (the retries carry the same body)."""
        with self.lock:
            return {body["job_id"]: body for body in self.completions}
