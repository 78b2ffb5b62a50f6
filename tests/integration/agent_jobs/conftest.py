"""Fixtures for the agent's job tests against real haproxy processes.

Every haproxy a test starts (directly, or through a reload job) is recorded from the pidfile and
killed in teardown, whether the test passed or not.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_jobs_host import Host


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv("BALCTL_ROOT", str(root))
    made = Host(root)
    monkeypatch.setenv("BALCTL_HAPROXY_PIDFILE", str(made.pidfile))
    yield made
    made.kill_all()
