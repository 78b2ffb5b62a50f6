"""The control plane killed with SIGKILL while members heartbeat and jobs are queued, claimed and
running, then started again on the same data directory and port: no job is lost or stuck, none
runs twice, heartbeats resume, members are healthy again, and nothing fails over because the
control plane itself was away.

A real fleet: two members, each a real agent beside a real haproxy, a pool linked to PowerDNS
with automatic failover on. Each agent finds haproxy through a shim (support.haproxy_shim) that
logs every call and makes `haproxy -c` last a second, so validate and reload jobs are running
when the kill comes. What ran is read from the agents' own logs ("running job N") and the
shims' logs (each reload job starts haproxy exactly once).
"""

from __future__ import annotations

import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2 as httpx
import pytest

from support.fleet import Fleet, FleetMember
from support.fleet_jobs import queue_job, results, runs, wait_final
from support.haproxy_shim import HaproxyShim
from support.server import ServerProcess, start_server, stop_process
from support.util import wait_until

pytestmark = pytest.mark.timeout(300)

EDGE_1, EDGE_2 = "127.0.0.2", "127.0.0.3"
DELAY_S = 10


@dataclass
class World:
    fleet: Fleet
    shims: dict[str, HaproxyShim]
    servers: list[ServerProcess]
    tmp: Path

    @property
    def members(self) -> list[FleetMember]:
        return self.fleet.members

    def kill_server(self) -> None:
        process = self.servers[-1].process
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def start_again(self) -> ServerProcess:
        """The same data directory and port: the agents keep their configured URL."""
        last = self.servers[-1]
        port = urlsplit(last.url).port
        again = start_server(
            self.tmp / f"cp-{len(self.servers)}", data_dir=last.data_dir, port=port
        )
        self.servers.append(again)
        return again

    def crash(self, down_s: float = 0.5) -> float:
        """SIGKILL, stay down `down_s`, start again; the monotonic time it answered again."""
        self.kill_server()
        time.sleep(down_s)
        self.start_again()
        return time.monotonic()

    def jobs(self) -> dict[int, dict[str, Any]]:
        listed = self.fleet.call("GET", f"{self.fleet.pool_url}/jobs?limit=500")["items"]
        return {j["id"]: j for j in listed}

    def logs(self) -> str:
        return "\n".join(server.log() for server in self.servers)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("cpkill")
    shims = {
        name: HaproxyShim(Path(tempfile.mkdtemp(dir="/tmp", prefix="shim-")))
        for name in ("edge-1", "edge-2")
    }
    servers = [start_server(tmp / "cp-0")]
    try:
        with Fleet(tmp / "fleet", servers[0]) as fleet:
            fleet.add_member("edge-1", EDGE_1, shims["edge-1"].env())
            fleet.add_member("edge-2", EDGE_2, shims["edge-2"].env())
            fleet.link_dns(ttl=1)
            fleet.wait_for_answer(EDGE_1)
            fleet.set_failover(automatic=True, delay_s=DELAY_S, cooldown_s=0)
            yield World(fleet, shims, servers, tmp)
    finally:
        for server in servers:
            stop_process(server.process)
        for shim in shims.values():
            shim.remove()


def _wait_healthy(world: World, after: float) -> None:
    """Both members healthy, each with a heartbeat received after `after` (monotonic)."""
    fleet = world.fleet

    def fresh(member: FleetMember) -> bool:
        view = fleet.member_view(member)
        age = view["health"]["heartbeat_age_s"]
        return (
            view["health"]["state"] == "healthy"
            and age is not None
            and (age < time.monotonic() - after)
        )

    for member in world.members:
        wait_until(lambda m=member: fresh(m), 30, interval=0.2, what=f"{member.hostname} healthy")


def _no_failover(world: World, active: FleetMember) -> None:
    fleet = world.fleet
    assert fleet.events() == [], fleet.events()
    assert fleet.active_id() == active.id
    assert fleet.answer() == [active.ip]


def _kill_right_after_a_claim(world: World, seen_running: set[int]) -> int:
    """Watch the queue; the moment a job turns running, SIGKILL. The heartbeat answer that
    carried it may or may not have reached the agent."""

    def newly_running() -> int | None:
        for job_id, found in world.jobs().items():
            if found["state"] == "running" and job_id not in seen_running:
                return job_id
        return None

    job_id = wait_until(newly_running, 60, interval=0.02, what="a job to be claimed")
    world.kill_server()
    assert isinstance(job_id, int)
    return job_id


