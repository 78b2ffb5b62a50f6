"""The agent API's checks, as a table: every endpoint an agent calls (enrol, heartbeat, job
completion, backup transfer) against every way of being the wrong caller, on a real
`serverctl serve`. Each refusal has its status, is shown on the member card when the member is
known, and changes nothing; the accepted rows prove the "nothing changed" check would see a
change.

Loopback aliases stand in for hosts (all of 127.0.0.0/8 reaches `lo`): member A calls from
127.0.0.2, member B from 127.0.0.4, 127.0.0.3 is a stranger and 127.0.0.9 the one trusted
reverse proxy. 127.0.0.1 is where the test's own API client calls from, and the address uvicorn
would trust for forwarding headers by default: forging from there must fail too."""

from __future__ import annotations

import collections.abc
import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx
import pytest

from support.server import ServerProcess, start_server, stop_process
from support.util import wait_until

A_IP, B_IP, STRANGER, PROXY, LOCALHOST = (
    "127.0.0.2",
    "127.0.0.4",
    "127.0.0.3",
    "127.0.0.9",
    "127.0.0.1",
)
BAD_HOSTNAME = "edge-zz"


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("cp"), env={"SERVERCTL_TRUSTED_PROXIES": PROXY})
    yield server
    stop_process(server.process)


@pytest.fixture(scope="module")
def api(cp: ServerProcess) -> collections.abc.Iterator[httpx.Client]:
    with cp.api() as client:
        yield client


# -- one pool of members for each case ------------------------------------------------------------

_pool_numbers = itertools.count(1)


@dataclass
class Member:
    id: int
    hostname: str
    secret: str


@dataclass
class World:
    """A pool with A (its secret rotated once), B, and C (deleted), and a backup job for A."""

    pool_id: int
    a: Member
    b: Member
    a_old_secret: str
    c_deleted: Member
    job_id: int
    # Set once A has claimed its job (completion and transfer cases).
    upload_path: str = ""

    def secret(self, whose: str) -> str:
        return {
            "a": self.a.secret,
            "a-old": self.a_old_secret,
            "b": self.b.secret,
            "c": self.c_deleted.secret,
        }[whose]

    def hostname(self, whose: str) -> str:
        return {"a": self.a.hostname, "b": self.b.hostname, "bad": BAD_HOSTNAME}[whose]


def _add_member(api: httpx.Client, pool_id: int, hostname: str, ip: str) -> Member:
    made = api.post(
        f"/api/pools/{pool_id}/members", json={"hostname": hostname, "allowed_ips": [ip]}
    )
    assert made.status_code == 201, made.text
    body = made.json()
    return Member(body["id"], hostname, body["secret"])


def make_world(api: httpx.Client, cp: ServerProcess, claim: bool) -> World:
    pool = api.post("/api/pools", json={"name": f"auth-{next(_pool_numbers)}"}).json()
    a = _add_member(api, pool["id"], "edge-a", A_IP)
    rotated = api.post(f"/api/pools/{pool['id']}/members/{a.id}/rotate-secret")
    assert rotated.status_code == 200, rotated.text
    a_old, a.secret = a.secret, rotated.json()["secret"]
    b = _add_member(api, pool["id"], "edge-b", B_IP)
    c = _add_member(api, pool["id"], "edge-c", A_IP)
    assert api.delete(f"/api/pools/{pool['id']}/members/{c.id}").status_code == 204
    queued = api.post(f"/api/pools/{pool['id']}/members/{a.id}/backups")
    assert queued.status_code == 202, queued.text
    world = World(pool["id"], a, b, a_old, c, queued.json()["job_id"])
    if claim:
        world.upload_path = _claim(cp, a, A_IP)
    return world


def _heartbeat_body(hostname: str) -> dict[str, Any]:
    return {
        "ip": A_IP,
        "hostname": hostname,
        "version": "0.1.0",
        "haproxy": {"monitored": True, "active": True, "source": "pidfile"},
    }


def _claim(cp: ServerProcess, member: Member, ip: str) -> str:
    """A legitimate heartbeat that claims the member's backup job: its upload path."""
    answer = agent_call(
        cp,
        ip,
        {"Authorization": f"Bearer {member.secret}"},
        "POST",
        "/api/agents/heartbeat",
        json=_heartbeat_body(member.hostname),
    )
    assert answer.status_code == 200, answer.text
    (job,) = answer.json()["jobs"]
    path: str = job["params"]["upload"]["path"]
    return path


def agent_call(
    cp: ServerProcess, source: str, headers: dict[str, str], method: str, path: str, **kw: Any
) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, base_url=cp.url, timeout=30) as client:
        return client.request(method, path, headers=headers, **kw)


# -- the endpoints --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    name: str
    claim_first: bool
    # (world, hostname) -> method, path, request keyword arguments
    build: Callable[[World, str], tuple[str, str, dict[str, Any]]]


