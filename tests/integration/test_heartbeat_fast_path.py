"""The heartbeat's fast path (api/heartbeat_fast_path.py) against the documented route it
stands in for: every refusal the route gives, the fast path gives the same (status, message,
headers), and an accepted heartbeat does what the route's does (live state, counters, the
failover wake, the job claim, the DDNS follow). In process, with the app's SQLite database and
no background loops: the tests decide when things happen.

Loopback addresses stand in for hosts: member A calls from 127.0.0.2, member B from 127.0.0.4,
127.0.0.3 is a stranger and 127.0.0.9 the one trusted reverse proxy."""

from __future__ import annotations

import asyncio
import collections.abc
import json
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serverctl.api import agents
from serverctl.api import heartbeat_fast_path as fast_path
from serverctl.app import create_app
from serverctl.config import Settings
from serverctl.db.migrate import upgrade
from serverctl.domain.heartbeat import MAX_BODY_BYTES
from serverctl.domain.jobs import Enqueue
from serverctl.domain.principal import SYSTEM
from serverctl.state import AppState

A_IP, B_IP, STRANGER, PROXY = "127.0.0.2", "127.0.0.4", "127.0.0.3", "127.0.0.9"
PATH = "/api/agents/heartbeat"
UP = {"monitored": True, "active": True, "source": "systemd"}


@dataclass
class Plane:
    state: AppState
    fast: FastAPI
    route_only: FastAPI
    pool_id: int
    a_id: int
    a_secret: str
    a_old_secret: str
    b_secret: str

    def post(self, app: FastAPI, peer: str, **kwargs: Any) -> Any:
        return TestClient(app, client=(peer, 40000)).post(PATH, **kwargs)


@pytest.fixture
def plane(tmp_path) -> collections.abc.Iterator[Plane]:
    settings = Settings(data_dir=tmp_path / "var", trusted_proxies=[PROXY])
    state = AppState.build(settings)
    upgrade(state.db.engine)
    pool = state.pools.create_pool(SYSTEM, "edge", "haproxy")
    a = state.pools.add_member(SYSTEM, pool["id"], "edge-a", [A_IP])
    b = state.pools.add_member(SYSTEM, pool["id"], "edge-b", [B_IP])
    rotated = state.pools.rotate_secret(SYSTEM, pool["id"], a.member["id"])
    # The documented route alone, as FastAPI serves it without the fast path in front.
    route_only = FastAPI()
    route_only.state.serverctl = state
    route_only.include_router(agents.router)
    yield Plane(
        state,
        create_app(settings, state),
        route_only,
        pool["id"],
        a.member["id"],
        rotated.secret,
        a.secret,
        b.secret,
    )
    state.db.dispose()


def _body(hostname: str = "edge-a", ip: str = A_IP, **changes: Any) -> bytes:
    return json.dumps(
        {"ip": ip, "hostname": hostname, "version": "0.6.0", "haproxy": UP, **changes}
    ).encode()


