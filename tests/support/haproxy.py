"""A real haproxy process under a temporary root, with its own admin socket and pidfile."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
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

TLS_FRONTEND = """
frontend tls
    bind {bind} ssl crt {cert}
    http-request return status 200 content-type text/plain string "tls by {name}\\n"
"""

# A portable configuration names its host's paths and addresses through the environment, the
# way HAProxy expands "${VAR}": the same file then works on any member, as a backup restored
# onto another member needs. The agent starts HAProxy with its own environment, so it carries
# these too (Fleet passes them).
ROOT_VAR = '"${BALCTL_ROOT}'
BIND_VAR = '"${EDGE_BIND}"'
TLS_BIND_VAR = '"${EDGE_TLS_BIND}"'


@dataclass
class HAProxy:
    name: str
    root: Path
    bind: str
    admin_socket: bool = True
    # backend name -> server names; servers point at a closed loopback port, without checks.
    backends: dict[str, list[str]] | None = None
    # Paths and addresses through the environment (see ROOT_VAR): the file suits any member.
    portable: bool = False
    # host:port of an extra TLS frontend serving certs/site.pem (which the caller writes).
    tls_bind: str | None = None
    # An argv prefix for starting it: `ip netns exec <ns>` runs it on a namespace's host.
    launcher: list[str] = field(default_factory=list)

    @property
    def cert(self) -> Path:
        return self.root / "etc/haproxy/certs/site.pem"

    def env(self) -> dict[str, str]:
        """What a portable configuration reads from the environment."""
        env = {"BALCTL_ROOT": str(self.root), "EDGE_BIND": self.bind}
        if self.tls_bind:
            env["EDGE_TLS_BIND"] = self.tls_bind
        return env

    def _path(self, path: Path) -> str:
        if not self.portable:
            return str(path)
        return ROOT_VAR + "/" + str(path.relative_to(self.root)) + '"'

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
        socket_lines = (
            SOCKET_LINES.format(socket=self._path(self.socket)) if self.admin_socket else ""
        )
        if self.tls_bind:
            backends += TLS_FRONTEND.format(
                bind=TLS_BIND_VAR if self.portable else self.tls_bind,
                cert=self._path(self.cert),
                name=self.name,
            )
        self.config.write_text(
            CONFIG.format(
                pidfile=self._path(self.pidfile),
                socket_lines=socket_lines,
                bind=BIND_VAR if self.portable else self.bind,
                name=self.name,
                backends=backends,
            )
        )

    def start(self) -> None:
        # A second haproxy on the same configuration would take over the pidfile, and the first
        # would outlive the test.
        assert not self.alive(), f"haproxy {self.name} is already running"
        self.write_config()
        subprocess.run(
            [*self.launcher, HAPROXY, "-D", "-f", str(self.config), "-p", str(self.pidfile)],
            check=True,
            capture_output=True,
            timeout=15,
            env={**os.environ, **self.env()},
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
        """Kill this instance: the pidfile's process and every other haproxy started on this
        configuration file (a reload's soft-stopping predecessor, or a second start racing the
        agent's restart). Only the pidfile's would die otherwise, and the rest outlive the test."""
        pids = set(self._processes_on_config())
        pid = self.pid()
        if pid is not None:
            pids.add(pid)
        for one in pids:
            try:
                os.kill(one, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while (self.alive() or self._processes_on_config()) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _processes_on_config(self) -> list[int]:
        """Live haproxy processes whose command line names this instance's configuration."""
        config = str(self.config).encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            except OSError:
                continue
            if state in ("Z", "X") or not argv[0].endswith(b"haproxy"):
                continue
            if config in argv:
                found.append(int(entry.name))
        return found
