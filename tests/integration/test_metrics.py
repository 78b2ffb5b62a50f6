"""`GET /metrics`: who may read it, and that every figure moves with what really happened.

The fleet test runs a real `serverctl serve`, two real agents beside real haproxies, and a real
PowerDNS server (support.fleet): heartbeats accepted and refused, member health, a DNS update
and its latency (ok and failing), a cutover, jobs and a real backup all show in the scrape. The
in-process tests pin authentication, backup age from known snapshot times, and label values no
validation would let in, written straight into the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from serverctl.db.models import BackupSnapshot, Member, Pool
from serverctl.db.types import utcnow
from serverctl.domain.principal import SYSTEM
from support.fleet import Fleet
from support.server import start_server, stop_process
from support.util import wait_until
from support.webui import login


class Scrape:
    """One parsed exposition: the samples by name, looked up by their labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: dict[str, list[Sample]] = {}
        for family in self.families.values():
            for sample in family.samples:
                self.samples.setdefault(sample.name, []).append(sample)

    def value(self, name: str, **labels: str) -> float | None:
        """The sample whose labels include `labels`; None when there is none."""
        found = [s for s in self.samples.get(name, []) if labels.items() <= s.labels.items()]
        assert len(found) <= 1, f"{name}{labels} matches {found}"
        return found[0].value if found else None

    def total(self, name: str, **labels: str) -> float:
        return sum(
            s.value for s in self.samples.get(name, []) if labels.items() <= s.labels.items()
        )


def scrape(client: httpx.Client | Any, **headers: str) -> Scrape:
    answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(answer.text)


# -- who may read it (in process) ---------------------------------------------------------------


def test_metrics_refuses_callers_without_a_token_or_session(app_env):
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer sct_not-a-token"}):
        answer = app_env.client.get("/metrics", headers=headers)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        assert "API token" in answer.json()["detail"]
        assert "serverctl_" not in answer.text


def test_a_viewer_token_or_a_web_session_may_scrape(app_env):
    viewer = app_env.as_role("viewer")
    assert scrape(app_env.client, **viewer).value("serverctl_info") == 1
    (made,) = [t for t in app_env.state.operators.list_tokens(SYSTEM) if t["role"] == "viewer"]
    app_env.state.operators.revoke_token(SYSTEM, made["id"])
    assert app_env.client.get("/metrics", headers=viewer).status_code == 401
    login(app_env, "metrics-viewer", "viewer")
    assert scrape(app_env.client).value("serverctl_info") == 1


def test_the_admin_page_shows_a_prometheus_scrape_config(app_env):
    login(app_env)
    page = app_env.client.get("/admin").text
    assert "Monitoring with Prometheus" in page
    assert "metrics_path: /metrics" in page and "authorization:" in page


# -- figures from the database (in process) -----------------------------------------------------


def _snapshot(member: Member, kind: str, state: str, age_s: float, **extra: Any) -> BackupSnapshot:
    at = utcnow() - timedelta(seconds=age_s)
    return BackupSnapshot(
        pool_id=member.pool_id,
        member_id=member.id,
        hostname=member.hostname,
        kind=kind,
        state=state,
        store="local",
        location={},
        key=f"{member.hostname}/{kind}-{age_s}.tar.gz",
        source="manual",
        enqueued_by="tests",
        created_at=at,
        completed_at=at if state == "completed" else None,
        **extra,
    )


@pytest.fixture
def two_members(app_env) -> tuple[Member, Member]:
    pool = app_env.state.pools.create_pool(SYSTEM, "edge", "haproxy")
    made = [
        app_env.state.pools.add_member(SYSTEM, pool["id"], name, ["127.0.0.2"]).member["id"]
        for name in ("edge-1", "edge-2")
    ]
    with app_env.state.db.session() as s:
        return s.get(Member, made[0]), s.get(Member, made[1])


