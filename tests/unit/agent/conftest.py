"""Fixtures for the agent's unit tests: a private BALCTL_ROOT and a loopback control plane."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# The agent is not an installed distribution: import it from the source tree, wherever pytest
# was started from.
_SRC = str(Path(__file__).resolve().parents[3] / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)

from agent_fakes import FakeControlPlane  # noqa: E402

from balctl.paths import HostPaths  # noqa: E402
from support.tls import TEST_CA_PEM  # noqa: E402

AGENT_ENV_NAMES = (
    "BALCTL_ROOT",
    "BALCTL_SERVER",
    "BALCTL_KEY",
    "BALCTL_HOSTNAME",
    "BALCTL_SOURCE_IP",
    "BALCTL_CA_FILE",
    "BALCTL_PUBLIC_IP",
    "BALCTL_HAPROXY_PIDFILE",
    "BALCTL_LOG_LEVEL",
    "BALCTL_STATS_INTERVAL_S",
    "BALCTL_PROBE_INTERVAL_S",
    "INVOCATION_ID",
)


@pytest.fixture
def agent_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HostPaths:
    """A clean environment with BALCTL_ROOT pointing at an empty temporary directory."""
    for name in AGENT_ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv("BALCTL_ROOT", str(root))
    return HostPaths.under(str(root))


@pytest.fixture
def control_plane() -> Iterator[FakeControlPlane]:
    with FakeControlPlane() as plane:
        yield plane


@pytest.fixture
def write_ca(tmp_path: Path) -> Callable[[], Path]:
    def write() -> Path:
        path = tmp_path / "private-ca.pem"
        path.write_text(TEST_CA_PEM, encoding="ascii")
        return path

    return write
