"""`balctl run` notices a killed HAProxy between heartbeats: a real agent process watches a real
haproxy through its pidfile, and the control plane stand-in asks for one beat a minute, so every
beat after the first is one the agent sent because HAProxy's state changed."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_jobs_host import HAPROXY, KEY, Host
from agent_jobs_plane import JobsPlane

from balctl.haproxy_probe import read
from balctl.haproxy_watch import HaproxyWatch
from support.util import wait_until

SRC = Path(__file__).resolve().parents[3] / "src"
ROUNDS = 3
RELOADS = 20
# The agent checks every 0.2 s (the default) and confirms a stop 0.05 s later: about 0.15 s on
# average, 0.3 s at worst. The bound leaves room for a loaded test machine.
BOUND_S = 1.5


class SlowBeatPlane(JobsPlane):
    """Asks for a heartbeat a minute, and notes when each one arrived (this process's clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[tuple[float, dict[str, Any]]] = []

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        status, reply = super().answer(path, body)
        if path == "/api/agents/heartbeat":
            self.arrivals.append((time.monotonic(), body))
            reply["heartbeat_interval_s"] = 60
        return status, reply

    def beats(self) -> list[tuple[float, dict[str, Any]]]:
        with self.lock:
            return list(self.arrivals)

    def first_beat_after(self, since: float, active: bool) -> float | None:
        for at, body in self.beats():
            if at >= since and body["haproxy"].get("active") is active:
                return at
        return None

    def wait_for_beat(self, since: float, active: bool) -> float:
        """When the first heartbeat saying `active` arrived at or after `since`."""
        seen = wait_until(
            lambda: self.first_beat_after(since, active),
            BOUND_S + 5,
            what=f"a heartbeat saying haproxy is {'' if active else 'not '}active",
            interval=0.005,
        )
        assert isinstance(seen, float)
        return seen


@pytest.fixture
def plane() -> Iterator[SlowBeatPlane]:
    with SlowBeatPlane() as made:
        yield made


@pytest.fixture
def haproxy_pid(host: Host) -> int:
    """HAProxy runs before the agent starts, so the first heartbeat says it is active."""
    host.write_config(host.config_text())
    return host.start()


@pytest.fixture
def start_agent(
    host: Host, plane: SlowBeatPlane, haproxy_pid: int
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    log = host.root / "agent.log"

    def start(**extra: str) -> subprocess.Popen[bytes]:
        env = {
            name: value
            for name, value in os.environ.items()
            if name not in ("INVOCATION_ID", "JOURNAL_STREAM", "BALCTL_PROBE_INTERVAL_S")
        }
        env.update(
            BALCTL_ROOT=str(host.root),
            BALCTL_SERVER=plane.url,
            BALCTL_KEY=KEY,
            BALCTL_HOSTNAME="edge-1",
            BALCTL_PUBLIC_IP="203.0.113.7",
            BALCTL_HAPROXY_PIDFILE=str(host.pidfile),
            BALCTL_LOG_LEVEL="INFO",
            PYTHONPATH=str(SRC),
            **extra,
        )
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "balctl", "run"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        wait_until(lambda: plane.first_beat_after(0, True), 15, what="a first heartbeat")
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
    assert KEY not in log.read_text(errors="replace")


def test_a_killed_haproxy_reaches_the_control_plane_at_once_and_so_does_its_return(
    host: Host,
    plane: SlowBeatPlane,
    haproxy_pid: int,
    start_agent: Callable[..., subprocess.Popen[bytes]],
) -> None:
    agent = start_agent()
    pid = haproxy_pid
    time.sleep(0.5)  # the agent is now between beats, a minute from the next regular one

    stopped: list[float] = []
    started: list[float] = []
    for _ in range(ROUNDS):
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        stopped.append(plane.wait_for_beat(killed_at, active=False) - killed_at)

        time.sleep(0.3)
        restart_at = time.monotonic()
        pid = host.start()
        # From the start of `haproxy -D`, which returns once the daemon has written its pid.
        started.append(plane.wait_for_beat(restart_at, active=True) - restart_at)
        time.sleep(0.3)

    # The figures are this test's point: shown with `pytest -s` (or -rP).
    print(  # noqa: T201
        f"\nkill -> heartbeat with active=false: {', '.join(f'{s:.3f}' for s in stopped)} s "
        f"(median {statistics.median(stopped):.3f} s); "
        f"start -> active=true: {', '.join(f'{s:.3f}' for s in started)} s"
    )
    assert max(stopped) < BOUND_S, stopped
    assert max(started) < BOUND_S, started
    # One beat at the start, then exactly one per change: no regular beat (a minute apart), no
    # repeat for a state already sent, no blip from the pidfile being rewritten on a start.
    states = [body["haproxy"]["active"] for _, body in plane.beats()]
    assert states == [True] + [False, True] * ROUNDS
    assert agent.poll() is None


def test_a_pidfile_reload_is_never_reported_as_a_stop(host: Host, haproxy_pid: int) -> None:
    # `haproxy -sf` empties the pidfile (and the old process may exit) a few ms before the new
    # pid is written. A heartbeat's full check that lands in that window must confirm before it
    # reports a stop: here one thread checks as fast as it can through the watcher, another
    # reads the pidfile raw to show that the window was there to fall into.
    watch = HaproxyWatch.for_host(host.paths, str(host.pidfile))
    done = threading.Event()
    reported: list[dict[str, Any]] = []
    raw_gaps = 0

    def check() -> None:
        while not done.is_set():
            block = watch.probe()
            if not block["active"]:
                reported.append(block)

    def raw() -> None:
        nonlocal raw_gaps
        while not done.is_set():
            if not read(host.paths, str(host.pidfile)).block["active"]:
                raw_gaps += 1

    threads = [threading.Thread(target=check), threading.Thread(target=raw)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(RELOADS):
            old = host.pidfile.read_text().split()
            config = str(host.paths.haproxy_cfg)
            subprocess.run(
                [HAPROXY, "-D", "-p", str(host.pidfile), "-f", config, "-sf", *old],
                check=True,
                capture_output=True,
                timeout=30,
            )
            host.pid()  # recorded for teardown
            time.sleep(0.02)
    finally:
        done.set()
        for thread in threads:
            thread.join(10)
    assert raw_gaps > 0, "no reload showed a gap in the pidfile: this test proves nothing here"
    assert reported == []