def test_backup_age_is_each_members_newest_completed_backup_per_kind(app_env, two_members):
    edge_1, edge_2 = two_members
    with app_env.state.db.session() as s:
        s.add_all(
            [
                _snapshot(edge_1, "haproxy", "completed", 7200),
                _snapshot(edge_1, "haproxy", "completed", 1800),
                _snapshot(edge_1, "haproxy", "failed", 60),
                _snapshot(edge_1, "haproxy", "running", 5),
                _snapshot(edge_1, "ufw", "completed", 3 * 86400),
            ]
        )
    seen = scrape(app_env.client)
    age = seen.value("serverctl_backup_age_seconds", pool="edge", member="edge-1", kind="haproxy")
    # Seconds of the test's own run may pass between writing and scraping; the clock may jump.
    assert age is not None and 1800 <= age < 1800 + 120
    ufw = seen.value("serverctl_backup_age_seconds", pool="edge", member="edge-1", kind="ufw")
    assert ufw is not None and 3 * 86400 <= ufw < 3 * 86400 + 120
    # No completed backup: no series (an alert on age cannot fire for a member never backed up).
    assert seen.value("serverctl_backup_age_seconds", member="edge-2") is None
    # A deleted member's snapshots are kept for rebuilds, but leave the metric.
    app_env.state.pools.delete_member(SYSTEM, edge_1.pool_id, edge_1.id)
    assert scrape(app_env.client).value("serverctl_backup_age_seconds", member="edge-1") is None


HOSTILE_POOL = 'evil"} 1\nserverctl_injected{x="1'
HOSTILE_HOST = 'host\\"\n# TYPE serverctl_members counter\nx'


def test_hostile_pool_and_member_names_are_escaped_not_injected(app_env, two_members):
    """Names no validation lets in today, written straight into the database: the exposition
    must still parse to exactly the same labels (prometheus_client escapes \\, " and newline)."""
    edge_1, _ = two_members
    with app_env.state.db.session() as s:
        s.get(Pool, edge_1.pool_id).name = HOSTILE_POOL
        s.get(Member, edge_1.id).hostname = HOSTILE_HOST
        s.add(_snapshot(edge_1, "haproxy", "completed", 10))
    seen = scrape(app_env.client)
    assert "serverctl_injected" not in seen.samples
    for line in seen.text.splitlines():
        assert line.startswith(("# HELP ", "# TYPE ", "serverctl_", "process_")), line
    assert seen.families["serverctl_members"].type == "gauge"
    assert seen.total("serverctl_members", pool=HOSTILE_POOL) == 2
    assert seen.value("serverctl_failovers_total", pool=HOSTILE_POOL, trigger="manual") == 0
    assert (
        seen.value("serverctl_backup_age_seconds", pool=HOSTILE_POOL, member=HOSTILE_HOST)
        is not None
    )


# -- a real fleet ------------------------------------------------------------------------------


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    server = start_server(tmp_path / "cp")
    try:
        with Fleet(tmp_path / "fleet", server) as built:
            built.add_member("edge-1", "127.0.0.2")
            built.add_member("edge-2", "127.0.0.3")
            yield built
    finally:
        stop_process(server.process)


def _heartbeat(url: str, secret: str, hostname: str, source: str) -> int:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, base_url=url, timeout=10) as client:
        answer = client.post(
            "/api/agents/heartbeat",
            json={
                "ip": source,
                "hostname": hostname,
                "version": "0.1.0",
                "haproxy": {"monitored": True, "active": True},
            },
            headers={"Authorization": f"Bearer {secret}"},
        )
    return answer.status_code


def _until(fleet: Fleet, check: Any, what: str, timeout: float = 15) -> Scrape:
    """Scrape until `check(scrape)` holds; the last scrape."""
    assert fleet.api is not None
    api = fleet.api

    def ready() -> Scrape | None:
        seen = scrape(api)
        return seen if check(seen) else None

    found: Scrape = wait_until(ready, timeout, interval=0.2, what=what)
    return found


