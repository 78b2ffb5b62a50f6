"""Soak: 1,000 simulated members heartbeating about once a second against a real control plane.

SERVERCTL_SOAK_S seconds (60 in `make test`, 300 in `make soak`) of a realistic mix on a real
`serverctl serve` with SQLite: every member's heartbeat with a `show stat` summary every fifth
beat, members whose HAProxy stops and starts now and then (health changes the control plane
writes and evaluates failover for, in pools with automatic failover on and off), jobs queued by
an operator and completed by their members, and an operator reading the REST API, the web UI
and /metrics meanwhile.

It must end with no error of any kind (every answer a 200 or the documented 202, no connection
error, nothing logged at ERROR), every job completed, every heartbeat counted, and the server's
resident memory after the warm-up (the first fifth of the run, when every member has sent a few
beats) growing by less than 10 % to the end.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from support.heartbeat_load import HeartbeatLoad
from support.server import ServerProcess, start_server, stop_process
from support.simulated_members import SimulatedMember, seed_simulated
from support.util import wait_until


def _soak_seconds() -> float:
    raw = os.environ.get("SERVERCTL_SOAK_S", "60")
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"SERVERCTL_SOAK_S={raw!r}: give the soak's length in seconds") from None
    if seconds < 10:
        raise ValueError(f"SERVERCTL_SOAK_S={raw!r}: a soak shorter than 10 s measures nothing")
    return seconds


SOAK_S = _soak_seconds()
MEMBERS = 1000
PER_POOL = 100
WARM_UP_SHARE = 0.2
MAX_RSS_GROWTH = 0.10
# A member's HAProxy stops for this long, one member every FLIP_EVERY_S.
FLIP_EVERY_S, FLIP_DOWN_S = 2.0, 3.0
# Jobs queued at these shares of the run, JOBS_PER_ROUND members each.
JOB_ROUNDS, JOBS_PER_ROUND = (0.3, 0.5, 0.7), 3

pytestmark = [pytest.mark.soak, pytest.mark.timeout(SOAK_S + 300)]


@pytest.fixture
def seeded(tmp_path: Path):
    data_dir = tmp_path / "cp-data"
    members = seed_simulated(data_dir, MEMBERS, per_pool=PER_POOL)
    server = start_server(tmp_path, data_dir=data_dir)
    try:
        yield server, members
    finally:
        stop_process(server.process)


def flip_target(n: int) -> int:
    """The n-th member whose HAProxy stops: alternately a pool's active member (the first one
    made) and a standby, spread over the pools."""
    if n % 2 == 0:
        return (n // 2 * PER_POOL) % MEMBERS
    return (n * 37) % MEMBERS


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


class Operator:
    """An operator at work during the soak: REST reads, a pool's page in the browser with its
    live refresh, /metrics, and now and then a job queued. Every answer is checked."""

    def __init__(self, server: ServerProcess, members: list[SimulatedMember]) -> None:
        self.members = members
        self.api = server.api()
        self.browser = httpx.Client(base_url=server.url, follow_redirects=True, timeout=10)
        signed_in = self.browser.post(
            "/login", data={"name": "admin", "password": server.admin_password}
        )
        assert "Log out" in signed_in.text, "the web UI login failed"
        self.requests = 0
        self.slowest_s, self.slowest_path = 0.0, ""
        self.failures: list[str] = []
        self.jobs: list[int] = []

    def close(self) -> None:
        self.api.close()
        self.browser.close()

    def check(self, answer: httpx.Response, expected: int = 200) -> httpx.Response:
        self.requests += 1
        if answer.status_code != expected:
            self.failures.append(f"{answer.request.url.path}: {answer.status_code} {answer.text}")
        return answer

    def read(self, step: int) -> None:
        member = self.members[(step * 97) % len(self.members)]
        pool, mid = member.pool_id, member.member_id
        reads = (
            (self.api, "/api/pools"),
            (self.api, f"/api/pools/{pool}/members/{mid}"),
            (self.browser, f"/pools/{pool}"),
            (self.browser, f"/pools/{pool}/cards"),
            (self.api, "/metrics"),
        )
        client, path = reads[step % len(reads)]
        sent = time.monotonic()
        try:
            self.check(client.get(path))
        except httpx.HTTPError as exc:
            self.failures.append(f"GET {path}: {exc!r}")
        took = time.monotonic() - sent
        if took > self.slowest_s:
            self.slowest_s, self.slowest_path = took, path

    def queue_jobs(self, round_number: int) -> None:
        for n in range(JOBS_PER_ROUND):
            member = self.members[(round_number * 331 + n * 101) % len(self.members)]
            path = f"/api/pools/{member.pool_id}/members/{member.member_id}/jobs"
            answer = self.check(self.api.post(path, json={"type": "haproxy.validate"}), 202)
            if answer.status_code == 202:
                self.jobs.append(answer.json()["job_id"])

    def job_states(self) -> dict[int, str]:
        return {job: self.api.get(f"/api/jobs/{job}").json()["state"] for job in self.jobs}

    def heartbeats_counted(self) -> int:
        text = self.check(self.api.get("/metrics")).text
        found = re.search(r"^serverctl_heartbeats_received_total (\S+)$", text, re.MULTILINE)
        assert found, "no serverctl_heartbeats_received_total in /metrics"
        return int(float(found.group(1)))


def drive(server: ServerProcess, load: HeartbeatLoad, operator: Operator) -> tuple[int, int]:
    """The soak's own thread while the load runs: an operator read every half second or so,
    a HAProxy flip every FLIP_EVERY_S, the job rounds. Returns the server's RSS in kB after
    the warm-up and at the end."""
    started = time.monotonic()
    warm_rss = 0
    next_flip, flips, step = started, 0, 0
    rounds = list(JOB_ROUNDS)
    while (elapsed := time.monotonic() - started) < SOAK_S:
        if not warm_rss and elapsed >= WARM_UP_SHARE * SOAK_S:
            warm_rss = rss_kb(server.process.pid)
        if rounds and elapsed >= rounds[0] * SOAK_S:
            operator.queue_jobs(len(JOB_ROUNDS) - len(rounds))
            rounds.pop(0)
        if time.monotonic() >= next_flip:
            load.flip(flip_target(flips), FLIP_DOWN_S)
            flips += 1
            next_flip += FLIP_EVERY_S
        operator.read(step)
        step += 1
        time.sleep(0.5)
    return warm_rss, rss_kb(server.process.pid)


def test_a_thousand_members_heartbeating_for_the_soak_leave_no_error_and_no_leak(seeded, figures):
    server, members = seeded
    operator = Operator(server, members)
    try:
        # Automatic failover on in half of the pools: flips there run the promotion rules too
        # (no DNS linked, so they alert rather than move a record).
        for pool_id in sorted({m.pool_id for m in members})[::2]:
            put = operator.api.put(f"/api/pools/{pool_id}/failover", json={"automatic": True})
            operator.check(put)
        load = HeartbeatLoad(server.url, members)
        load.start()
        try:
            warm_rss, end_rss = drive(server, load, operator)
        finally:
            done = load.stop()
        wait_until(
            lambda: set(operator.job_states().values()) == {"completed"},
            15,
            what="every queued job completed",
        )
        counted = operator.heartbeats_counted()
    finally:
        operator.close()

    assert warm_rss, "the run ended before the warm-up did"
    growth = end_rss / warm_rss - 1
    figures.update(
        duration_s=round(done.ended - done.started, 1),
        members=len(members),
        heartbeats=done.heartbeats,
        heartbeats_per_s=round(done.rate),
        target_per_s=len(members),
        p50_ms=round(done.latency_ms(0.5), 1),
        p99_ms=round(done.latency_ms(0.99), 1),
        errors=done.error_count,
        haproxy_flips=done.flips,
        jobs_completed=done.completions,
        operator_requests=operator.requests,
        operator_slowest_s=round(operator.slowest_s, 2),
        operator_slowest_path=operator.slowest_path,
        rss_warm_mb=round(warm_rss / 1024, 1),
        rss_end_mb=round(end_rss / 1024, 1),
        rss_growth_percent=round(100 * growth, 2),
    )
    assert done.error_count == 0, (dict(done.errors), done.error_samples)
    # Not a speed target (the machine is shared): a floor that catches a stalled server.
    assert done.rate >= 0.2 * len(members), f"only {done.rate:.0f} heartbeats/s"
    assert not operator.failures, operator.failures[:10]
    assert done.completions == len(operator.jobs) == len(JOB_ROUNDS) * JOBS_PER_ROUND
    assert sorted(done.jobs_received) == sorted(operator.jobs), "a job was handed out twice"
    # Every answered heartbeat was counted once by the server (nothing lost, nothing doubled).
    assert counted == done.heartbeats
    log = server.log()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    assert growth < MAX_RSS_GROWTH, (
        f"server RSS grew {100 * growth:.1f} % (from {warm_rss} kB after the warm-up "
        f"to {end_rss} kB at the end)"
    )
