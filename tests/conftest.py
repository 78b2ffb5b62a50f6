"""Fixtures shared by every layer: the in-process app and a real `serverctl serve` process."""

from __future__ import annotations

import collections.abc
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from serverctl.app import create_app
from serverctl.config import Settings
from serverctl.db.migrate import upgrade
from serverctl.domain.principal import SYSTEM
from serverctl.state import AppState

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class InProcess:
    state: AppState
    client: TestClient
    token: str

    def as_role(self, role: str) -> dict[str, str]:
        _, token = self.state.operators.create_token(SYSTEM, f"{role}-token", role)
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def app_env(tmp_path: Path) -> collections.abc.Iterator[InProcess]:
    settings = Settings(data_dir=tmp_path / "var", public_url="https://cp.example.net")
    state = AppState.build(settings)
    upgrade(state.db.engine)
    _, token = state.operators.create_token(SYSTEM, "tests", "admin")
    with TestClient(create_app(settings, state)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield InProcess(state, client, token)
    state.db.dispose()


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

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=10
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def serverctl_cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SERVERCTL_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    return subprocess.run(
        [str(VENV_BIN / "serverctl"), *args], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )


def wait_until(predicate: collections.abc.Callable[[], object], timeout: float,
               interval: float = 0.1, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def start_server(tmp_path: Path, *extra_args: str, env: dict[str, str] | None = None,
                 scheme: str = "http") -> ServerProcess:
    data_dir = tmp_path / "cp-data"
    port = free_port()
    log_path = tmp_path / "serverctl.log"
    full_env = {**os.environ, "SERVERCTL_DATA_DIR": str(data_dir), **(env or {})}
    log_file = log_path.open("w")
    process = subprocess.Popen(
        [str(VENV_BIN / "serverctl"), "serve", "--host", "127.0.0.1", "--port", str(port),
         *extra_args],
        env=full_env, stdout=log_file, stderr=subprocess.STDOUT, text=True,
    )
    log_file.close()
    url = f"{scheme}://127.0.0.1:{port}"
    verify: str | bool = env.get("SSL_CERT_FILE", True) if env else True

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"serverctl serve exited:\n{log_path.read_text()}")
        try:
            return httpx.get(f"{url}/healthz", timeout=1, verify=verify).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, 30, what="serverctl serve to answer /healthz")
    password_line = next(
        line for line in log_path.read_text().splitlines() if "with password" in line
    )
    password = password_line.rsplit(" ", 1)[-1].strip()
    created = serverctl_cli("tokens", "create", "--name", "tests", data_dir=data_dir)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    return ServerProcess(url, data_dir, token, password, process, log_path, full_env)


def stop_process(process: subprocess.Popen[str], timeout: float = 10) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


@pytest.fixture
def server(tmp_path: Path) -> collections.abc.Iterator[ServerProcess]:
    srv = start_server(tmp_path)
    yield srv
    stop_process(srv.process)
