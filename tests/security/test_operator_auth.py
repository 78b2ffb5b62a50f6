"""Operators' credentials and roles on every route, found from the app rather than listed: the
REST API without a token, with a wrong or revoked one (401), with a viewer token on every route
that changes something (403), with an operator token on the admin-only ones (403); and the web
UI's form posts without the session's CSRF token (403) and from a viewer's session (403).
After every refusal the database is exactly as it was.

The app runs in the test process with its real SQLite database, so the check "nothing changed"
can read every table; the routes and dependencies are the ones `serverctl serve` runs."""

from __future__ import annotations

import collections.abc
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from serverctl.app import create_app
from serverctl.config import Settings
from serverctl.db.migrate import upgrade
from serverctl.db.models import Base
from serverctl.domain.principal import SYSTEM
from serverctl.loops import flush
from serverctl.state import AppState
from support.route_walk import (
    FormRoute,
    Operation,
    api_operations,
    fill_path,
    form_routes,
    listing_app,
    minimal_body,
)
from support.standin_agent import StandInAgent

MEMBER_IP = "127.0.0.2"
# Readable by operators and admins only, although they change nothing (docs/api.md).
OPERATOR_READS = {
    "get /api/dns-providers/{provider_id}/zones",
    "get /api/backups/{snapshot_id}/archive",
}
# Admin only (docs/api.md): users, tokens, the audit log, DNS provider accounts and the
# control plane's own settings.
ADMIN_ONLY = {
    "get /api/users",
    "post /api/users",
    "delete /api/users/{user_id}",
    "get /api/tokens",
    "post /api/tokens",
    "delete /api/tokens/{token_id}",
    "get /api/audit",
    "post /api/dns-providers",
    "delete /api/dns-providers/{provider_id}",
    "put /api/settings/smtp",
    "put /api/settings/acme",
    "put /api/settings/backup-store",
    "post /api/settings/backup-store/test",
}
# Form fields the pages check before they ask the rules (and so before the role is checked):
# values that pass, so that what a viewer meets is the role. "{name}" is one of the seeded ids.
FORM_VALUES = {
    "name": "probe-name",
    "role": "viewer",
    "hostname": "probe-host",
    "allowed_ips": "192.0.2.1",
    "delay_s": "30",
    "job_type": "haproxy.reload",
    "cron": "0 3 * * *",
    "provider_id": "{provider_id}",
    "zone": "example.com",
    "label": "lb",
    "target_member_id": "{standby_id}",
    "snapshot_id": "{snapshot_id}",
    "member_id": "{standby_id}",
}
# Forms read as a whole by their page (no declared fields), with what each needs.
WHOLE_FORMS = {
    "/settings/providers": {
        "name": "cf-2",
        "kind": "cloudflare",
        "cfg_api_token": "cf-token-abcdef",
        "cfg_account_id": "0123456789abcdef0123456789abcdef",
    },
    "/settings/backup-store": {"kind": "local"},
}


