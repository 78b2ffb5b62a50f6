"""Fixtures shared by every layer: the in-process app and a real `serverctl serve` process."""

from __future__ import annotations

import collections.abc
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serverctl.app import create_app
from serverctl.config import Settings
from serverctl.db.migrate import upgrade
from serverctl.domain.principal import SYSTEM
from serverctl.state import AppState
from support.pebble import Pebble
from support.postgres import Postgres
from support.powerdns import PowerDNS
from support.server import ServerProcess, start_server, stop_process
from support.smtp import SmtpServer


@dataclass
class InProcess:
    state: AppState
    client: TestClient
    token: str

    def as_role(self, role: str) -> dict[str, str]:
        _, token = self.state.operators.create_token(SYSTEM, f"{role}-token", role)
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
def postgres_server() -> collections.abc.Iterator[Postgres]:
    """One real PostgreSQL server for the session; each test takes a database of its own."""
    with Postgres() as pg:
        yield pg


def on_postgresql() -> bool:
    """`make test`'s second pass: SERVERCTL_TEST_DATABASE=postgresql."""
    return os.environ.get("SERVERCTL_TEST_DATABASE") == "postgresql"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On PostgreSQL only the tests whose control plane takes its database from the
    `database_url` fixture run (through `app_env` or `server`); the rest ran in the first pass."""
    if not on_postgresql():
        return
    chosen = [item for item in items if "database_url" in getattr(item, "fixturenames", ())]
    config.hook.pytest_deselected(items=[item for item in items if item not in chosen])
    items[:] = chosen


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> collections.abc.Iterator[str | None]:
    """None (SQLite under the data directory) unless the test runs on PostgreSQL: then a
    database of its own. It is not dropped after the test: a DNS verification thread of the
    test's app may still be writing to it (dropping it made that thread's connection fail and
    leak into a later test); the whole cluster goes at the end of the session."""
    if not on_postgresql():
        yield None
        return
    pg: Postgres = request.getfixturevalue("postgres_server")
    yield pg.create_database()


@pytest.fixture
def state(tmp_path: Path) -> collections.abc.Iterator[AppState]:
    """The control plane's services on a fresh SQLite database, without the app and its loops:
    monitor, delivery and flush rounds run when the test calls them."""
    built = AppState.build(Settings(data_dir=tmp_path / "var"))
    upgrade(built.db.engine)
    yield built
    built.db.dispose()


@pytest.fixture
def app_env(tmp_path: Path, database_url: str | None) -> collections.abc.Iterator[InProcess]:
    settings = Settings(
        data_dir=tmp_path / "var", public_url="https://cp.example.net", database_url=database_url
    )
    state = AppState.build(settings)
    upgrade(state.db.engine)
    _, token = state.operators.create_token(SYSTEM, "tests", "admin")
    with TestClient(create_app(settings, state)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield InProcess(state, client, token)
    state.db.dispose()


@pytest.fixture
def server(tmp_path: Path, database_url: str | None) -> collections.abc.Iterator[ServerProcess]:
    srv = start_server(
        tmp_path, env={"SERVERCTL_DATABASE_URL": database_url} if database_url else None
    )
    yield srv
    stop_process(srv.process)


@pytest.fixture
def smtp_server() -> collections.abc.Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1; `.settings()` is the body for
    PUT /api/settings/smtp, `.wait_for(n)` the first n messages it took."""
    with SmtpServer() as smtp:
        yield smtp


@pytest.fixture
def pdns(tmp_path: Path) -> collections.abc.Iterator[PowerDNS]:
    """A real PowerDNS authoritative server with the zone `demo.example` (support.powerdns)."""
    with PowerDNS(tmp_path / "pdns") as server:
        yield server


@pytest.fixture
def pebble(tmp_path: Path, pdns: PowerDNS) -> collections.abc.Iterator[Pebble]:
    """A real Pebble ACME server whose DNS-01 checks ask `pdns` (support.pebble)."""
    with Pebble(tmp_path / "pebble", pdns.nameserver) as ca:
        yield ca


@pytest.fixture
def acme_env(app_env: InProcess, pebble: Pebble, pdns: PowerDNS) -> InProcess:
    """`app_env` with ACME settings pointing at Pebble and a PowerDNS provider account (its id
    in `app_env.provider_id`)."""
    app_env.state.acme_settings.set(
        SYSTEM,
        directory_url=pebble.directory_url,
        email="ops@demo.example",
        ca_bundle=pebble.ca_bundle_pem,
    )
    account = app_env.state.dns_accounts.create(
        SYSTEM, "pdns-test", "powerdns", pdns.powerdns_config()
    )
    app_env.provider_id = account["id"]  # type: ignore[attr-defined]
    return app_env
