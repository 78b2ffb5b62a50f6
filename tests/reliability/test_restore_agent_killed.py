"""An agent killed (SIGKILL) during a restore leaves its host with exactly the old HAProxy set or
exactly the new one, never a mix, once it starts again.

One real member (agent + haproxy) of a real control plane. The agent finds haproxy through a
shim (support.haproxy_shim) that can hold a call at a chosen point, and places restored files
0.3 s apart (BALCTL_RESTORE_STEP_PAUSE_S), so every kill lands where the case says:

- staging: downloaded and extracting, no journal yet;
- swapping: the journal written, some files new, some old;
- checking: `haproxy -c` running on the swapped set;
- after the check: `haproxy -c` has answered (the failing restore: before the rollback);
- before the reload: the check passed, the reload not started;
- during the reload: the new haproxy has taken over, the restore not committed yet.

For a snapshot that passes `haproxy -c` and one that fails it. After each kill the agent is
started again; its start-up recovery must put the old set back byte for byte (contents and
modes), leave haproxy serving the old configuration, and never start haproxy for a set that
failed the check.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import pytest

from support.fleet import Fleet, FleetMember
from support.fleet_jobs import (
    FileSet,
    backup,
    describe,
    haproxy_set,
    job,
    put_set,
    queue_job,
    queue_restore,
    runs,
    wait_final,
    work_folders,
)
from support.haproxy_shim import HaproxyShim
from support.server import start_server, stop_process
from support.util import wait_until

pytestmark = pytest.mark.timeout(240)

EDGE_1 = "127.0.0.2"
OLD_TEXT, NEW_TEXT = "served by edge-1", "served by the snapshot"
BROKEN = "\nfrontend broken\n    bind 127.0.0.1:notaport\n"
CFG, OLD_CONF, EXTRA_CONF, NEW_CONF = (
    "/etc/haproxy/haproxy.cfg",
    "/etc/haproxy/conf.d/old.cfg",
    "/etc/haproxy/conf.d/extra.cfg",
    "/etc/haproxy/conf.d/new.cfg",
)


@dataclass
class RestoreHost:
    fleet: Fleet
    member: FleetMember
    shim: HaproxyShim
    old: FileSet
    new: FileSet
    good_snapshot: int
    broken_snapshot: int


def _backend(name: str) -> bytes:
    return f"backend {name}\n    server s1 127.0.0.1:9\n".encode()


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestoreHost]:
    tmp = tmp_path_factory.mktemp("restore")
    shim = HaproxyShim(Path(tempfile.mkdtemp(dir="/tmp", prefix="shim-")))
    server = start_server(tmp / "cp")
    try:
        with Fleet(tmp / "fleet", server) as fleet:
            env = {**shim.env(), "BALCTL_RESTORE_STEP_PAUSE_S": "0.3"}
            member = fleet.add_member("edge-1", EDGE_1, env)
            original = member.haproxy.config.read_bytes()
            assert OLD_TEXT.encode() in original
            changed = original.replace(OLD_TEXT.encode(), NEW_TEXT.encode())
            # The new set: haproxy.cfg changed, conf.d/new.cfg added, old.cfg and extra.cfg gone.
            new: FileSet = {CFG: (changed, 0o640), NEW_CONF: (_backend("new_be"), 0o644)}
            put_set(member, new)
            good = backup(fleet, member)
            assert good["config_valid"] is True
            put_set(member, {**new, CFG: (changed + BROKEN.encode(), 0o640)})
            broken = backup(fleet, member)
            assert broken["config_valid"] is False
            old: FileSet = {
                CFG: (original, 0o644),
                OLD_CONF: (_backend("old_be"), 0o644),
                EXTRA_CONF: (_backend("extra_be"), 0o600),
            }
            put_set(member, old)
            yield RestoreHost(fleet, member, shim, old, new, good["id"], broken["id"])
    finally:
        stop_process(server.process)
        shim.remove()


# -- kill points --------------------------------------------------------------------------------


def _journal_phase(member: FleetMember) -> str | None:
    """The phase of the unfinished restore's journal; None when there is no journal."""
    for folder in work_folders(member):
        try:
            return str(json.loads((folder / "journal.json").read_text())["phase"])
        except (OSError, ValueError):
            return None
    return None


def _staging(host: RestoreHost) -> None:
    # The archive is being fetched and extracted: a work folder without a journal. Polled
    # tightly: this stretch lasts tens of milliseconds.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        folders = work_folders(host.member)
        if folders and not (folders[0] / "journal.json").exists():
            return
        time.sleep(0.0005)
    raise AssertionError("the restore never reached its staging step")


def _swapping(host: RestoreHost) -> None:
    def mixed() -> bool:
        now = haproxy_set(host.member)
        return now != host.old and now != host.new and _journal_phase(host.member) == "swapping"

    wait_until(mixed, 30, interval=0.01, what="the swap to be half done")


def _held(point: str) -> Callable[[RestoreHost], None]:
    def wait(host: RestoreHost) -> None:
        host.shim.wait_held(point)

    return wait


# (name, shim hold to set before queueing, how to wait for the moment, the journal phase then)
PASSING = [
    ("staging", None, _staging, None),
    ("swapping", None, _swapping, "swapping"),
    ("checking", "check", _held("check"), "checking"),
    ("before-reload", "before-start", _held("before-start"), "reloading"),
    ("during-reload", "after-start", _held("after-start"), "reloading"),
]
FAILING = [
    ("staging", None, _staging, None),
    ("swapping", None, _swapping, "swapping"),
    ("checking", "check", _held("check"), "checking"),
    ("after-check", "after-check", _held("after-check"), "checking"),
]


