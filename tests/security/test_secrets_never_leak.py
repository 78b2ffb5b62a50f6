"""Secrets never leak: a real `serverctl serve` is given every kind of secret it keeps (an
enrolled agent's secret, API tokens, operator passwords and a session, a Cloudflare token, an
SMTP password, S3 credentials) and worked the way an operator and a fleet work it: a real agent
heartbeats and runs jobs (one whose output echoes the environment, a backup to S3), DNS is
linked and the provider fails for a while, connection tests fail with wrong credentials,
someone types a password into the user name field.

Then no secret may appear in clear in the server's log, in any API answer after the one that
created it (every GET route, found from the OpenAPI document), in any job's summary, output or
result, in any page of the UI, in the agent's log, in the emails sent, or in the bytes of the
SQLite database and its WAL. Hashes and Fernet ciphertexts are what may be stored.
"""

from __future__ import annotations

import collections.abc
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2 as httpx
import pytest

from support.cloudflare_emulator import ACCOUNT_ID, CloudflareEmulator
from support.fleet import Fleet, FleetMember
from support.route_walk import api_operations, fill_path, listing_app, page_routes
from support.s3 import MotoS3
from support.server import ServerProcess, start_server, stop_process
from support.smtp import SmtpServer
from support.util import wait_until

EDGE_IP = "127.0.0.2"
ZONE = "example.com"
ECHO_CONTROL = "echo-control-5a1f"
TERMINAL = ("completed", "failed", "cancelled", "timed_out")
# Appended to the member's haproxy.cfg. HAProxy expands "${VAR}" from its environment, and
# prints an unknown keyword back in `haproxy -c`'s output: the validate job's output would echo
# the agent's secret if HAProxy were given it. The agent parses server names the same way for
# the topology it reports. ECHO_CONTROL shows that the expansion really happens.
ECHO_CONFIG = """
backend be_echo
    server "s-${BALCTL_KEY}" 127.0.0.1:1
    server "c-${ECHO_CONTROL}" 127.0.0.1:2

frontend fe_echo
    bind 127.0.0.1:9
    "echo-${BALCTL_KEY}-${ECHO_CONTROL}"
"""


def _secret(prefix: str) -> str:
    return f"{prefix}-{secrets.token_urlsafe(18)}"


@dataclass
class World:
    cp: ServerProcess
    fleet: Fleet
    member: FleetMember
    smtp: SmtpServer
    # name -> value of every secret the instance was given
    secrets: dict[str, str]
    ids: dict[str, Any]
    # Every API answer after the secrets were created: "METHOD path" -> body
    answers: dict[str, str] = field(default_factory=dict)
    session: str = ""


def leaks(text: str, known: dict[str, str]) -> list[str]:
    """The names of the secrets found in `text`, as they are or URL-encoded."""
    return [name for name, value in known.items() if value in text or quote(value, safe="") in text]


# -- the instance, given every secret and worked ---------------------------------------------------


def _recording_client(world: World, token: str) -> httpx.Client:
    def record(response: httpx.Response) -> None:
        response.read()
        key = f"{response.request.method} {response.request.url.path}"
        world.answers[key] = world.answers.get(key, "") + response.text

    return httpx.Client(
        base_url=world.cp.url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        event_hooks={"response": [record]},
    )


def _finished(api: httpx.Client, job_id: int) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job: dict[str, Any] = api.get(f"/api/jobs/{job_id}").json()
        return job if job["state"] in TERMINAL else None

    found: dict[str, Any] = wait_until(done, 90, interval=0.3, what=f"job {job_id} to end")
    return found


def _agent_as_under_systemd(member: FleetMember, config: Path) -> None:
    """Restart the agent with its secret in its environment (systemd's EnvironmentFile puts
    agent.env there) and a configuration that expands it."""
    config.write_text(config.read_text() + ECHO_CONFIG)
    member.agent.stop()
    member.agent.env.update({"BALCTL_KEY": member.secret, "ECHO_CONTROL": ECHO_CONTROL})
    member.agent.start()


