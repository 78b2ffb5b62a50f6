"""The deferred job runner: nothing of the job machinery loads, connects or wakes up until the
control plane hands out a job; then jobs run and their results are delivered as usual."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from agent_fakes import KEY, FakeControlPlane, Reply

from balctl.config import AgentConfig
from balctl.deferred_jobs import DeferredJobRunner
from balctl.paths import HostPaths
from balctl.transport import ControlPlaneClient

SRC = Path(__file__).resolve().parents[3] / "src"


def test_starting_the_agent_loads_no_job_module_beyond_what_heartbeats_use() -> None:
    # A fresh interpreter: this test process has imported the whole agent already.
    code = "import json, sys, balctl.cli; print(json.dumps(sorted(sys.modules)))"
    listed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    loaded = set(json.loads(listed.stdout))
    for heavy in (
        "balctl.jobs.catalogue",
        "balctl.jobs.runner",
        "balctl.jobs.backup_jobs",
        "balctl.jobs.restore_job",
        "balctl.jobs.install",
        "balctl.archive",
        "balctl.transfer",
        "balctl.restore_swap",
        "balctl.enrol",
        "balctl.logfile",
    ):
        assert heavy not in loaded, f"{heavy} is imported at start-up"


def test_no_runner_connection_or_thread_until_the_first_job(tmp_path: Path) -> None:
    connected: list[ControlPlaneClient] = []

    def connect() -> ControlPlaneClient:
        client = ControlPlaneClient("http://127.0.0.1:9", KEY)
        connected.append(client)
        return client

    cfg = AgentConfig(server="http://127.0.0.1:9", key=KEY, hostname="edge-1")
    jobs = DeferredJobRunner(cfg, HostPaths.under(str(tmp_path)), connect, threading.Event())
    assert jobs.running() == []
    assert jobs.offer([]) == 0
    assert jobs.offer("not a list") == 0
    assert jobs.close(0.1) is True
    assert connected == []
    assert jobs.thread is None and jobs.runner is None


def test_the_first_job_starts_the_runner_which_runs_and_reports_it(
    tmp_path: Path, control_plane: FakeControlPlane
) -> None:
    control_plane.default = Reply(200, {"ok": True, "state": "completed"})
    cfg = AgentConfig(server=control_plane.url, key=KEY, hostname="edge-1")
    stop = threading.Event()
    jobs = DeferredJobRunner(
        cfg, HostPaths.under(str(tmp_path)), lambda: ControlPlaneClient(cfg.server, KEY), stop
    )
    assert jobs.thread is None and jobs.runner is None
    assert jobs.offer([{"id": 7, "type": "no.such.job"}]) == 1
    assert jobs.thread is not None and jobs.thread.name == "jobs"
    try:
        deadline = time.monotonic() + 5
        while not control_plane.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        # The same runner from then on: a job offered again is not run twice.
        assert jobs.offer([{"id": 7, "type": "no.such.job"}]) == 0
    finally:
        stop.set()
        assert jobs.close(5) is True
    assert [r.path for r in control_plane.requests] == ["/api/agents/jobs/complete"]
    assert control_plane.requests[0].json["job_id"] == 7
    assert control_plane.requests[0].json["state"] == "failed"
    assert jobs.running() == []


def test_a_runner_that_cannot_start_costs_no_heartbeat_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def connect() -> ControlPlaneClient:
        raise RuntimeError("broken job module")

    cfg = AgentConfig(server="http://127.0.0.1:9", key=KEY, hostname="edge-1")
    jobs = DeferredJobRunner(cfg, HostPaths.under(str(tmp_path)), connect, threading.Event())
    with caplog.at_level(logging.ERROR, logger="balctl"):
        assert jobs.offer([{"id": 1, "type": "haproxy.validate"}]) == 0
        assert jobs.offer([{"id": 2, "type": "haproxy.validate"}]) == 0
    assert [r.getMessage() for r in caplog.records] == [
        "cannot start the job runner: jobs will not run on this host"
    ]
    assert jobs.running() == []