def _served(member: FleetMember) -> str:
    return httpx.get(f"http://{member.haproxy.bind}/", timeout=5).text.strip()


def _kill_agent(member: FleetMember) -> None:
    assert member.agent.process is not None
    member.agent.process.kill()
    member.agent.process.wait(10)


def _restore_killed(
    host: RestoreHost,
    snapshot_id: int,
    hold: str | None,
    reach: Callable[[RestoreHost], None],
) -> tuple[int, str | None]:
    """Queue the restore, kill the agent at the point, start it again; (job id, the journal's
    phase at the kill)."""
    member = host.member
    put_set(member, host.old)
    if hold is not None:
        host.shim.hold(hold, 60)
    job_id = queue_restore(host.fleet, snapshot_id, member)
    reach(host)
    _kill_agent(member)
    phase = _journal_phase(member)
    host.shim.settle()
    host.shim.reset()
    member.agent.start()
    # The agent recovers before its first heartbeat: wait for the work folder to go.
    wait_until(lambda: not work_folders(member), 30, interval=0.05, what="the agent's recovery")
    return job_id, phase


def _check_old_set_back(host: RestoreHost) -> None:
    current = haproxy_set(host.member)
    assert current == host.old, describe(current, host.old)
    assert host.member.haproxy.alive()
    assert _served(host.member) == OLD_TEXT


def _cancel_the_orphan(host: RestoreHost, job_id: int) -> None:
    # The restarted agent no longer runs the job; cancel it so the member's queue moves on
    # at once (test_a_lost_restore_fails_... waits for the control plane to notice instead).
    answer = host.fleet.call("POST", f"/api/jobs/{job_id}/cancel")
    assert answer["state"] == "cancelled", answer


def _kill_during_restore(
    host: RestoreHost,
    snapshot_id: int,
    hold: str | None,
    reach: Callable[[RestoreHost], None],
    phase: str | None,
) -> int:
    """One case: the kill, the restart, the old set back; how many tries it took. Staging
    lasts tens of milliseconds, which a busy machine can miss: that case gets three tries,
    each checked like any other (a kill that lands later must leave the old set too)."""
    tries = 3 if phase is None else 1
    for attempt in range(1, tries + 1):
        job_id, seen = _restore_killed(host, snapshot_id, hold, reach)
        _check_old_set_back(host)
        _cancel_the_orphan(host, job_id)
        if seen == phase:
            return attempt
    raise AssertionError(f"the kill landed while {seen}, not {phase}")


# (which snapshot, the case's name, hold, reach, phase)
CASES = [("passing", *case) for case in PASSING] + [("failing", *case) for case in FAILING]


@pytest.mark.parametrize(
    ("snapshot", "hold", "reach", "phase"),
    [(case[0], *case[2:]) for case in CASES],
    ids=[f"{case[0]}-{case[1]}" for case in CASES],
)
def test_an_agent_killed_during_a_restore_leaves_exactly_the_old_set(
    host: RestoreHost,
    snapshot: str,
    hold: str | None,
    reach: Callable[[RestoreHost], None],
    phase: str | None,
    figures: dict[str, object],
) -> None:
    pid, starts = host.member.haproxy.pid(), host.shim.starts()
    snapshot_id = host.good_snapshot if snapshot == "passing" else host.broken_snapshot
    tries = _kill_during_restore(host, snapshot_id, hold, reach, phase)
    if snapshot == "failing":
        # A set that fails the check never reaches a running haproxy: no start, no reload.
        assert host.shim.starts() == starts
        assert host.member.haproxy.pid() == pid
    figures.update(journal_phase=phase, kills=tries, host_files="old set, byte for byte")


def test_unkilled_restores_end_with_the_new_set_or_the_old_one(host: RestoreHost) -> None:
    member = host.member
    put_set(member, host.old)
    failed = wait_final(host.fleet, queue_restore(host.fleet, host.broken_snapshot, member))
    assert failed["state"] == "failed", failed
    _check_old_set_back(host)
    done = wait_final(host.fleet, queue_restore(host.fleet, host.good_snapshot, member))
    assert done["state"] == "completed", done
    current = haproxy_set(member)
    assert current == host.new, describe(current, host.new)
    assert _served(member) == NEW_TEXT
    # Back to the old set, served, for the next case.
    put_set(member, host.old)
    reloaded = wait_final(host.fleet, queue_job(host.fleet, member, "haproxy.reload"))
    assert reloaded["state"] == "completed", reloaded
    _check_old_set_back(host)


def test_a_lost_restore_fails_and_the_members_queue_moves_on(host: RestoreHost) -> None:
    """No operator steps in: the control plane sees the restarted agent no longer holds the job
    (its heartbeats' jobs_running) and fails it; the next job then runs. Nothing ran twice."""
    member = host.member
    job_id, _ = _restore_killed(host, host.good_snapshot, None, _swapping)
    _check_old_set_back(host)
    follow_up = queue_job(host.fleet, member, "haproxy.validate")
    lost = wait_final(host.fleet, job_id, timeout=60)
    assert lost["state"] == "failed", lost
    assert "no longer running" in lost["summary"]
    assert wait_final(host.fleet, follow_up)["state"] == "completed"
    ran = runs(member.agent)
    assert ran and max(ran.values()) == 1, f"jobs run more than once: {ran}"
    assert all(job(host.fleet, j)["state"] != "running" for j in ran)