def test_a_real_fleet_moves_every_metric(fleet: Fleet) -> None:
    assert fleet.api is not None
    edge_1, edge_2 = fleet.members
    url = fleet.server.url

    # Heartbeats: the two agents are accepted; refusals are counted by reason.
    seen = _until(
        fleet, lambda s: s.value("serverctl_heartbeats_received_total") >= 4, "heartbeats"
    )
    assert seen.value("serverctl_process_resident_memory_bytes") is None
    assert seen.value("process_resident_memory_bytes") > 0
    before = {
        r: seen.value("serverctl_heartbeats_rejected_total", reason=r)
        for r in ("token", "source_ip", "hostname")
    }
    assert _heartbeat(url, "not-a-secret", "edge-1", "127.0.0.1") == 401
    assert _heartbeat(url, edge_1.secret, "edge-1", "127.0.0.9") == 403
    assert _heartbeat(url, edge_1.secret, "edge-1", "127.0.0.9") == 403
    assert _heartbeat(url, edge_1.secret, "somebody-else", "127.0.0.2") == 401
    seen = scrape(fleet.api)
    moved = {
        r: seen.value("serverctl_heartbeats_rejected_total", reason=r) - before[r] for r in before
    }
    assert moved == {"token": 1, "source_ip": 2, "hostname": 1}
    assert seen.value("serverctl_members", pool="edge", role="active", health="healthy") == 1
    assert seen.value("serverctl_members", pool="edge", role="standby", health="healthy") == 1

    # Linking DNS publishes the record: one update at PowerDNS, with its latency.
    fleet.link_dns()
    seen = _until(
        fleet,
        lambda s: s.value("serverctl_dns_updates_total", provider="powerdns", outcome="ok"),
        "the DNS update counted",
    )
    assert seen.value("serverctl_dns_updates_total", provider="powerdns", outcome="error") == 0
    count = seen.value("serverctl_dns_update_seconds_count", provider="powerdns")
    assert count == seen.value("serverctl_dns_updates_total", provider="powerdns", outcome="ok")
    assert 0 < seen.value("serverctl_dns_update_seconds_sum", provider="powerdns") < 30

    # A cutover is a failover event of its pool, with its trigger; its DNS update is counted.
    assert seen.value("serverctl_failovers_total", pool="edge", trigger="cutover") == 0
    fleet.call("POST", f"{fleet.pool_url}/cutover")
    seen = _until(
        fleet,
        lambda s: s.value("serverctl_dns_updates_total", provider="powerdns", outcome="ok") >= 2,
        "the cutover's DNS update counted",
    )
    assert seen.value("serverctl_failovers_total", pool="edge", trigger="cutover") == 1
    assert seen.value("serverctl_failovers_total", pool="edge", trigger="automatic") == 0

    # A real backup of the new active member: its job by type and state, and its age.
    queued = fleet.call("POST", f"{fleet.pool_url}/members/{edge_2.id}/backups", {}, expect=202)
    seen = _until(
        fleet,
        lambda s: (
            s.total("serverctl_jobs", type="haproxy.backup", state="pending") == 0
            and s.total("serverctl_jobs", type="haproxy.backup", state="running") == 0
            and s.total("serverctl_jobs", type="haproxy.backup") == 1
        ),
        "the backup job to end",
        timeout=90,
    )
    assert fleet.call("GET", f"/api/jobs/{queued['job_id']}")["state"] == "completed"
    assert seen.value("serverctl_jobs", type="haproxy.backup", state="completed") == 1
    age = seen.value("serverctl_backup_age_seconds", pool="edge", member="edge-2", kind="haproxy")
    assert age is not None and 0 <= age < 120
    assert seen.value("serverctl_backup_age_seconds", member="edge-1") is None

    # edge-1 (now the standby) loses HAProxy, then its agent: unhealthy, and a job stays queued.
    edge_1.haproxy.kill()
    _until(
        fleet,
        lambda s: s.value("serverctl_members", pool="edge", role="standby", health="unhealthy"),
        "edge-1 unhealthy",
    )
    edge_1.agent.stop()
    fleet.call("POST", f"{fleet.pool_url}/members/{edge_1.id}/jobs", {"type": "haproxy.validate"})
    seen = scrape(fleet.api)
    assert seen.value("serverctl_jobs", type="haproxy.validate", state="pending") == 1
    assert seen.value("serverctl_members", pool="edge", role="standby", health="unhealthy") == 1
    assert seen.value("serverctl_members", pool="edge", role="active", health="healthy") == 1

    # The DNS server goes away: publishing the record again fails, and that is counted too.
    assert fleet.pdns is not None
    fleet.pdns.stop()
    fleet.call("POST", f"{fleet.pool_url}/members/{edge_2.id}/activate")
    seen = _until(
        fleet,
        lambda s: s.value("serverctl_dns_updates_total", provider="powerdns", outcome="error"),
        "the failed DNS update counted",
    )
    attempts = seen.value("serverctl_dns_update_seconds_count", provider="powerdns")
    assert attempts == seen.total("serverctl_dns_updates_total", provider="powerdns")
