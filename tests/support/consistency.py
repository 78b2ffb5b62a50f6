"""After a run of bad input against a real `serverctl serve`: does its state still make sense?

The bad-input suites (tests/security) throw fuzzed and hostile requests at a server, then ask
these questions of it as an operator would: do the API's lists and cards answer with sane
values, do the web pages render, and did any request end in a traceback in the server's log.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import httpx2 as httpx

from support.server import ServerProcess

HEALTH_STATES = {"pending", "healthy", "unhealthy"}
JOB_STATES = {"pending", "running", "completed", "failed", "cancelled", "timed_out"}


def web_session(server: ServerProcess) -> httpx.Client:
    """A web UI session of the first admin (the password `serve` printed on its first start)."""
    client = httpx.Client(base_url=server.url, timeout=10, verify=server.verify)
    answer = client.post(
        "/login", data={"name": "admin", "password": server.admin_password}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text
    return client


def assert_sane_member(member: dict[str, Any]) -> None:
    """A member card's values are of their kinds: an IPv4 last address, a known health state."""
    assert member["health"]["state"] in HEALTH_STATES, member
    for address in member["allowed_ips"]:
        ipaddress.ip_network(address, strict=False)
    beat = member["heartbeat"]
    if beat is not None:
        assert beat["ip"] is None or ipaddress.IPv4Address(beat["ip"]), member
        assert beat["version"] is None or isinstance(beat["version"], str), member
        assert beat["haproxy"] is None or isinstance(beat["haproxy"], dict), member


def assert_api_answers(api: httpx.Client) -> list[dict[str, Any]]:
    """Every pool, member card and member status answers 200 with sane values; the members."""
    pools = api.get("/api/pools")
    assert pools.status_code == 200, pools.text
    members = []
    for pool in pools.json()["items"]:
        listed = api.get(f"/api/pools/{pool['id']}/members")
        assert listed.status_code == 200, listed.text
        for member in listed.json()["items"]:
            card = api.get(f"/api/pools/{pool['id']}/members/{member['id']}")
            assert card.status_code == 200, card.text
            assert_sane_member(card.json())
            status = api.get(f"/api/pools/{pool['id']}/members/{member['id']}/status")
            assert status.status_code == 200, status.text
            members.append(card.json())
        jobs = api.get(f"/api/pools/{pool['id']}/jobs")
        assert jobs.status_code == 200, jobs.text
        assert {job["state"] for job in jobs.json()["items"]} <= JOB_STATES, jobs.text
    return members


def assert_pages_render(web: httpx.Client, members: list[dict[str, Any]]) -> None:
    """The pool list, each pool's overview and each member's tab and Status tab render."""
    pages = ["/pools"]
    for member in members:
        base = f"/pools/{member['pool_id']}"
        pages += [base, f"{base}/members/{member['id']}", f"{base}/members/{member['id']}/status"]
    for page in dict.fromkeys(pages):
        answer = web.get(page)
        assert answer.status_code == 200, f"{page}: {answer.status_code} {answer.text[:500]}"


def assert_no_tracebacks(server: ServerProcess) -> None:
    """No request ended in an unhandled exception (uvicorn logs its traceback)."""
    log = server.log()
    assert "Traceback" not in log, log[log.find("Traceback") - 2000 :][:6000]
