"""A host for the agent's job tests: a private BALCTL_ROOT, its haproxy.cfg, real haproxy
processes recorded from the pidfile (so teardown can kill every one), and a job runner."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from balctl.config import AgentConfig
from balctl.jobs.model import Completion, Job
from balctl.jobs.runner import JobRunner
from balctl.paths import HostPaths
from balctl.proc import process_alive
from balctl.transport import ControlPlaneClient
from support.util import free_port

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
KEY = "k" * 40 + "JOBS"

BASE = """\
global
{global_lines}
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s

frontend fe_web
    bind 127.0.0.1:{web}
    http-request return status 200 content-type text/plain string "served\\n"

backend be_app
    server app1 127.0.0.1:{dead} weight 20
    server app2 127.0.0.1:{dead}
"""


class Host:
    """One agent host: its root, its haproxy config and pidfile, and the job runner."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths = HostPaths.under(str(root))
        self.pidfile = root / "run/haproxy.pid"
        self.web = free_port()
        self.dead = free_port()
        self.started: set[int] = set()
        self.cfg = AgentConfig(
            server="http://127.0.0.1:9",
            key=KEY,
            hostname="edge-1",
            public_ip="203.0.113.7",
            haproxy_pidfile=str(self.pidfile),
        )
        self.client = ControlPlaneClient(self.cfg.server, KEY)
        self.runner = JobRunner(self.cfg, self.client, self.paths)
        self._next_id = 1

    @property
    def socket(self) -> Path:
        return self.paths.admin_socket

    def config_text(self, admin_socket: bool = True) -> str:
        lines = ""
        if admin_socket:
            lines = (
                f"    stats socket {self.socket} mode 600 level admin expose-fd listeners\n"
                "    stats timeout 2m\n"
            )
        return BASE.format(global_lines=lines, web=self.web, dead=self.dead)

    def write_config(self, text: str) -> None:
        self.paths.haproxy_cfg.parent.mkdir(parents=True, exist_ok=True)
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        self.paths.haproxy_cfg.write_text(text)

    def start(self) -> int:
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [HAPROXY, "-D", "-p", str(self.pidfile), "-f", str(self.paths.haproxy_cfg)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        pid = self.pid()
        assert pid is not None
        return pid

    def pid(self) -> int | None:
        try:
            words = self.pidfile.read_text().split()
        except OSError:
            return None
        pids = [int(word) for word in words if word.isdigit()]
        self.started.update(pids)
        return pids[0] if pids else None

    def job(self, kind: str, params: Any = None, timeout_s: int | None = 120) -> Completion:
        job = Job(self._next_id, kind, {} if params is None else params, timeout_s)
        self._next_id += 1
        try:
            return self.runner.execute(job)
        finally:
            self.pid()  # remember whatever haproxy the job started

    def ask(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_status(self, backend: str, server: str) -> str:
        lines = self.ask("show stat").splitlines()
        header = lines[0][2:].split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == backend and row.get("svname") == server:
                return row["status"]
        raise AssertionError(f"{backend}/{server} not in show stat")

    def get(self, path: str = "/") -> bytes:
        with socket.create_connection(("127.0.0.1", self.web), timeout=5) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
            return _read_all(sock)

    def kill_all(self) -> None:
        self.pid()
        for pid in self.started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 10
        while any(process_alive(pid) for pid in self.started) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.client.close()


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)
