"""The journaled swap: a crash at any point of a restore leaves, after recover(), exactly the old
set of files (or, once committed, exactly the new one); a real kill mid-swap too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_backup_kit import (
    ObjectStore,
    fingerprint,
    restore_params,
    snapshot_then_reset,
    tls_config,
)
from agent_jobs_host import KEY, Host
from agent_jobs_plane import JobsPlane

from balctl import haproxy_ctl
from balctl.archive_extract import stage
from balctl.proc import Deadline
from balctl.restore_plan import plan
from balctl.restore_scope import RestoreScope
from balctl.restore_swap import (
    CHECKING,
    COMMITTED,
    RELOADING,
    SWAPPING,
    Swap,
    _keep,
    recover,
    step_pause,
)
from support.util import wait_until


@pytest.fixture
def store() -> Iterator[ObjectStore]:
    with ObjectStore() as running:
        yield running


def _prepared(host: Host, store: ObjectStore) -> Swap:
    """A restore of a snapshot, staged and planned, its journal not yet written."""
    result = snapshot_then_reset(host, store, tls_config(host, "restored"))
    work = host.paths.restore_dir / "7"
    work.mkdir(parents=True)
    archive = work / "archive.tar.gz"
    archive.write_bytes(store.objects["/snap-1.tar.gz"])
    staged = stage(
        archive,
        result["archive_sha256"],
        result["files"],
        work / "staging",
        RestoreScope(),
        host.paths.root,
    )
    todo = plan(host.paths, staged)
    assert [c.action for c in todo.changes] == ["add", "add", "change", "add", "remove"]
    return Swap(host.paths, work, 7, todo.changes)


def _partial_swaps() -> list[tuple[int, bool]]:
    # (changes fully made, whether the next one got as far as keeping the old file)
    return [(done, half) for done in range(5) for half in (False, True)] + [(5, False)]


@pytest.mark.parametrize(("done", "half"), _partial_swaps())
def test_a_crash_while_swapping_leaves_the_old_set(
    host: Host, store: ObjectStore, done: int, half: bool
) -> None:
    swap = _prepared(host, store)
    before = fingerprint(host.paths)
    swap.write_journal(SWAPPING)
    (swap.work / "kept").mkdir()
    for change in swap.changes[:done]:
        swap._apply(change)
    if half and swap.changes[done].kept and swap.changes[done].action != "remove":
        _keep(host.paths.host(swap.changes[done].target), swap.work / swap.changes[done].kept)
    # ... and the agent dies here. At its next start:
    said = recover(host.paths, host.cfg)

    assert fingerprint(host.paths) == before
    assert not swap.work.exists()
    assert said and "interrupted while swapping" in said[0]


def test_a_crash_while_checking_leaves_the_old_set(host: Host, store: ObjectStore) -> None:
    swap = _prepared(host, store)
    old_pid = host.start()
    before = fingerprint(host.paths)
    swap.write_journal(SWAPPING)
    swap.apply()
    swap.write_journal(CHECKING)
    assert fingerprint(host.paths) != before

    recover(host.paths, host.cfg)

    assert fingerprint(host.paths) == before
    assert host.pid() == old_pid  # nothing had reloaded: nothing reloads now


def test_a_crash_after_the_reload_took_over_reloads_the_old_set(
    host: Host, store: ObjectStore
) -> None:
    swap = _prepared(host, store)
    host.start()
    before = fingerprint(host.paths)
    swap.write_journal(SWAPPING)
    swap.apply()
    swap.write_journal(RELOADING)
    step = haproxy_ctl.reload(host.paths, host.cfg.haproxy_pidfile, Deadline(30))
    assert step.ok, step.summary
    new_pid = host.pid()
    assert host.get().endswith(b"restored\n")

    said = recover(host.paths, host.cfg)

    assert fingerprint(host.paths) == before
    assert any("reloaded HAProxy with the previous files" in line for line in said)
    assert host.pid() != new_pid
    assert host.get().endswith(b"served\n")


def test_a_committed_restore_is_only_cleaned_up(host: Host, store: ObjectStore) -> None:
    swap = _prepared(host, store)
    swap.write_journal(SWAPPING)
    swap.apply()
    swap.write_journal(COMMITTED)
    after = fingerprint(host.paths)

    said = recover(host.paths, host.cfg)

    assert fingerprint(host.paths) == after
    assert not swap.work.exists()
    assert said == ["restore of job 7 had committed; removed its work folder"]


def test_the_agent_undoes_an_interrupted_restore_when_it_starts(
    host: Host, store: ObjectStore, tmp_path: Path
) -> None:
    swap = _prepared(host, store)
    before = fingerprint(host.paths)
    swap.write_journal(SWAPPING)
    swap.apply()
    env = {k: v for k, v in os.environ.items() if k not in ("INVOCATION_ID", "JOURNAL_STREAM")}
    log = tmp_path / "agent.log"
    with JobsPlane() as plane, log.open("wb") as out:
        env.update(
            BALCTL_ROOT=str(host.root),
            BALCTL_SERVER=plane.url,
            BALCTL_KEY=KEY,
            BALCTL_HOSTNAME="edge-1",
            BALCTL_PUBLIC_IP="203.0.113.7",
            BALCTL_HAPROXY_PIDFILE=str(host.pidfile),
            BALCTL_STATS_INTERVAL_S="0.2",
        )
        agent = subprocess.Popen(
            [sys.executable, "-m", "balctl", "run"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            wait_until(
                lambda: any("backup_files" in b["haproxy"] for b in plane.heartbeats),
                20,
                what="a heartbeat with the backup inventory",
            )
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(15)
        beat = next(b for b in plane.heartbeats if "backup_files" in b["haproxy"])
    assert fingerprint(host.paths) == before
    assert not swap.work.exists()
    text = log.read_text()
    assert "rolled back the restore of job 7, interrupted while swapping" in text
    # The inventory describes the old set, which is what is on disk again.
    paths = [f["path"] for f in beat["haproxy"]["backup_files"]["files"]]
    assert paths == ["/etc/haproxy/certs/own.pem", "/etc/haproxy/haproxy.cfg"]


def test_a_staging_without_a_journal_is_removed(host: Host) -> None:
    work = host.paths.restore_dir / "9"
    (work / "staging/etc/haproxy").mkdir(parents=True)
    recover(host.paths, host.cfg)
    assert not work.exists()


_RUN_JOB = """
import json, sys
from balctl.config import AgentConfig
from balctl.jobs.model import Job
from balctl.jobs.runner import JobRunner
from balctl.paths import HostPaths
from balctl.transport import ControlPlaneClient
cfg = AgentConfig(**json.loads(sys.argv[1]))
runner = JobRunner(cfg, ControlPlaneClient(cfg.server, cfg.key), HostPaths.from_env())
done = runner.execute(Job(11, "haproxy.restore", json.loads(sys.argv[2]), 120))
print(done.state, done.summary)
"""


def test_a_kill_in_the_middle_of_a_swap_is_undone_at_the_next_start(
    host: Host, store: ObjectStore
) -> None:
    result = snapshot_then_reset(host, store, tls_config(host, "restored"))
    old_pid = host.start()
    before = fingerprint(host.paths)
    settings = {
        "server": host.cfg.server,
        "key": KEY,
        "hostname": host.cfg.hostname,
        "haproxy_pidfile": host.cfg.haproxy_pidfile,
    }
    env = {**os.environ, "BALCTL_RESTORE_STEP_PAUSE_S": "0.5"}
    params = restore_params(result, store)
    child = subprocess.Popen(
        [sys.executable, "-c", _RUN_JOB, json.dumps(settings), json.dumps(params)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        journal = host.paths.restore_dir / "11" / "journal.json"
        wait_until(lambda: journal.exists(), 20, 0.02, what="the restore's journal")
        # At least two files placed, the swap not finished (five changes, 0.5 s each).
        wait_until(lambda: _placed(host) >= 2, 10, 0.02, what="two files placed")
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(10)
        assert child.stdout is not None
        child.stdout.close()
    assert json.loads(journal.read_text())["phase"] == "swapping"
    assert fingerprint(host.paths) != before  # a mix, for now

    said = recover(host.paths, host.cfg)

    assert fingerprint(host.paths) == before
    assert "interrupted while swapping" in said[0]
    assert host.pid() == old_pid


def _placed(host: Host) -> int:
    added = ("/etc/haproxy/certs/snap.pem", "/etc/haproxy/conf.d/10-snap.cfg")
    return sum(1 for path in added if host.paths.host(path).exists())


def test_pause_env_is_read_leniently() -> None:
    assert step_pause({}) == 0.0
    assert step_pause({"BALCTL_RESTORE_STEP_PAUSE_S": "0.25"}) == 0.25
    assert step_pause({"BALCTL_RESTORE_STEP_PAUSE_S": "soon"}) == 0.0
    assert step_pause({"BALCTL_RESTORE_STEP_PAUSE_S": "-1"}) == 0.0