def _enrol(world: World, hostname: str) -> tuple[str, str, dict[str, Any]]:
    return (
        "POST",
        "/api/agents/enrol",
        {"json": {"ip": A_IP, "hostname": hostname, "version": "0.1.0"}},
    )


def _heartbeat(world: World, hostname: str) -> tuple[str, str, dict[str, Any]]:
    return "POST", "/api/agents/heartbeat", {"json": _heartbeat_body(hostname)}


def _complete(world: World, hostname: str) -> tuple[str, str, dict[str, Any]]:
    body = {"hostname": hostname, "job_id": world.job_id, "state": "failed", "summary": "probe"}
    return "POST", "/api/agents/jobs/complete", {"json": body}


def _transfer(world: World, hostname: str) -> tuple[str, str, dict[str, Any]]:
    headers = {"X-Balctl-Hostname": hostname, "Content-Type": "application/gzip"}
    return (
        "PUT",
        world.upload_path,
        {"content": b"\x1f\x8b not really an archive", "headers": headers},
    )


ENDPOINTS = [
    Endpoint("enrol", False, _enrol),
    Endpoint("heartbeat", False, _heartbeat),
    Endpoint("complete", True, _complete),
    Endpoint("transfer", True, _transfer),
]


# -- the callers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who calls: the Authorization header (from whose secret), the hostname sent, the socket
    address and any forwarding headers; what must happen; and on whose card it shows."""

    name: str
    status: int
    authorization: str | None = "Bearer {secret}"
    secret_of: str = "a"
    hostname_of: str = "a"
    source: str = A_IP
    headers: dict[str, str] = field(default_factory=dict)
    shown_on: str | None = None  # "a" or "b": the member whose card lists the refusal
    reason: str = ""
    shown_ip: str = ""  # the source address the card shows (default: `source`)


REFUSED = [
    Caller("missing header", 401, authorization=None, reason="missing bearer"),
    Caller("malformed scheme", 401, authorization="Basic {secret}", reason="missing bearer"),
    Caller("bearer without a value", 401, authorization="Bearer", reason="missing bearer"),
    Caller("wrong token", 401, secret_of="random", reason="unknown or revoked enrolment secret"),
    Caller(
        "rotated secret's old value",
        401,
        secret_of="a-old",
        shown_on="a",
        reason="enrolment secret was revoked",
    ),
    Caller(
        "deleted member's secret",
        401,
        secret_of="c",
        reason="unknown or revoked enrolment secret",
    ),
    Caller(
        "another member's token with this hostname",
        401,
        secret_of="b",
        source=B_IP,
        shown_on="b",
        reason="hostname 'edge-a' does not match the enrolled hostname 'edge-b'",
    ),
    Caller(
        "another member's token from this member's address",
        403,
        secret_of="b",
        shown_on="b",
        reason=f"source IP {A_IP} is not allowed for member edge-b",
    ),
    Caller(
        "wrong hostname",
        401,
        hostname_of="bad",
        shown_on="a",
        reason=f"hostname '{BAD_HOSTNAME}' does not match the enrolled hostname 'edge-a'",
    ),
    Caller(
        "wrong source IP",
        403,
        source=STRANGER,
        shown_on="a",
        reason=f"source IP {STRANGER} is not allowed for member edge-a",
    ),
    *[
        Caller(
            f"forged {header}: {value} from untrusted {peer}",
            403,
            source=peer,
            headers={header: value},
            shown_on="a",
            reason=f"source IP {peer} is not allowed for member edge-a",
        )
        for header, value, peer in [
            ("CF-Connecting-IP", A_IP, STRANGER),
            ("X-Forwarded-For", A_IP, STRANGER),
            ("X-Real-IP", A_IP, STRANGER),
            ("X-Forwarded-For", f"{STRANGER}, {A_IP}", STRANGER),
            # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told not to.
            ("X-Forwarded-For", A_IP, LOCALHOST),
            ("CF-Connecting-IP", A_IP, LOCALHOST),
        ]
    ],
    Caller(
        "trusted proxy forwarding a stranger",
        403,
        source=PROXY,
        headers={"CF-Connecting-IP": STRANGER},
        shown_on="a",
        reason=f"source IP {STRANGER} is not allowed for member edge-a",
        shown_ip=STRANGER,
    ),
]

ACCEPTED = [
    Caller("the member itself", 200),
    Caller(
        "trusted proxy, CF-Connecting-IP", 200, source=PROXY, headers={"CF-Connecting-IP": A_IP}
    ),
    Caller(
        "trusted proxy, X-Forwarded-For",
        200,
        source=PROXY,
        headers={"X-Forwarded-For": f"{STRANGER}, {A_IP}"},
    ),
    Caller(
        "the member, with a forged header naming a stranger",
        200,
        headers={"X-Forwarded-For": STRANGER, "CF-Connecting-IP": STRANGER},
    ),
]

CASES = [
    pytest.param(endpoint, caller, id=f"{endpoint.name}: {caller.name}")
    for endpoint in ENDPOINTS
    for caller in [*REFUSED, *ACCEPTED]
]


# -- what must not change -------------------------------------------------------------------------


def observable(api: httpx.Client, cp: ServerProcess, world: World) -> dict[str, Any]:
    """Everything an accepted agent request could change, as the API and the store show it."""
    members = api.get(f"/api/pools/{world.pool_id}/members").json()["items"]
    job = api.get(f"/api/jobs/{world.job_id}").json()
    store = cp.data_dir / "backups"
    targets = {f"member:{world.a.id}", f"member:{world.b.id}"}
    audit = api.get("/api/audit", params={"limit": 200}).json()["items"]
    return {
        # Enrolment writes nothing but its audit entry.
        "audit": [(e["id"], e["action"]) for e in audit if e["target"] in targets],
        "members": {
            m["id"]: (m["enrolled_at"], m["heartbeat"], m["allowed_ips"], m["role"])
            for m in members
        },
        "job": {k: job.get(k) for k in ("state", "started_at", "finished_at", "summary", "output")},
        "stored": sorted(
            (str(p.relative_to(store)), p.stat().st_size) for p in store.rglob("*") if p.is_file()
        )
        if store.exists()
        else [],
    }


def _send(cp: ServerProcess, world: World, endpoint: Endpoint, caller: Caller) -> httpx.Response:
    secret = (
        secrets.token_urlsafe(36)
        if caller.secret_of == "random"
        else world.secret(caller.secret_of)
    )
    headers = dict(caller.headers)
    if caller.authorization is not None:
        headers["Authorization"] = caller.authorization.format(secret=secret)
    method, path, kwargs = endpoint.build(world, world.hostname(caller.hostname_of))
    kwargs = dict(kwargs)
    headers.update(kwargs.pop("headers", {}))
    return agent_call(cp, caller.source, headers, method, path, **kwargs)


def _cards(api: httpx.Client, world: World) -> dict[str, Any]:
    """The last refusal on each member's card (live: no wait for the flush)."""
    return {
        who: api.get(f"/api/pools/{world.pool_id}/members/{m.id}").json()["last_rejection"]
        for who, m in (("a", world.a), ("b", world.b))
    }


