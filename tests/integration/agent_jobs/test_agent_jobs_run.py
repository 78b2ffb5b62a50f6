"""`balctl run` end to end: a real agent process takes jobs from heartbeat answers, runs them
against a real haproxy, reports them, enriches its heartbeats, and updates itself."""

from __future__ import annotations

import hashlib
import io
import os
import re
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_jobs_host import KEY, Host
from agent_jobs_plane import JobsPlane

from support.util import wait_until

SRC = Path(__file__).resolve().parents[3] / "src" / "balctl"


def build_pyz(version: str | None = None) -> bytes:
    """The agent zipapp from this source tree, optionally with another version number."""
    buffer = io.BytesIO()
    buffer.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("__main__.py", "from balctl.cli import main\n\nraise SystemExit(main())\n")
        for path in sorted(SRC.rglob("*.py")):
            text = path.read_text()
            if version and path.name == "__init__.py" and path.parent == SRC:
                text = re.sub(r'__version__ = "([^"]+)"', rf'__version__ = "\1+{version}"', text)
            archive.writestr(f"balctl/{path.relative_to(SRC).as_posix()}", text)
    return buffer.getvalue()


@pytest.fixture
def plane() -> Iterator[JobsPlane]:
    with JobsPlane() as made:
        yield made


class AgentProcess:
    def __init__(self, host: Host, plane: JobsPlane, argv: list[str]) -> None:
        env = {
            name: value
            for name, value in os.environ.items()
            # Not a systemd service (it would exit to restart) and no journald stamps.
            if name not in ("INVOCATION_ID", "JOURNAL_STREAM")
        }
        env.update(
            BALCTL_ROOT=str(host.root),
            BALCTL_SERVER=plane.url,
            BALCTL_KEY=KEY,
            BALCTL_HOSTNAME="edge-1",
            BALCTL_PUBLIC_IP="203.0.113.7",
            BALCTL_HAPROXY_PIDFILE=str(host.pidfile),
            BALCTL_STATS_INTERVAL_S="0.3",
            BALCTL_LOG_LEVEL="DEBUG",
            PYTHONPATH=str(SRC.parent),
        )
        self.log = host.root / "agent.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, *argv, "run"], env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def start_agent(host: Host, plane: JobsPlane) -> Iterator[object]:
    started: list[AgentProcess] = []

    def start(*argv: str) -> AgentProcess:
        agent = AgentProcess(host, plane, list(argv) or ["-m", "balctl"])
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


def test_run_executes_each_job_once_reports_it_and_keeps_beating(
    host: Host, plane: JobsPlane, start_agent
) -> None:
    host.write_config(host.config_text())
    old_pid = host.start()
    plane.fail_completions = 2  # the first two reports meet a busy control plane
    plane.jobs = [
        {"id": 7, "type": "haproxy.reload", "params": {}, "timeout_s": 60},
        {
            "id": 8,
            "type": "haproxy.server_state",
            "params": {"backend": "be_app", "server": "app1", "state": "maint"},
            "timeout_s": 30,
        },
        {"id": 9, "type": "haproxy.frobnicate", "params": {}, "timeout_s": 30},
        {
            "id": 10,
            "type": "haproxy.server_state",
            "params": {"backend": "be app"},
            "timeout_s": 30,
        },
    ]
    agent = start_agent()

    wait_until(lambda: not plane.jobs, 30, what="all jobs reported", interval=0.1)
    host.pid()

    done = plane.accepted()
    assert done[7]["state"] == "completed", done[7]
    assert done[7]["hostname"] == "edge-1"
    new_pid = host.pid()
    assert new_pid != old_pid
    # Handed out many times while it ran, but run once: one reload, one new pid.
    assert done[7]["result"]["pid"] == new_pid
    assert agent.output().count("running job 7 ") == 1
    assert done[8]["state"] == "completed" and done[8]["result"]["admin_state"] == "maint"
    assert host.server_status("be_app", "app1") == "MAINT"
    assert done[9]["state"] == "failed"
    assert done[9]["summary"].startswith("unknown job type 'haproxy.frobnicate'")
    assert done[10]["state"] == "failed"
    assert done[10]["summary"].startswith("invalid parameters for haproxy.server_state")
    # Delivered in order, the refused attempts retried.
    assert [body["job_id"] for body in plane.completions] == [7, 7, 7, 8, 9, 10]

    wait_until(
        lambda: any("stats" in beat["haproxy"] for beat in plane.heartbeats[-5:]),
        5,
        what="an enriched heartbeat",
    )
    beat = next(b for b in reversed(plane.heartbeats) if "stats" in b["haproxy"])
    assert beat["haproxy"]["admin_socket"] is True
    assert beat["haproxy"]["admin_socket_configured"] is True
    assert beat["haproxy"]["info"]["pid"] == new_pid
    # Every result is delivered, so the agent soon holds no job (a beat sent before the last
    # delivery still names the jobs it held then).
    wait_until(
        lambda: plane.heartbeats[-1].get("jobs_running") == [], 5, what="no job left in hand"
    )
    assert KEY not in agent.output()


def test_agent_update_replaces_the_zipapp_and_restarts_in_place(
    host: Host, plane: JobsPlane, start_agent
) -> None:
    pyz = host.paths.pyz
    pyz.parent.mkdir(parents=True)
    pyz.write_bytes(build_pyz())
    new = build_pyz("updated")
    sha = hashlib.sha256(new).hexdigest()
    plane.files["/agent/balctl.pyz"] = new
    plane.jobs = [
        {
            "id": 21,
            "type": "agent.update",
            "params": {"url": f"{plane.url}/agent/balctl.pyz", "sha256": sha},
            "timeout_s": 120,
        }
    ]
    agent = start_agent(str(pyz))
    pid = agent.process.pid

    wait_until(
        lambda: any(b["version"].endswith("+updated") for b in plane.heartbeats),
        30,
        what="heartbeats from the updated agent",
    )
    done = plane.accepted()[21]
    assert done["state"] == "completed", done
    assert done["result"] == {"changed": True, "version": "0.1.0+updated", "path": str(pyz)}
    assert pyz.read_bytes() == new
    assert agent.process.poll() is None and agent.process.pid == pid  # execv: same process
    # The completion went out before the restart: no heartbeat from the new agent precedes it.
    assert "restarting as" in agent.output()
    events = plane.events
    assert events.index("complete 21") < events.index("heartbeat 0.1.0+updated")


def test_agent_update_from_another_origin_is_refused(
    host: Host, plane: JobsPlane, start_agent
) -> None:
    plane.jobs = [
        {
            "id": 22,
            "type": "agent.update",
            "params": {"url": "https://evil.example/balctl.pyz", "sha256": "0" * 64},
            "timeout_s": 60,
        }
    ]
    start_agent()
    wait_until(lambda: not plane.jobs, 15, what="the update job reported")
    done = plane.accepted()[22]
    assert done["state"] == "failed"
    assert "not the control plane's origin" in done["summary"]
