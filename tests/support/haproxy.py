"""A real haproxy process under a temporary root, with its own admin socket and pidfile."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

CONFIG = """\
global
    pidfile {pidfile}
{socket_lines}
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s

frontend web
    bind {bind}
    http-request return status 200 content-type text/plain string "served by {name}\\n"
{backends}"""

SOCKET_LINES = """\
    stats socket {socket} mode 600 level admin
    stats timeout 2m
"""


@dataclass
class HAProxy:
    name: str
    root: Path
    bind: str
    admin_socket: bool = True
    # backend name -> server names; servers point at a closed loopback port, without checks.
    backends: dict[str, list[str]] | None = None

    @property
    def config(self) -> Path:
        return self.root / "etc/haproxy/haproxy.cfg"

    @property
    def pidfile(self) -> Path:
        return self.root / "run/haproxy.pid"

    @property
    def socket(self) -> Path:
        return self.root / "run/haproxy/admin.sock"

    def write_config(self) -> None:
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        backends = ""
        for backend, servers in (self.backends or {}).items():
            backends += f"\nbackend {backend}\n" + "".join(
                f"    server {server} 127.0.0.1:9 weight 1\n" for server in servers
            )
        socket_lines = SOCKET_LINES.format(socket=self.socket) if self.admin_socket else ""
        self.config.write_text(
            CONFIG.format(
                pidfile=self.pidfile,
                socket_lines=socket_lines,
                bind=self.bind,
                name=self.name,
                backends=backends,
            )
        )

    def start(self) -> None:
        self.write_config()
        subprocess.run(
            [HAPROXY, "-D", "-f", str(self.config), "-p", str(self.pidfile)],
            check=True,
            capture_output=True,
            timeout=15,
        )
        deadline = time.monotonic() + 10
        while not self.alive():
            if time.monotonic() > deadline:
                raise AssertionError("haproxy did not start")
            time.sleep(0.05)

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def alive(self) -> bool:
        """Running and not a zombie: a killed daemon stays a zombie until init reaps it, which
        here can take a second or two, and a zombie serves nothing."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (ProcessLookupError, FileNotFoundError):
            return False
        return state not in ("Z", "X")

    def runtime(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def kill(self) -> None:
        pid = self.pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
