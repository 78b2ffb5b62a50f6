"""Support bundles end to end: a real `serverctl serve`, real agents beside real haproxy
processes, PowerDNS for the pool's record, the Cloudflare emulator for a second DNS account;
the bundles are downloaded over REST, opened, and searched for every secret the test knows."""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
import pytest
from cryptography.fernet import Fernet

from support.cloudflare_emulator import ACCOUNT_ID, CloudflareEmulator
from support.cloudflare_emulator import TOKEN as CLOUDFLARE_TOKEN
from support.fleet import Fleet
from support.server import ServerProcess, start_server, stop_process
from support.util import wait_until

EDGE_1, EDGE_2 = "127.0.0.2", "127.0.0.3"
SECRET_KEY = Fernet.generate_key().decode()
SMTP_PASSWORD = "smtp-Pa55-for-bundles"
S3_KEY_ID = "AKIABUNDLETESTKEY01"
S3_SECRET = "s3/Bundle+Secret=Access-Key-0042"
PIECE = 12
NAME = re.compile(
    r'attachment; filename="(serverctl-support-edge(-edge-1)?-\d{8}T\d{6}Z)\.tar\.gz"'
)


@dataclass
class Downloaded:
    name: str
    files: dict[str, bytes]  # path inside the bundle's folder -> content
    raw: bytes  # the whole tar stream, decompressed

    def json(self, name: str) -> Any:
        return json.loads(self.files[name])

    def text(self, name: str) -> str:
        return self.files[name].decode()


@dataclass
class World:
    server: ServerProcess
    fleet: Fleet
    secrets: dict[str, str]
    pool_bundle: Downloaded
    member_bundle: Downloaded
    validate_job: int


def _open(answer: httpx.Response) -> Downloaded:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/gzip"
    found = NAME.fullmatch(answer.headers["content-disposition"])
    assert found, answer.headers["content-disposition"]
    folder = found.group(1)
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(answer.content), mode="r:gz") as tar:
        for member in tar.getmembers():
            assert member.isfile() and member.name.startswith(folder + "/"), member.name
            handle = tar.extractfile(member)
            assert handle is not None
            files[member.name[len(folder) + 1 :]] = handle.read()
    return Downloaded(folder, files, gzip.decompress(answer.content))


