"""Shared by the automatic renewal's tests: an in-process app whose renewal loop runs every
`every_s`, members that report certificates through real heartbeats, and job lookups."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from serverctl.app import create_app
from serverctl.config import Settings
from serverctl.db.migrate import upgrade
from serverctl.db.models import Job
from serverctl.domain.principal import SYSTEM
from serverctl.state import AppState
from support.standin_agent import StandInAgent

CERTS = "/etc/haproxy/certs"


@dataclass
class Env:
    """What tests/conftest.py's `app_env` gives, with the renewal period chosen."""

    state: AppState
    client: TestClient
    token: str


def app_env_with(tmp_path: Path, every_s: float) -> Iterator[Env]:
    settings = Settings(
        data_dir=tmp_path / "var", public_url="https://cp.example.net", tls_renew_check_s=every_s
    )
    state = AppState.build(settings)
    upgrade(state.db.engine)
    _, token = state.operators.create_token(SYSTEM, "tests", "admin")
    with TestClient(create_app(settings, state)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield Env(state, client, token)
    state.db.dispose()


def stand_in(world: Any, member_id: int, secret: str, hostname: str, ip: str) -> StandInAgent:
    client = TestClient(world.env.client.app, client=(ip, 50000))
    return StandInAgent(client, secret, hostname, ip, member_id=member_id)


def add_member(world: Any, hostname: str, ip: str) -> StandInAgent:
    made = world.api.post(
        f"/api/pools/{world.pool_id}/members", json={"hostname": hostname, "allowed_ips": [ip]}
    ).json()
    return stand_in(world, made["id"], made["secret"], hostname, ip)


def tls_jobs(env: Any, member_id: int | None = None) -> list[Job]:
    with env.state.db.session() as s:
        query = select(Job).where(Job.type.in_(["tls.acme_issue", "tls.acme_renew_force"]))
        if member_id is not None:
            query = query.where(Job.member_id == member_id)
        rows = list(s.scalars(query.order_by(Job.id)))
        s.expunge_all()
        return rows