def _dns(world: World, api: httpx.Client, cloudflare: CloudflareEmulator) -> None:
    """A Cloudflare account, a wrong one, the pool's record, and the provider failing."""
    made = world.fleet.call(
        "POST",
        "/api/dns-providers",
        {
            "name": "cloudflare",
            "kind": "cloudflare",
            "config": {
                "api_token": world.secrets["cloudflare token"],
                "account_id": ACCOUNT_ID,
                "api_base": cloudflare.api_base,
            },
        },
    )
    wrong = world.fleet.call(
        "POST",
        "/api/dns-providers",
        {
            "name": "cloudflare-wrong",
            "kind": "cloudflare",
            "config": {
                "api_token": world.secrets["wrong cloudflare token"],
                "account_id": ACCOUNT_ID,
                "api_base": cloudflare.api_base,
            },
        },
    )
    world.ids["provider_id"] = made["id"]
    assert api.post(f"/api/dns-providers/{made['id']}/test", json={"zone": ZONE}).json()["ok"]
    assert not api.post(f"/api/dns-providers/{wrong['id']}/test", json={"zone": ZONE}).json()["ok"]
    api.get(f"/api/dns-providers/{wrong['id']}/zones")
    pool_url = world.fleet.pool_url
    link = {"provider_id": made["id"], "zone": ZONE, "label": "lb", "ttl": 60}
    assert api.put(f"{pool_url}/dns", json=link).status_code == 200
    wait_until(lambda: cloudflare.records_of(ZONE), 20, what="the record at Cloudflare")
    # The provider fails for a while: the publisher retries and says why (in its log too).
    cloudflare.fail_next(3, 500)
    assert api.post(f"{pool_url}/dns/test").status_code == 200
    api.put(f"{pool_url}/dns", json={**link, "ttl": 120})
    wait_until(lambda: cloudflare.faults_left() == 0, 30, what="the provider's failures")


def _mail(world: World, api: httpx.Client) -> None:
    """SMTP with a wrong password first (the test fails), then the right one (it sends)."""
    settings = world.smtp.settings()
    wrong = {**settings, "password": world.secrets["wrong SMTP password"]}
    assert api.put("/api/settings/smtp", json=wrong).status_code == 200
    assert not api.post("/api/settings/smtp/test", json={"to": "ops@example.com"}).json()["ok"]
    assert api.put("/api/settings/smtp", json=settings).status_code == 200
    sent = api.post("/api/settings/smtp/test", json={"to": "ops@example.com"}).json()
    assert sent["ok"], sent


def _backups(world: World, api: httpx.Client, s3: MotoS3) -> None:
    """An S3 store with a wrong secret (its test fails), then the right one; a real backup."""
    bucket = s3.create_bucket("sct-backups")
    store = {"kind": "s3", "settings": s3.settings(bucket), "secrets": s3.secrets()}
    wrong = {**store, "secrets": {**s3.secrets(), "secret_access_key": world.secrets["wrong S3"]}}
    assert api.put("/api/settings/backup-store", json=wrong).status_code == 200
    assert api.post("/api/settings/backup-store/test").status_code >= 400
    assert api.put("/api/settings/backup-store", json=store).status_code == 200
    assert api.post("/api/settings/backup-store/test").status_code == 200
    member_url = f"{world.fleet.pool_url}/members/{world.member.id}"
    queued = api.post(f"{member_url}/backups", json={}).json()
    job = _finished(api, queued["job_id"])
    assert job["state"] == "completed", job
    world.ids["snapshot_id"] = job["result"]["snapshot_id"]


def _logins(world: World) -> None:
    """An operator logs in; someone types a password into the user name field; a wrong one."""
    with httpx.Client(base_url=world.cp.url, timeout=30) as web:
        typed = web.post(
            "/login", data={"name": world.secrets["admin password"], "password": "nope-nope"}
        )
        assert typed.status_code == 401
        wrong = web.post(
            "/login", data={"name": "ops-admin", "password": world.secrets["typed wrong password"]}
        )
        assert wrong.status_code == 401
        ok = web.post(
            "/login", data={"name": "ops-admin", "password": world.secrets["admin password"]}
        )
        assert ok.status_code == 303, ok.text
        world.session = ok.cookies["serverctl_session"]
    world.secrets["web session"] = world.session


def _jobs(world: World, api: httpx.Client) -> None:
    member_url = f"{world.fleet.pool_url}/members/{world.member.id}"
    queued = api.post(f"{member_url}/jobs", json={"type": "haproxy.validate"}).json()
    job = _finished(api, queued["job_id"])
    # The configuration is invalid on purpose: haproxy -c printed the expanded line.
    assert f"echo--{ECHO_CONTROL}" in (job["output"] or ""), job
    world.ids["job_id"] = queued["job_id"]
    schedule = api.post(
        f"{world.fleet.pool_url}/schedules",
        json={"job_type": "haproxy.reload", "cron": "0 3 * * *"},
    ).json()
    world.ids["schedule_id"] = schedule["id"]


