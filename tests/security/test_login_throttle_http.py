"""Login brute force against a real `serverctl serve`: failed password logins pause the source
they come from (429 with Retry-After), never the account elsewhere, and are audited without
what was typed. Loopback aliases stand in for hosts (127.0.0.0/8 all reaches `lo`); 127.0.0.9
is the one trusted reverse proxy."""

from __future__ import annotations

import collections.abc
import time

import httpx2 as httpx
import pytest

from support.server import ServerProcess, start_server, stop_process

PROXY = "127.0.0.9"
# Small limits: every failed login costs an argon2 check (about 0.5 s on a loaded 2-core
# machine), and the window is long next to the time the failures take, so a slow run still
# makes them all inside it.
MAX_FAILURES = 3
PER_SOURCE = 6
WINDOW_S = 120


def throttled_server(tmp_path, max_failures: int, window_s: int) -> ServerProcess:
    return start_server(
        tmp_path,
        env={
            "SERVERCTL_LOGIN_MAX_FAILURES": str(max_failures),
            "SERVERCTL_LOGIN_MAX_FAILURES_PER_SOURCE": str(PER_SOURCE),
            "SERVERCTL_LOGIN_WINDOW_S": str(window_s),
            "SERVERCTL_TRUSTED_PROXIES": PROXY,
        },
    )


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[ServerProcess]:
    server = throttled_server(tmp_path_factory.mktemp("cp"), MAX_FAILURES, WINDOW_S)
    yield server
    stop_process(server.process)


def login(
    cp: ServerProcess,
    name: str,
    password: str,
    source: str,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One login form post from `source` (a loopback alias), as a browser sends it."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, base_url=cp.url, timeout=30) as client:
        return client.post(
            "/login",
            data={"name": name, "password": password},
            headers=headers or {},
            follow_redirects=False,
        )


def assert_logged_in(answer: httpx.Response) -> None:
    assert answer.status_code == 303, answer.text
    assert "serverctl_session" in answer.headers.get("set-cookie", "")


def assert_paused(answer: httpx.Response, window_s: int = WINDOW_S) -> int:
    assert answer.status_code == 429, answer.text
    assert "set-cookie" not in answer.headers
    assert "too many failed logins from your address: try again in" in answer.text
    retry_after = int(answer.headers["retry-after"])
    assert 1 <= retry_after <= window_s
    return retry_after


def fail_logins(
    cp: ServerProcess, source: str, names: list[str], headers: dict[str, str] | None = None
) -> None:
    for name in names:
        answer = login(cp, name, "not-the-password", source, headers)
        assert answer.status_code == 401, answer.text
        assert "wrong user name or password" in answer.text


def test_once_paused_even_the_right_password_is_refused_but_only_from_that_address(cp):
    attacker, admin_desk = "127.0.0.11", "127.0.0.12"
    fail_logins(cp, attacker, ["admin"] * MAX_FAILURES)
    assert_paused(login(cp, "admin", cp.admin_password, attacker))
    # Never an account lock: the admin logs in from anywhere else.
    assert_logged_in(login(cp, "admin", cp.admin_password, admin_desk))
    # And the admin's success there does not lift the attacker's pause.
    assert_paused(login(cp, "admin", cp.admin_password, attacker))


def test_the_pause_ends_when_the_failures_leave_the_window(tmp_path):
    window_s = 8
    server = throttled_server(tmp_path, 2, window_s)
    try:
        fail_logins(server, "127.0.0.13", ["admin"] * 2)
        wait = assert_paused(login(server, "admin", server.admin_password, "127.0.0.13"), window_s)
        time.sleep(wait + 0.5)
        assert_logged_in(login(server, "admin", server.admin_password, "127.0.0.13"))
    finally:
        stop_process(server.process)


def test_many_accounts_tried_from_one_address_pause_the_address(cp):
    source = "127.0.0.14"
    fail_logins(cp, source, [f"user{n}" for n in range(PER_SOURCE)])
    assert_paused(login(cp, "admin", cp.admin_password, source))
    assert_logged_in(login(cp, "admin", cp.admin_password, "127.0.0.15"))


def test_forged_forwarding_headers_from_an_untrusted_peer_do_not_spread_the_count(cp):
    source = "127.0.0.16"
    for n in range(MAX_FAILURES):
        fail_logins(
            cp,
            source,
            ["admin"],
            headers={"X-Forwarded-For": f"198.51.100.{n}", "CF-Connecting-IP": f"192.0.2.{n}"},
        )
    forged = {"X-Forwarded-For": "198.51.100.99", "CF-Connecting-IP": "192.0.2.99"}
    assert_paused(login(cp, "admin", cp.admin_password, source, headers=forged))


def test_behind_a_trusted_proxy_each_client_is_counted_apart(cp):
    fail_logins(cp, PROXY, ["admin"] * MAX_FAILURES, headers={"CF-Connecting-IP": "198.51.100.20"})
    paused = login(cp, "admin", cp.admin_password, PROXY, {"CF-Connecting-IP": "198.51.100.20"})
    assert_paused(paused)
    other = login(cp, "admin", cp.admin_password, PROXY, {"CF-Connecting-IP": "198.51.100.21"})
    assert_logged_in(other)


def test_failed_logins_are_audited_and_logged_without_what_was_typed(cp):
    source = "127.0.0.17"
    typed_password = "Typed-Pa55word-7f3a91"
    password_in_name_field = "Mistyped-Into-Name-c0ffee"
    assert login(cp, "admin", typed_password, source).status_code == 401
    assert login(cp, password_in_name_field, typed_password, source).status_code == 401

    with cp.api() as api:
        entries = api.get("/api/audit", params={"limit": 500}).json()["items"]
    failed = [e for e in entries if e["action"] == "session.login_failed"]
    mine = [e for e in failed if e["source_ip"] == source]
    assert [(e["target"], e["detail"]["reason"]) for e in reversed(mine)] == [
        ("user:1", "wrong password"),
        ("user:unknown", "no such account"),
    ]
    assert mine[0]["actor"] == "anonymous:login-form"
    for text in (str(entries), cp.log()):
        assert typed_password not in text
        assert password_in_name_field not in text