@dataclass
class World:
    state: AppState
    client: TestClient
    schema: dict[str, Any]
    ids: dict[str, Any]
    tokens: dict[str, str]  # role -> API token; "revoked" -> a revoked admin token

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table: what "nothing changed" compares."""
        with self.state.db.session() as s:
            return {
                table.name: sorted((tuple(row) for row in s.execute(select(table))), key=repr)
                for table in Base.metadata.sorted_tables
            }


def _seed(client: TestClient, state: AppState) -> dict[str, Any]:
    """One of everything a path can name, so every route acts on a real object."""
    pool = client.post("/api/pools", json={"name": "authz"}).json()
    base = f"/api/pools/{pool['id']}"
    members = [
        client.post(f"{base}/members", json={"hostname": name, "allowed_ips": [MEMBER_IP]}).json()
        for name in ("edge-1", "edge-2")
    ]
    member, standby = members
    agent = StandInAgent(client, member["secret"], member["hostname"], MEMBER_IP)
    # A completed backup of the active member (disaster recovery restores it onto the standby)
    # and a queued job.
    assert client.post(f"{base}/members/{member['id']}/backups").status_code == 202
    snapshot_id = agent.back_up()
    job = client.post(f"{base}/members/{member['id']}/jobs", json={"type": "haproxy.reload"})
    assert job.status_code == 202, job.text
    schedule = client.post(
        f"{base}/schedules", json={"job_type": "haproxy.reload", "cron": "0 3 * * *"}
    ).json()
    recipe = client.get(f"{base}/members/{member['id']}/recipes").json()["items"][0]
    provider = client.post(
        "/api/dns-providers",
        json={
            "name": "cf",
            "kind": "cloudflare",
            "config": {
                "api_token": "cf-token-0123456789",
                "account_id": "0123456789abcdef0123456789abcdef",
                "api_base": "http://127.0.0.1:9/client/v4",
            },
        },
    )
    assert provider.status_code == 201, provider.text
    # The seed's heartbeats are the only thing the background loops would write later: the
    # heartbeat-lost alert after a minute (a slow run takes that long) and the batched last-seen
    # times. Both are settled here, so "nothing changed" is about the request alone.
    quiet = {"alerts": {"member.heartbeat_lost": {"enabled": False}}}
    for one in members:
        answer = client.put(f"{base}/members/{one['id']}/alerts", json=quiet)
        assert answer.status_code == 200, answer.text
    flush.flush_once(state.db, state.live, include_seen=True)
    user, _ = state.operators.create_user(SYSTEM, "someone", "viewer")
    token, _ = state.operators.create_token(SYSTEM, "someone-token", "viewer")
    return {
        "pool_id": pool["id"],
        "member_id": member["id"],
        "job_id": job.json()["job_id"],
        "snapshot_id": snapshot_id,
        "standby_id": standby["id"],
        "schedule_id": schedule["id"],
        "recipe_id": recipe["id"],
        "provider_id": provider.json()["id"],
        "user_id": user["id"],
        "token_id": token["id"],
        "action": "disable",
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[World]:
    data_dir: Path = tmp_path_factory.mktemp("cp")
    settings = Settings(data_dir=data_dir / "var", public_url="https://cp.example.net")
    state = AppState.build(settings)
    upgrade(state.db.engine)
    tokens = {
        role: state.operators.create_token(SYSTEM, f"{role}-token", role)[1]
        for role in ("viewer", "operator", "admin")
    }
    revoked, tokens["revoked"] = state.operators.create_token(SYSTEM, "gone", "admin")
    state.operators.revoke_token(SYSTEM, revoked["id"])
    app = create_app(settings, state)
    with TestClient(app, client=(MEMBER_IP, 50000)) as client:
        client.headers["Authorization"] = f"Bearer {tokens['admin']}"
        ids = _seed(client, state)
        client.headers.pop("Authorization")
        world = World(state, client, app.openapi(), ids, tokens)
        _settle(world)
        yield world
    state.db.dispose()


def _settle(world: World) -> None:
    """Wait out a flush the heartbeat writer (a round a second) may still have in flight."""
    rows = world.rows()
    for _ in range(20):
        time.sleep(1.2)
        again = world.rows()
        if again == rows:
            return
        rows = again
    raise AssertionError("the database kept changing after the seed")


def _key(op: Operation) -> str:
    return f"{op.method} {op.path}"


# The routes, found once at collection.
_APP = listing_app()
OPERATIONS = api_operations(_APP.openapi())
FORMS = [route for route in form_routes(_APP) if route.path != "/login"]


def _call(world: World, op: Operation, headers: dict[str, str]) -> Any:
    body = minimal_body(world.schema, op)
    return world.client.request(
        op.method.upper(),
        fill_path(op.path, world.ids),
        json=body,
        headers=headers,
    )


def _refused_without_change(world: World, op: Operation, headers: dict[str, str]) -> Any:
    before = world.rows()
    answer = _call(world, op, headers)
    assert world.rows() == before, f"{op} changed the database while refusing"
    return answer


# -- REST: credentials ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "credential",
    ["none", "malformed", "wrong", "revoked", "agent-style"],
)
@pytest.mark.parametrize("op", OPERATIONS, ids=str)
def test_rest_without_a_valid_token_is_401(world: World, op: Operation, credential: str) -> None:
    headers = {
        "none": {},
        "malformed": {"Authorization": f"Token {world.tokens['admin']}"},
        "wrong": {"Authorization": "Bearer sct_" + "x" * 40},
        "revoked": {"Authorization": f"Bearer {world.tokens['revoked']}"},
        # An agent's enrolment secret is no operator token.
        "agent-style": {"Authorization": "Bearer " + "k" * 48},
    }[credential]
    answer = _refused_without_change(world, op, headers)
    assert answer.status_code == 401, answer.text
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json()["detail"]


# -- REST: roles ----------------------------------------------------------------------------------


VIEWER_REFUSED = [op for op in OPERATIONS if op.mutating or _key(op) in OPERATOR_READS]


@pytest.mark.parametrize("op", VIEWER_REFUSED, ids=str)
def test_a_viewer_token_cannot_change_anything(world: World, op: Operation) -> None:
    headers = {"Authorization": f"Bearer {world.tokens['viewer']}"}
    answer = _refused_without_change(world, op, headers)
    assert answer.status_code == 403, answer.text
    assert "has the viewer role" in answer.json()["detail"]


@pytest.mark.parametrize("op", [op for op in OPERATIONS if _key(op) in ADMIN_ONLY], ids=str)
def test_an_operator_token_cannot_do_what_only_admins_may(world: World, op: Operation) -> None:
    headers = {"Authorization": f"Bearer {world.tokens['operator']}"}
    answer = _refused_without_change(world, op, headers)
    assert answer.status_code == 403, answer.text
    assert "has the operator role" in answer.json()["detail"]


def test_the_role_lists_name_only_routes_that_exist() -> None:
    known = {_key(op) for op in OPERATIONS}
    assert (OPERATOR_READS | ADMIN_ONLY) <= known


# -- web forms: CSRF and roles --------------------------------------------------------------------


def _session(world: World, name: str, role: str) -> tuple[str, str]:
    """A new web session of `role`: its cookie value and its CSRF token."""
    _, password = world.state.operators.create_user(SYSTEM, name, role)
    login = world.state.operators.login(name, password, MEMBER_IP)
    return login.session_id, login.csrf_token


@pytest.fixture(scope="module")
def sessions(world: World) -> dict[str, tuple[str, str]]:
    return {
        "admin": _session(world, "web-admin", "admin"),
        "other-admin": _session(world, "web-admin-2", "admin"),
        "viewer": _session(world, "web-viewer", "viewer"),
    }


def _form(world: World, route: FormRoute) -> dict[str, str]:
    """Known fields filled in with values that pass, other required ones with "x"."""
    data = dict(WHOLE_FORMS.get(route.path, {}))
    for name, required in route.fields.items():
        if name in FORM_VALUES:
            data[name] = FORM_VALUES[name].format(**world.ids)
        elif required:
            data[name] = "x"
    return data


def _post_form(world: World, route: FormRoute, session: str | None, csrf: str | None) -> Any:
    """Post the form as the UI does (connection tests through HTMX); check nothing changed."""
    headers = {"HX-Request": "true"} if route.path.endswith("/test") else {}
    data = _form(world, route)
    if csrf is not None:
        data["csrf_token"] = csrf
    before = world.rows()
    world.client.cookies.clear()
    if session is not None:
        world.client.cookies.set("serverctl_session", session)
    try:
        answer = world.client.post(
            fill_path(route.path, world.ids), data=data, headers=headers, follow_redirects=False
        )
    finally:
        world.client.cookies.clear()
    assert world.rows() == before, f"{route} changed the database while refusing"
    return answer


@pytest.mark.parametrize("csrf", ["missing", "wrong", "another session's"])
@pytest.mark.parametrize("route", FORMS, ids=str)
def test_a_form_post_without_the_sessions_csrf_token_is_403(world, sessions, route, csrf) -> None:
    session, own = sessions["admin"]
    sent = {
        "missing": None,
        "wrong": own[:-4] + "abcd",
        "another session's": sessions["other-admin"][1],
    }[csrf]
    answer = _post_form(world, route, session, sent)
    assert answer.status_code == 403, answer.text
    assert "CSRF token is missing or stale" in answer.text


@pytest.mark.parametrize("route", [r for r in FORMS if r.path != "/logout"], ids=str)
def test_a_viewer_session_cannot_post_an_operator_form(world, sessions, route) -> None:
    session, csrf = sessions["viewer"]
    answer = _post_form(world, route, session, csrf)
    if route.path.endswith("/test") and answer.status_code == 200:
        # A connection test answers an HTMX fragment that shows its result, refusals included
        # (htmx swaps in 2xx answers only).
        assert "has the viewer role" in answer.text
    else:
        assert answer.status_code == 403, answer.text


def test_a_form_post_without_a_session_goes_to_the_login_page(world) -> None:
    route = next(r for r in FORMS if r.path == "/pools")
    answer = _post_form(world, route, None, "whatever")
    assert answer.status_code == 303
    assert re.match(r"/login\?next=", answer.headers["location"])
