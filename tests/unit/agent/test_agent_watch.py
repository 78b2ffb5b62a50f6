"""The HAProxy watcher between heartbeats (haproxy_watch.py) and its part in the heartbeat loop:
a cheap tick, a beat at once when the state changes, none when it does not."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from agent_fakes import KEY

from balctl import proc
from balctl.config import AgentConfig
from balctl.haproxy_probe import Reading
from balctl.haproxy_watch import CONFIRM_MAX_S, CONFIRM_S, HaproxyWatch
from balctl.heartbeat import HeartbeatLoop
from balctl.paths import HostPaths

UP = {"monitored": True, "active": True, "source": "pidfile"}
DOWN = {"monitored": True, "active": False, "source": "pidfile"}


def up(pid: int = 100, cheap: bool = True) -> Reading:
    return Reading({**UP, "source": "pidfile" if cheap else "systemd"}, pid, cheap)


def down(pid: int | None = 100, cheap: bool = True) -> Reading:
    return Reading({**DOWN, "source": "pidfile" if cheap else "systemd"}, pid, cheap)


class FakeHost:
    """The full check answers `reading` (or the next of `script`); `processes` maps a live pid to
    its start time; `sleep` only records (and lets a test change the world meanwhile)."""

    def __init__(self, reading: Reading) -> None:
        self.reading = reading
        self.script: list[Reading] = []
        self.processes: dict[int, str] = {100: "5000"}
        self.reads = 0
        self.identified = 0
        self.slept: list[float] = []
        self.now = 0.0

    def read(self) -> Reading:
        self.reads += 1
        if self.script:
            self.reading = self.script.pop(0)
        return self.reading

    def identify(self, pid: int) -> str | None:
        self.identified += 1
        return self.processes.get(pid)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def watch(self) -> HaproxyWatch:
        return HaproxyWatch(self.read, self.identify, self.sleep, lambda: self.now)


def test_a_tick_with_the_same_process_alive_is_cheap_and_changes_nothing() -> None:
    host = FakeHost(up())
    watch = host.watch()
    assert watch.probe() == UP
    assert watch.watched_pid == 100
    reads = host.reads
    assert not any(watch.changed() for _ in range(50))
    assert host.reads == reads  # no full check: only the process was looked at
    assert host.slept == []


def test_a_dead_process_is_a_change_confirmed_once_then_carried_by_the_beat() -> None:
    host = FakeHost(up())
    watch = host.watch()
    watch.probe()
    del host.processes[100]  # SIGKILL: the pidfile still names the dead pid
    host.reading = down(100)
    assert watch.changed() is True
    assert host.slept == [CONFIRM_S]  # read again once, after CONFIRM_S, and it agreed
    assert watch.watched_pid is None
    assert watch.probe() == DOWN  # the beat's own check believes it without waiting again
    assert host.slept == [CONFIRM_S]
    assert watch.changed() is False  # sent: no further beat for the same state


def test_a_recycled_pid_is_not_mistaken_for_haproxy() -> None:
    host = FakeHost(up())
    watch = host.watch()
    watch.probe()
    host.processes[100] = "9999"  # another process, started later, got the same pid
    host.reading = down(100)
    assert watch.changed() is True


def test_a_pidfile_reload_is_not_a_change() -> None:
    # haproxy -sf: the old process exits; for a few ms the pidfile is empty, then names the new.
    host = FakeHost(up(100))
    watch = host.watch()
    watch.probe()
    del host.processes[100]
    host.processes[200] = "6000"
    host.script = [down(None), up(200)]
    assert watch.changed() is False
    assert host.slept == [CONFIRM_S]
    assert watch.watched_pid == 200  # the new process is watched from now on
    reads = host.reads
    assert watch.changed() is False
    assert host.reads == reads


def test_the_old_process_exiting_after_the_new_pid_was_written_is_not_a_change() -> None:
    host = FakeHost(up(100))
    watch = host.watch()
    watch.probe()
    del host.processes[100]
    host.processes[200] = "6000"
    host.reading = up(200)
    assert watch.changed() is False
    assert host.slept == []  # nothing to confirm: it is active
    assert watch.watched_pid == 200


def test_readings_that_keep_changing_are_confirmed_within_the_limit() -> None:
    host = FakeHost(up())
    watch = host.watch()
    watch.probe()
    del host.processes[100]
    host.script = [down(n) for n in range(1000, 1100)]  # never the same twice
    assert watch.changed() is True
    assert CONFIRM_MAX_S <= sum(host.slept) <= CONFIRM_MAX_S + CONFIRM_S + 1e-9


def test_with_haproxy_down_each_tick_reads_the_pidfile_and_a_start_is_a_change() -> None:
    host = FakeHost(down(None))
    watch = host.watch()
    assert watch.probe() == DOWN
    assert [watch.changed() for _ in range(3)] == [False, False, False]
    assert host.reads == 4  # no process to watch: the (fork-free) pidfile is read every tick
    host.processes[300] = "7000"
    host.reading = up(300)
    assert watch.changed() is True
    assert host.slept == []  # starting again needs no confirmation
    assert watch.watched_pid == 300


def test_under_systemd_without_a_main_pid_ticks_leave_it_to_the_beat() -> None:
    host = FakeHost(down(None, cheap=False))
    watch = host.watch()
    watch.probe()
    host.reading = up(300, cheap=False)
    assert watch.changed() is False
    assert host.reads == 1  # systemctl is not run between beats


def test_under_systemd_the_main_pid_is_watched() -> None:
    host = FakeHost(up(100, cheap=False))
    watch = host.watch()
    watch.probe()
    assert watch.changed() is False
    del host.processes[100]
    host.reading = down(None, cheap=False)  # MainPID=0, ActiveState=failed
    assert watch.changed() is True


def test_a_change_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    host = FakeHost(up())
    watch = host.watch()
    watch.probe()
    del host.processes[100]
    host.reading = down(100)
    with caplog.at_level("INFO", logger="balctl"):
        watch.changed()
        watch.probe()
        watch.changed()
    assert [r.getMessage() for r in caplog.records] == [
        "HAProxy is not running (source pidfile, pid 100)"
    ]


# -- process_start: the cheap check itself -----------------------------------------------------


def test_process_start_identifies_a_live_process_and_not_a_dead_one() -> None:
    mine = proc.process_start(os.getpid())
    assert mine and mine.isdigit()
    assert proc.process_start(os.getpid()) == mine
    assert proc.process_start(2**22 + 1) is None
    assert proc.process_start(0) is None


def test_process_start_counts_a_zombie_as_dead() -> None:
    child = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        # Not waited for yet: once it exits it stays a zombie.
        while proc.process_start(child.pid) is not None:
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.01)
        assert Path(f"/proc/{child.pid}").exists()
    finally:
        child.wait()


# -- the heartbeat loop: a beat at once on a change, no extra beat otherwise -------------------


class FakeWatch:
    """Stands in for HaproxyWatch: a tick reports a change once after `stop_haproxy()`, or on
    every tick while `flapping`."""

    def __init__(self) -> None:
        self.active = True
        self.flapping = False
        self.pending = False
        self.ticks = 0
        self.lock = threading.Lock()

    def probe(self) -> dict[str, Any]:
        with self.lock:
            return {**UP, "active": self.active}

    def changed(self) -> bool:
        with self.lock:
            self.ticks += 1
            if self.flapping:
                self.active = not self.active
                return True
            pending, self.pending = self.pending, False
            return pending

    def stop_haproxy(self) -> None:
        with self.lock:
            self.active = False
            self.pending = True


class RecordingClient:
    origin = "http://127.0.0.1:9"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.sent: list[tuple[float, dict[str, Any]]] = []

    def post_json(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.sent.append((time.monotonic(), body))
        return 200, {"ok": True, "jobs": [], "heartbeat_interval_s": self.interval}


def _run_loop(
    tmp_path: Path, watch: FakeWatch, probe_interval: float = 0.02, interval: float = 30
) -> tuple[RecordingClient, threading.Event, threading.Thread]:
    cfg = AgentConfig(
        "http://127.0.0.1:9",
        KEY,
        "edge-1",
        public_ip="203.0.113.7",
        probe_interval_s=probe_interval,
    )
    client = RecordingClient(interval)
    loop = HeartbeatLoop(
        cfg,
        client,  # type: ignore[arg-type]
        paths=HostPaths.under(str(tmp_path)),
        watch=watch,  # type: ignore[arg-type]
    )
    stop = threading.Event()
    worker = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    worker.start()
    return client, stop, worker


def _wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_no_change_means_no_extra_beat(tmp_path: Path) -> None:
    watch = FakeWatch()
    client, stop, worker = _run_loop(tmp_path, watch)
    try:
        _wait_for(lambda: watch.ticks >= 15)
        assert len(client.sent) == 1  # the interval is 30 s: only the first beat
    finally:
        stop.set()
        worker.join(5)
    assert not worker.is_alive()


def test_a_change_sends_a_beat_at_once_carrying_the_new_state(tmp_path: Path) -> None:
    watch = FakeWatch()
    client, stop, worker = _run_loop(tmp_path, watch)
    try:
        _wait_for(lambda: watch.ticks >= 3)
        changed_at = time.monotonic()
        watch.stop_haproxy()
        _wait_for(lambda: len(client.sent) >= 2)
        at, body = client.sent[1]
        assert body["haproxy"]["active"] is False
        assert at - changed_at < 0.5  # one probe tick (0.02 s) plus the beat, not 30 s
        ticks = watch.ticks
        _wait_for(lambda: watch.ticks >= ticks + 10)
        assert len(client.sent) == 2  # back to the 30 s interval
    finally:
        stop.set()
        worker.join(5)


def test_a_flapping_haproxy_costs_at_most_one_beat_per_tick(tmp_path: Path) -> None:
    watch = FakeWatch()
    client, stop, worker = _run_loop(tmp_path, watch)
    try:
        _wait_for(lambda: watch.ticks >= 1)
        watch.flapping = True
        time.sleep(0.3)
    finally:
        stop.set()
        worker.join(5)
    assert watch.ticks >= 3
    assert len(client.sent) <= watch.ticks + 1
    # Each beat is one tick apart at least: no burst of beats for one change.
    times = [at for at, _ in client.sent]
    assert all(b - a >= 0.015 for a, b in zip(times[1:], times[2:], strict=False))


def test_the_probe_interval_paces_the_ticks(tmp_path: Path) -> None:
    watch = FakeWatch()
    client, stop, worker = _run_loop(tmp_path, watch, probe_interval=0.1)
    try:
        time.sleep(0.55)
    finally:
        stop.set()
        worker.join(5)
    assert 2 <= watch.ticks <= 6  # never faster than the interval (5 in 0.55 s at best)
    assert len(client.sent) == 1


def test_a_failing_watch_does_not_stop_the_beats(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    watch = FakeWatch()

    def broken() -> bool:
        watch.ticks += 1
        raise RuntimeError("bug")

    watch.changed = broken  # type: ignore[method-assign]
    with caplog.at_level("ERROR", logger="balctl"):
        client, stop, worker = _run_loop(tmp_path, watch, interval=0.2)
        try:
            _wait_for(lambda: len(client.sent) >= 3 and watch.ticks >= 10)
        finally:
            stop.set()
            worker.join(5)
    # Logged once, not on every tick.
    assert len([r for r in caplog.records if "checking HAProxy" in r.getMessage()]) == 1