def test_jobs_and_heartbeats_survive_sigkill_and_nothing_runs_twice(
    world: World, figures: dict[str, object]
) -> None:
    fleet = world.fleet
    edge_1, _ = world.members
    for shim in world.shims.values():
        shim.slow_checks(0.5)
    plan = ["haproxy.validate", "haproxy.reload"] * 2
    for member in world.members:
        for job_type in plan:
            queue_job(fleet, member, job_type, timeout_s=60)

    # 1. A job running on each member (the agent inside a slow `haproxy -c`), more queued.
    def running_on_both() -> bool:
        running = {j["member_id"] for j in world.jobs().values() if j["state"] == "running"}
        return running == {m.id for m in world.members}

    wait_until(running_on_both, 30, interval=0.1, what="a running job on each member")
    restarted = world.crash(down_s=1.0)
    _wait_healthy(world, restarted)

    # 2. While operators queue more work, right after a claim.
    seen = {j for j, found in world.jobs().items() if found["state"] != "pending"}
    for member in world.members:
        for job_type in ("haproxy.reload", "haproxy.validate"):
            queue_job(fleet, member, job_type, timeout_s=60)
    _kill_right_after_a_claim(world, seen)
    time.sleep(0.5)
    world.start_again()
    restarted = time.monotonic()

    # Every job ends, and every end is explained.
    jobs = world.jobs()
    assert len(jobs) == 2 * (len(plan) + 2)
    ended = {job_id: wait_final(fleet, job_id, timeout=90) for job_id in jobs}
    for member in world.members:
        ran, reached = runs(member.agent), results(member.agent)
        mine = {j: found for j, found in ended.items() if found["member_id"] == member.id}
        assert max(ran.values()) == 1, f"{member.hostname} ran a job twice: {ran}"
        for job_id, found in mine.items():
            state = found["state"]
            if ran[job_id]:
                # The agent's own result is the one recorded: no result was lost.
                assert state == reached.get(job_id), (job_id, state, reached.get(job_id))
            else:
                # Claimed by a heartbeat whose answer the kill swallowed: failed, not stuck.
                assert state == "failed" and "no longer running" in found["summary"], found
        reloads = [j for j, found in mine.items() if found["type"] == "haproxy.reload"]
        # Each reload job the agent ran started haproxy once: no reload repeated.
        assert world.shims[member.hostname].starts() == sum(ran[j] for j in reloads)
        assert all(ended[j]["state"] == "completed" for j in reloads if ran[j])
    completed = [j for j, found in ended.items() if found["state"] == "completed"]
    assert len(completed) >= len(ended) - 2, ended

    _wait_healthy(world, restarted)
    _no_failover(world, edge_1)
    assert "database is locked" not in world.logs()
    figures.update(
        sigkills=2,
        jobs=len(ended),
        completed=len(completed),
        failed_as_lost=sum(1 for found in ended.values() if found["state"] == "failed"),
        stuck=0,
        ran_twice=0,
        haproxy_reloads=sum(shim.starts() for shim in world.shims.values()),
        failovers=0,
    )
    for shim in world.shims.values():
        shim.slow_checks(0)


def _start_in_background(world: World, starter: threading.Thread) -> float:
    """Start the server again in `starter` (start_server goes on to make an API token once it
    answers); the monotonic time it first answers. The fleet's own token is in the database
    already, so the test carries on from that moment."""
    starter.start()
    wait_until(lambda: _answers(world.fleet), 30, interval=0.05, what="the server to answer")
    return time.monotonic()


def _answers(fleet: Fleet) -> bool:
    assert fleet.api is not None
    try:
        return fleet.api.get("/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _signal(member: FleetMember, sig: signal.Signals) -> None:
    assert member.agent.process is not None
    member.agent.process.send_signal(sig)


def test_an_outage_longer_than_the_failover_delay_promotes_nobody(
    world: World, figures: dict[str, object]
) -> None:
    """Down longer than the failover delay, and the active's agent heard again after the
    standby's: its silence while nobody listened is not a failure (no promotion, DNS stays).
    A host that really died during the outage still fails over, one delay after the restart."""
    fleet = world.fleet
    edge_1, edge_2 = world.members
    assert fleet.events() == []
    world.kill_server()
    # Both agents wait (as their backoff would); then edge-2 is heard first, edge-1 a moment
    # later: without the rule, the evaluator's ticks in between would promote edge-2.
    for member in (edge_1, edge_2):
        _signal(member, signal.SIGSTOP)
    starter = threading.Thread(target=world.start_again)
    try:
        time.sleep(DELAY_S + 2)
        _start_in_background(world, starter)
        _signal(edge_2, signal.SIGCONT)
        wait_until(lambda: fleet.health(edge_2) == "healthy", 15, interval=0.1, what="edge-2")
        time.sleep(1.5)
    finally:
        for member in (edge_1, edge_2):
            _signal(member, signal.SIGCONT)
        if starter.ident is not None:
            starter.join(60)
    _wait_healthy(world, time.monotonic() - 1)
    _no_failover(world, edge_1)

    # Now the active host dies while the control plane is down.
    world.kill_server()
    edge_1.stop()  # agent and haproxy
    time.sleep(1)
    starter = threading.Thread(target=world.start_again)
    back = _start_in_background(world, starter)
    fleet.wait_for_answer(EDGE_2, timeout=DELAY_S + 10)
    took = time.monotonic() - back
    starter.join(60)
    events = fleet.events()
    assert len(events) == 1 and events[0]["trigger"] == "automatic", events
    assert "no heartbeat" in events[0]["reason"]
    # Silence counts from when the control plane could hear again.
    assert DELAY_S - 1 <= took <= DELAY_S + 5, f"promoted {took:.1f} s after the restart"
    figures.update(
        outage_s=DELAY_S + 2,
        failover_delay_s=DELAY_S,
        promotions_after_outage=0,
        dead_host_promoted_after_restart_s=round(took, 1),
    )
    edge_1.start()