@pytest.mark.parametrize(("endpoint", "caller"), CASES)
def test_agent_request(cp, api, endpoint: Endpoint, caller: Caller) -> None:
    world = make_world(api, cp, claim=endpoint.claim_first)
    before = observable(api, cp, world)

    answer = _send(cp, world, endpoint, caller)

    assert answer.status_code == caller.status, answer.text
    after = observable(api, cp, world)
    cards = _cards(api, world)
    if caller.status == 200:
        assert after != before, "the accepted control request changed nothing: the check is blind"
        assert cards == {"a": None, "b": None}
        return
    assert after == before, "a refused agent request changed something"
    assert answer.json()["detail"].startswith(caller.reason)
    if caller.status == 401:
        assert answer.headers["www-authenticate"] == "Bearer"
    for who, card in cards.items():
        if who != caller.shown_on:
            assert card is None, f"the refusal landed on member {who}'s card"
    if caller.shown_on is not None:
        _assert_shown(api, world, caller, cards[caller.shown_on])


def _assert_shown(api: httpx.Client, world: World, caller: Caller, card: Any) -> None:
    """On the member's card at once, and in GET .../rejections after the flush."""
    expected_ip = caller.shown_ip or caller.source
    assert card is not None, "the refusal is not on the member card"
    assert (card["status"], card["source_ip"]) == (caller.status, expected_ip)
    assert card["reason"].startswith(caller.reason)
    member = world.a if caller.shown_on == "a" else world.b
    url = f"/api/pools/{world.pool_id}/members/{member.id}/rejections"

    def listed() -> bool:
        return any(
            (r["status"], r["source_ip"]) == (caller.status, expected_ip)
            and r["reason"].startswith(caller.reason)
            for r in api.get(url).json()["items"]
        )

    wait_until(listed, 15, interval=0.2, what="the refusal in GET .../rejections")


# -- the transfer's own token ---------------------------------------------------------------------


def test_another_members_transfer_token_is_refused_and_stays_usable(cp, api) -> None:
    world = make_world(api, cp, claim=True)
    before = observable(api, cp, world)
    headers = {
        "Authorization": f"Bearer {world.b.secret}",
        "X-Balctl-Hostname": world.b.hostname,
    }
    answer = agent_call(cp, B_IP, headers, "PUT", world.upload_path, content=b"archive")
    assert answer.status_code == 403, answer.text
    assert observable(api, cp, world) == before
    # A's token was not spent by B's attempt: A's own upload still goes through.
    own = {"Authorization": f"Bearer {world.a.secret}", "X-Balctl-Hostname": world.a.hostname}
    assert (
        agent_call(cp, A_IP, own, "PUT", world.upload_path, content=b"archive").status_code == 200
    )
