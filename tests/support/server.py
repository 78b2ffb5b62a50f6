"""A real `serverctl serve` in its own process, and the `serverctl` CLI, for tests."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx

from support.util import free_port, wait_until

VENV_BIN = Path(sys.executable).parent


@dataclass
class ServerProcess:
    """A real `serverctl serve` in its own process, on a free loopback port."""

    url: str
    data_dir: Path
    token: str
    admin_password: str
    process: subprocess.Popen[str]
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    verify: ssl.SSLContext | bool = True

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=10,
            verify=self.verify,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`serverctl` on this instance: its data directory and its database."""
        return serverctl_cli(*args, data_dir=self.data_dir, env=self.extra_env)


def serverctl_cli(
    *args: str, data_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {}), "SERVERCTL_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    return subprocess.run(
        [str(VENV_BIN / "serverctl"), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start_server(
    tmp_path: Path,
    *extra_args: str,
    env: dict[str, str] | None = None,
    scheme: str = "http",
    ca_file: Path | None = None,
    data_dir: Path | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    launcher: Sequence[str] = (),
) -> ServerProcess:
    """Start `serverctl serve`; `data_dir` reuses an instance's data (a restart).

    `launcher` prefixes the command (`ip netns exec <ns>`: a control plane in a network
    namespace, listening on `host`, that namespace's address, and `port`; the namespace is
    fresh, so any port is free there). It must exec the server, so the process is the server."""
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
    tmp_path.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir or tmp_path / "cp-data"
    port = port or free_port(host)
    log_path = tmp_path / "serverctl.log"
    full_env = {**os.environ, "SERVERCTL_DATA_DIR": str(data_dir), **(env or {})}
    log_file = log_path.open("w")
    process = subprocess.Popen(
        [
            *launcher,
            str(VENV_BIN / "serverctl"),
            "serve",
            "--host",
            host,
            "--port",
            str(port),
            *extra_args,
        ],
        env=full_env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log_file.close()
    url = f"{scheme}://{host}:{port}"

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"serverctl serve exited:\n{log_path.read_text()}")
        try:
            return httpx.get(f"{url}/healthz", timeout=1, verify=verify).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, 30, what="serverctl serve to answer /healthz")
    # Printed on the first start of a data directory only.
    password_lines = [line for line in log_path.read_text().splitlines() if "with password" in line]
    password = password_lines[0].rsplit(" ", 1)[-1].strip() if password_lines else ""
    created = serverctl_cli("tokens", "create", "--name", "tests", data_dir=data_dir, env=env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    return ServerProcess(url, data_dir, token, password, process, log_path, full_env, verify)


def stop_process(process: subprocess.Popen[str], timeout: float = 10) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
