"""The real agent zipapp, downloaded from the control plane and run under a temporary root."""

from __future__ import annotations

import hashlib
import os
import signal
import ssl
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx


def download_zipapp(server_url: str, dest: Path, verify: ssl.SSLContext | bool = True) -> Path:
    data = httpx.get(f"{server_url}/agent/balctl.pyz", timeout=10, verify=verify).content
    listed = httpx.get(f"{server_url}/agent/balctl.pyz.sha256", timeout=10, verify=verify).text
    assert listed.split()[0] == hashlib.sha256(data).hexdigest()
    dest.write_bytes(data)
    return dest


@dataclass
class Agent:
    pyz: Path
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = None
    # An argv prefix for every run: `ip netns exec <ns>` puts the agent on a namespace's host.
    launcher: list[str] = field(default_factory=list)

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "BALCTL_ROOT": str(self.root),
            **{"BALCTL_LOG_LEVEL": "INFO"},
            **self.env,
        }

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.launcher, sys.executable, str(self.pyz), *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def enrol(
        self, server: str, key: str, hostname: str, *extra: str
    ) -> subprocess.CompletedProcess[str]:
        return self.cli("--enrol", "--server", server, "--key", key, "--hostname", hostname, *extra)

    @property
    def agent_env(self) -> Path:
        return self.root / "etc/balctl/agent.env"

    @property
    def log_path(self) -> Path:
        return self.root / "agent-test.log"

    def start(self) -> None:
        log = self.log_path.open("a")
        self.process = subprocess.Popen(
            [*self.launcher, sys.executable, str(self.pyz), "run"],
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        log.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def stop_background_agent(root: Path) -> None:
    """Stop an agent that install.sh started in background mode (no systemd) under `root`."""
    pidfile = root / "run/balctl/balctl.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
        except (ProcessLookupError, ValueError):
            pass