def _work(world: World, cloudflare: CloudflareEmulator, s3: MotoS3) -> None:
    fleet = world.fleet
    token = fleet.call("POST", "/api/tokens", {"name": "automation", "role": "admin"})
    world.secrets["API token"] = token["token"]
    world.ids["token_id"] = token["id"]
    user = fleet.call(
        "POST",
        "/api/users",
        {"name": "ops-admin", "role": "admin", "password": world.secrets["admin password"]},
    )
    world.ids["user_id"] = user["id"]
    _agent_as_under_systemd(world.member, world.member.haproxy.config)
    with _recording_client(world, world.secrets["API token"]) as api:
        wait_until(
            lambda: "c-" + ECHO_CONTROL in api.get(fleet.pool_url + "/members").text,
            30,
            what="the agent's topology from the changed configuration",
        )
        _jobs(world, api)
        _dns(world, api, cloudflare)
        _mail(world, api)
        _backups(world, api, s3)
    _logins(world)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[World]:
    tmp = tmp_path_factory.mktemp("secrets")
    known = {
        name: _secret(name.split()[0][:6])
        for name in (
            "admin password",
            "typed wrong password",
            "cloudflare token",
            "wrong cloudflare token",
            "SMTP password",
            "wrong SMTP password",
            "wrong S3",
        )
    }
    cp = start_server(tmp / "cp")
    try:
        with (
            CloudflareEmulator(zones=(ZONE,)) as cloudflare,
            MotoS3() as s3,
            SmtpServer(user="alerts", password=known["SMTP password"]) as smtp,
            Fleet(tmp / "f", cp) as fleet,
        ):
            cloudflare.add_token(known["cloudflare token"])
            member = fleet.add_member("edge-1", EDGE_IP)
            known |= {
                "enrolment secret": member.secret,
                "test API token": cp.token,
                "bootstrap admin password": cp.admin_password,
                "S3 secret key": s3.secret_access_key,
            }
            built = World(cp, fleet, member, smtp, known, {"pool_id": fleet.pool["id"]})
            built.ids |= {"member_id": member.id, "recipe_id": "admin-socket"}
            _work(built, cloudflare, s3)
            yield built
    finally:
        stop_process(cp.process)


# -- where secrets must not be ---------------------------------------------------------------------


def test_the_server_log_holds_no_secret(world: World) -> None:
    lines = world.cp.log().splitlines()
    # The first start prints the generated admin password once, by design (docs: README).
    bootstrap = [
        line for line in lines if world.cp.admin_password and world.cp.admin_password in line
    ]
    assert len(bootstrap) <= 1 and all("with password" in line for line in bootstrap)
    rest = "\n".join(line for line in lines if line not in bootstrap)
    assert leaks(rest, world.secrets) == []
    # The failures with wrong credentials were logged, with their reasons: not a silent log.
    assert "Cloudflare answered HTTP 500" in rest
    assert "SMTP server refused the login of user 'alerts'" in rest
    assert "SignatureDoesNotMatch" in rest


def test_no_api_answer_after_creation_holds_a_secret(world: World) -> None:
    found = {key: leaks(body, world.secrets) for key, body in world.answers.items()}
    assert {key: names for key, names in found.items() if names} == {}
    assert len(world.answers) >= 15, "the recording saw too little to mean anything"


GET_OPERATIONS = [op for op in api_operations(listing_app().openapi()) if op.method == "get"]


@pytest.mark.parametrize("op", GET_OPERATIONS, ids=str)
def test_no_get_route_answers_a_secret(world: World, op: Any) -> None:
    with httpx.Client(base_url=world.cp.url, timeout=30) as api:
        answer = api.get(
            fill_path(op.path, world.ids),
            params={"limit": 500} if op.path.endswith(("/audit", "/history", "/events")) else None,
            headers={"Authorization": f"Bearer {world.secrets['API token']}"},
        )
    assert answer.status_code < 500, answer.text
    assert leaks(answer.text, world.secrets) == []


def test_no_job_output_holds_a_secret(world: World) -> None:
    with world.cp.api() as api:
        listed = api.get(f"/api/pools/{world.ids['pool_id']}/jobs", params={"limit": 500}).json()
        jobs = [api.get(f"/api/jobs/{job['id']}").json() for job in listed["items"]]
    assert len(jobs) >= 2
    for job in jobs:
        assert leaks(str(job), world.secrets) == [], job["type"]


PAGES = sorted(set(page_routes(listing_app())) | {"/metrics"})


def test_no_page_shows_a_secret(world: World) -> None:
    shown: dict[str, list[str]] = {}
    with httpx.Client(base_url=world.cp.url, timeout=30) as web:
        web.cookies.set("serverctl_session", world.session)
        for path in PAGES:
            answer = web.get(fill_path(path, world.ids))
            assert answer.status_code < 500, (path, answer.text)
            if answer.headers.get("content-type", "").startswith(("text/", "application/json")):
                shown[path] = leaks(answer.text, world.secrets)
    assert {path: names for path, names in shown.items() if names} == {}


def test_the_database_and_its_wal_hold_no_secret_in_clear(world: World) -> None:
    files = sorted(world.cp.data_dir.glob("serverctl.db*"))
    assert {f.name for f in files} >= {"serverctl.db"}
    for path in files:
        data = path.read_bytes().decode("latin-1")
        assert leaks(data, world.secrets) == [], path.name
    # The stored credentials are there, encrypted: the check read the right file.
    assert b"gAAAAA" in b"".join(f.read_bytes() for f in files)


def test_the_agent_log_and_the_emails_hold_no_secret(world: World) -> None:
    assert leaks(world.member.agent.log(), world.secrets) == []
    mails = world.smtp.messages
    assert mails, "the test email was not sent"
    for mail in mails:
        assert leaks(mail.message.as_string(), world.secrets) == []