def _configure_secrets(fleet: Fleet, cloudflare: CloudflareEmulator) -> None:
    """Credentials the control plane keeps encrypted: a Cloudflare account (tested, so the
    token was really used), SMTP with a password, an S3 backup store."""
    account = fleet.call(
        "POST",
        "/api/dns-providers",
        {
            "name": "cf",
            "kind": "cloudflare",
            "config": {
                "api_token": CLOUDFLARE_TOKEN,
                "account_id": ACCOUNT_ID,
                "api_base": cloudflare.api_base,
            },
        },
    )
    assert fleet.call("POST", f"/api/dns-providers/{account['id']}/test", {})["ok"] is True
    fleet.call(
        "PUT",
        "/api/settings/smtp",
        {
            "host": "127.0.0.1",
            "port": 2525,
            "security": "none",
            "username": "alerts",
            "password": SMTP_PASSWORD,
            "from_address": "serverctl@example.com",
        },
    )
    fleet.call(
        "PUT",
        "/api/settings/backup-store",
        {
            "kind": "s3",
            "settings": {"bucket": "bundles", "region": "us-east-1"},
            "secrets": {"access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET},
        },
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("bundle")
    server = start_server(root / "cp", env={"SERVERCTL_SECRET_KEY": SECRET_KEY})
    try:
        with CloudflareEmulator() as cloudflare, Fleet(root / "fleet", server) as fleet:
            log_file = root / "edge-1-agent.log"
            edge_1 = fleet.add_member("edge-1", EDGE_1, env={"BALCTL_LOG_FILE": str(log_file)})
            edge_2 = fleet.add_member("edge-2", EDGE_2)  # no log file: its agent.logs fails
            fleet.link_dns(ttl=1)
            _configure_secrets(fleet, cloudflare)
            job = fleet.call(
                "POST", f"{fleet.pool_url}/members/{edge_1.id}/jobs", {"type": "haproxy.validate"}
            )["job_id"]
            wait_until(
                lambda: fleet.call("GET", f"/api/jobs/{job}")["state"] == "completed",
                20,
                what="haproxy.validate to complete",
            )
            fleet.call("POST", f"{fleet.pool_url}/cutover")
            assert fleet.pdns is not None
            secrets = {
                "edge-1 enrolment secret": edge_1.secret,
                "edge-2 enrolment secret": edge_2.secret,
                "API token": server.token,
                "admin password": server.admin_password,
                "Cloudflare token": CLOUDFLARE_TOKEN,
                "PowerDNS API key": fleet.pdns.api_key,
                "SMTP password": SMTP_PASSWORD,
                "S3 access key id": S3_KEY_ID,
                "S3 secret": S3_SECRET,
                "secret key": SECRET_KEY,
            }
            assert all(secrets.values()), [k for k, v in secrets.items() if not v]
            # Lines only the control plane can recognise (values the agent does not know), and
            # ones both sides catch by their shape.
            with log_file.open("a") as log:
                log.write(f"upstream said {CLOUDFLARE_TOKEN} / {SMTP_PASSWORD} / {S3_SECRET}\n")
                log.write(f"debug: Authorization: Bearer {server.token}\n")
                log.write(f"debug: neighbour key {edge_2.secret} own {edge_1.secret}\n")
            assert fleet.api is not None
            pool_bundle = _open(
                fleet.api.get(f"{fleet.pool_url}/support-bundle?wait_s=20", timeout=60)
            )
            member_bundle = _open(
                fleet.api.get(
                    f"{fleet.pool_url}/members/{edge_1.id}/support-bundle?wait_s=20", timeout=60
                )
            )
            yield World(server, fleet, secrets, pool_bundle, member_bundle, job)
    finally:
        stop_process(server.process)


def test_the_pool_bundle_holds_every_section(world: World) -> None:
    bundle = world.pool_bundle
    for name in (
        "README.txt",
        "pool.json",
        "members.json",
        "failover-events.json",
        "dns-updates.json",
        "alerts.json",
        "audit.json",
        "agent-logs.json",
        "versions.json",
    ):
        assert name in bundle.files, name
    for host in ("edge-1", "edge-2"):
        for name in ("heartbeat.json", "rejections.json", "jobs.json", "backups.json"):
            assert f"members/{host}/{name}" in bundle.files
        assert f"members/{host}/agent-log.txt" in bundle.files
    members = bundle.json("members.json")
    assert {m["hostname"] for m in members} == {"edge-1", "edge-2"}
    assert "secret_hash" not in bundle.text("members.json")
    heartbeat = bundle.json("members/edge-1/heartbeat.json")
    assert heartbeat["heartbeat"]["ip"] == EDGE_1 and heartbeat["health"]["state"] == "healthy"


def test_jobs_come_with_their_output(world: World) -> None:
    jobs = world.pool_bundle.json("members/edge-1/jobs.json")["newest"]
    validate = next(j for j in jobs if j["id"] == world.validate_job)
    assert validate["type"] == "haproxy.validate" and validate["state"] == "completed"
    assert validate["output"], "the job's output is in the bundle"


def test_the_manual_cutover_is_a_failover_event(world: World) -> None:
    events = world.pool_bundle.json("failover-events.json")
    assert events[0]["trigger"] == "cutover"
    assert (events[0]["from"]["hostname"], events[0]["to"]["hostname"]) == ("edge-1", "edge-2")
    updates = world.pool_bundle.json("dns-updates.json")
    assert updates[0]["address"] == EDGE_2


def test_the_agents_log_lines_come_from_the_real_agent(world: World) -> None:
    bundle = world.pool_bundle
    text = bundle.text("members/edge-1/agent-log.txt")
    assert "balctl[INFO]" in text and "heartbeat" in text
    assert "upstream said [REDACTED]" in text
    meta = bundle.json("members/edge-1/agent-log.json")
    assert meta["source"] == "file" and meta["where"].endswith("edge-1-agent.log")
    assert meta["requested_job_state"] == "completed" and meta["job_id"] == meta["requested_job_id"]
    # edge-2's agent has no log it can read: the bundle says why instead of failing.
    missing = bundle.text("members/edge-2/agent-log.txt")
    assert "No log lines from the agent of edge-2" in missing
    assert "found no agent log to read" in missing
    readme = bundle.text("README.txt")
    assert "edge-1: fresh lines from job" in readme
    assert "edge-2: job" in readme and "failed: found no agent log" in readme


def test_versions_name_every_part(world: World) -> None:
    versions = world.pool_bundle.json("versions.json")
    assert versions["serverctl"] and versions["python"]
    assert versions["database"]["dialect"] == "sqlite" and versions["database"]["version"]
    agents = {m["hostname"]: m["agent"] for m in versions["members"]}
    assert agents["edge-1"] and agents["edge-2"]


def test_provider_accounts_show_by_name_and_kind_only(world: World) -> None:
    dns = world.pool_bundle.json("pool.json")["dns"]
    assert dns["provider"]["name"] == "pdns" and dns["provider"]["kind"] == "powerdns"
    assert "api_key" not in world.pool_bundle.text("pool.json")


def test_no_secret_the_instance_knows_is_anywhere_in_the_bundles(world: World) -> None:
    for bundle in (world.pool_bundle, world.member_bundle):
        for name, content in bundle.files.items():
            for what, secret in world.secrets.items():
                assert secret.encode() not in content, f"{what} in {name}"
        for what, secret in world.secrets.items():
            assert secret.encode() not in bundle.raw, what
            # Nor a piece of one: redaction by shape must not leave half a secret behind.
            for start in range(len(secret) - PIECE + 1):
                assert secret[start : start + PIECE].encode() not in bundle.raw, what
    assert "[REDACTED]" in world.pool_bundle.text("members/edge-1/agent-log.txt")


def test_the_member_bundle_holds_that_member_only(world: World) -> None:
    bundle = world.member_bundle
    assert bundle.name.startswith("serverctl-support-edge-edge-1-")
    hosts = {name.split("/")[1] for name in bundle.files if name.startswith("members/")}
    assert hosts == {"edge-1"}
    assert [m["hostname"] for m in bundle.json("members.json")] == ["edge-1"]
    assert "member edge-1 of pool edge" in bundle.text("README.txt")


def test_downloads_are_audited_and_viewers_are_refused(world: World) -> None:
    fleet = world.fleet
    viewer = fleet.call("POST", "/api/tokens", {"name": "viewer", "role": "viewer"})["token"]
    refused = httpx.get(
        f"{world.server.url}{fleet.pool_url}/support-bundle?wait_s=0",
        headers={"Authorization": f"Bearer {viewer}"},
        timeout=10,
    )
    assert refused.status_code == 403
    assert "operator" in refused.json()["detail"]
    entries = fleet.call("GET", "/api/audit")["items"]
    downloads = [e for e in entries if e["action"] == "support_bundle.download"]
    assert {e["target"] for e in downloads} == {
        f"pool:{fleet.pool['id']}",
        f"member:{fleet.members[0].id}",
    }
    assert downloads[0]["detail"]["log_jobs"]


def test_a_bad_wait_is_refused(world: World) -> None:
    answer = world.fleet.call("GET", f"{world.fleet.pool_url}/support-bundle?wait_s=31", expect=422)
    assert "wait_s" in answer["detail"]