def _chunks(total: int) -> collections.abc.Iterator[bytes]:
    """A body without Content-Length (chunked), so only reading it shows it is too big."""
    for _ in range(total // 65536 + 1):
        yield b" " * 65536


# (case, peer, who, extra headers, body) -> (status, fragment of the message)
CASES: list[tuple[str, str, str | None, dict[str, str], Any, int, str]] = [
    ("accepted", A_IP, "a", {}, _body(), 200, ""),
    ("no bearer", A_IP, None, {}, _body(), 401, "missing bearer enrolment secret"),
    ("not bearer", A_IP, "basic", {}, _body(), 401, "missing bearer enrolment secret"),
    ("unknown secret", A_IP, "unknown", {}, _body(), 401, "unknown or revoked"),
    ("revoked secret", A_IP, "a-old", {}, _body(), 401, "enrolment secret was revoked"),
    ("stranger", STRANGER, "a", {}, _body(), 403, "source IP 127.0.0.3 is not allowed"),
    ("other member's address", B_IP, "a", {}, _body(), 403, "source IP 127.0.0.4"),
    (
        "forged X-Forwarded-For",
        STRANGER,
        "a",
        {"X-Forwarded-For": A_IP},
        _body(),
        403,
        "source IP 127.0.0.3",
    ),
    ("forged CF-Connecting-IP", B_IP, "a", {"CF-Connecting-IP": A_IP}, _body(), 403, B_IP),
    ("through the trusted proxy", PROXY, "a", {"X-Forwarded-For": A_IP}, _body(), 200, ""),
    (
        "stranger through the trusted proxy",
        PROXY,
        "a",
        {"CF-Connecting-IP": STRANGER},
        _body(),
        403,
        "source IP 127.0.0.3",
    ),
    ("too large", A_IP, "a", {}, b" " * (MAX_BODY_BYTES + 1), 413, "over the limit"),
    ("too large, chunked", A_IP, "a", {}, "chunked", 413, "over the limit"),
    ("not JSON", A_IP, "a", {}, b"{not json", 400, "body is not valid JSON"),
    ("wrong type", A_IP, "a", {}, _body(haproxy={"monitored": "yes"}), 422, "haproxy.monitored"),
    ("not IPv4", A_IP, "a", {}, _body(ip="2001:db8::1"), 422, "not an IPv4 address"),
    ("wrong hostname", A_IP, "a", {}, _body("edge-b"), 401, "does not match the enrolled"),
]


def _send(plane: Plane, app: FastAPI, peer: str, who: str | None, headers: dict[str, str], body):
    secrets = {"a": plane.a_secret, "a-old": plane.a_old_secret, "unknown": "x" * 48}
    sent = dict(headers)
    if who == "basic":
        sent["Authorization"] = "Basic ZWRnZTpzZWNyZXQ="
    elif who is not None:
        sent["Authorization"] = f"Bearer {secrets[who]}"
    content = _chunks(MAX_BODY_BYTES) if body == "chunked" else body
    return plane.post(app, peer, content=content, headers=sent)


@pytest.mark.parametrize(
    ("peer", "who", "headers", "body", "status", "fragment"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_fast_path_answers_as_the_documented_route(
    plane, peer, who, headers, body, status, fragment
):
    fast = _send(plane, plane.fast, peer, who, headers, body)
    routed = _send(plane, plane.route_only, peer, who, headers, body)
    assert fast.status_code == routed.status_code == status, fast.text
    assert fast.json() == routed.json()
    if status == 200:
        assert fast.json() == {"ok": True, "jobs": [], "heartbeat_interval_s": 1.0}
    else:
        assert fragment in fast.json()["detail"]
    assert fast.headers["content-type"] == "application/json"
    for name in ("www-authenticate", "connection"):
        assert fast.headers.get(name) == routed.headers.get(name), name
    assert (fast.headers.get("www-authenticate") == "Bearer") == (status == 401)
    if status == 413:
        assert fast.headers["connection"] == "close"


def test_refusals_are_counted_by_reason_and_shown_on_the_member_card(plane):
    metrics, member = plane.state.metrics, plane.state.live.members[plane.a_id]
    _send(plane, plane.fast, STRANGER, "a", {}, _body())
    _send(plane, plane.fast, A_IP, "a", {}, _body("edge-b"))
    _send(plane, plane.fast, A_IP, "a", {}, b"[")
    _send(plane, plane.fast, A_IP, "unknown", {}, _body())
    assert dict(metrics.heartbeats_rejected) == {
        "source_ip": 1,
        "hostname": 1,
        "payload": 1,
        "token": 1,
    }
    assert metrics.heartbeats_received == 0
    assert member.last_rejection is not None and member.last_rejection.status == 400
    assert member.last_seen is None
    # Each refusal tied to the member waits for the flusher, which writes it to its card.
    assert [p.member_id for p in plane.state.live.take_rejections()] == [plane.a_id] * 3


def test_accepted_heartbeat_lands_in_the_live_state(plane, monkeypatch):
    taken: list[int] = []

    async def counted(state, request):
        taken.append(1)
        return await agents.answer_heartbeat(state, request)

    monkeypatch.setattr(fast_path, "answer_heartbeat", counted)
    assert _send(plane, plane.fast, A_IP, "a", {}, _body()).status_code == 200
    assert taken == [1]  # the fast path took it, not the route behind it
    member = plane.state.live.members[plane.a_id]
    assert plane.state.metrics.heartbeats_received == 1
    assert member.last_seen is not None and member.ip == A_IP and member.version == "0.6.0"
    assert member.haproxy == UP and member.changed


def test_haproxy_going_down_wakes_the_failover_evaluator(plane):
    woken: list[int] = []
    plane.state.wake_evaluator = lambda: woken.append(1)
    _send(plane, plane.fast, A_IP, "a", {}, _body())
    before = len(woken)
    _send(plane, plane.fast, A_IP, "a", {}, _body())
    assert len(woken) == before  # nothing changed
    _send(plane, plane.fast, A_IP, "a", {}, _body(haproxy={**UP, "active": False}))
    assert len(woken) == before + 1


def test_a_queued_job_is_handed_out_on_the_next_heartbeat(plane):
    job = plane.state.jobs.enqueue(
        SYSTEM, Enqueue(plane.pool_id, plane.a_id, "haproxy.validate", {})
    )
    answer = _send(plane, plane.fast, A_IP, "a", {}, _body()).json()
    assert [j["id"] for j in answer["jobs"]] == [job["id"]]
    assert (
        _send(plane, plane.fast, A_IP, "a", {}, _body(jobs_running=[job["id"]])).json()["jobs"]
        == []
    )


def test_a_ddns_member_calling_from_its_new_address_is_followed(plane):
    _send(plane, plane.fast, A_IP, "a", {}, _body())
    plane.state.live.set_ddns(plane.pool_id, True)
    moved = "127.0.0.5"
    # Only when the body declares the very address it calls from.
    assert _send(plane, plane.fast, moved, "a", {}, _body()).status_code == 403
    assert _send(plane, plane.fast, moved, "a", {}, _body(ip=moved)).status_code == 200
    assert plane.state.live.members[plane.a_id].allows(moved)
    member = plane.state.pools.get_member(SYSTEM, plane.pool_id, plane.a_id)
    assert moved in member["allowed_ips"] and A_IP not in member["allowed_ips"]


def test_other_methods_and_paths_go_to_the_app(plane):
    client = TestClient(plane.fast, client=(A_IP, 40000))
    assert client.get(PATH).status_code == 405
    schema = client.get("/openapi.json").json()
    assert "post" in schema["paths"][PATH]


def test_an_agent_hanging_up_mid_body_gets_no_answer_and_no_error(plane):
    async def not_reached(scope, receive, send):
        raise AssertionError("the heartbeat must not reach the app")

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": PATH,
        "client": (A_IP, 40000),
        "headers": [(b"authorization", f"Bearer {plane.a_secret}".encode())],
    }
    asyncio.run(fast_path.HeartbeatFastPath(not_reached, plane.state)(scope, receive, send))
    assert sent == []
