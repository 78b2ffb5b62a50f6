from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from balctl import haproxy_probe
from balctl.haproxy_probe import pid_alive, probe
from balctl.paths import HostPaths

# Linux never hands out a pid above PID_MAX_LIMIT (2**22), so this one is always dead.
DEAD_PID = 2**22 + 1


def _pidfile(tmp_path: Path, text: str) -> str:
    path = tmp_path / "haproxy.pid"
    path.write_text(text)
    return str(path)


def test_pidfile_with_a_live_pid_is_active(tmp_path: Path) -> None:
    block = probe(HostPaths.under(str(tmp_path)), _pidfile(tmp_path, f"{os.getpid()}\n"))
    assert block == {"monitored": True, "active": True, "source": "pidfile"}


def test_pidfile_with_a_dead_pid_is_inactive(tmp_path: Path) -> None:
    block = probe(HostPaths.under(str(tmp_path)), _pidfile(tmp_path, f"{DEAD_PID}\n"))
    assert block == {"monitored": True, "active": False, "source": "pidfile"}


def test_missing_pidfile_is_inactive(tmp_path: Path) -> None:
    block = probe(HostPaths.under(str(tmp_path)), str(tmp_path / "nope.pid"))
    assert block == {"monitored": True, "active": False, "source": "pidfile"}


@pytest.mark.parametrize("text", ["", "garbage", "0", "-1", "12abc"])
def test_garbage_pidfile_is_inactive(tmp_path: Path, text: str) -> None:
    # 0 and -1 would address process groups in kill(2) and so look "alive".
    assert not pid_alive(Path(_pidfile(tmp_path, text)))


def test_pidfile_path_is_not_prefixed_by_balctl_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    block = probe(HostPaths.under(str(root)), _pidfile(tmp_path, str(os.getpid())))
    assert block["active"] is True


def test_no_pidfile_and_no_systemd_is_not_monitored(tmp_path: Path) -> None:
    assert probe(HostPaths.under(str(tmp_path))) == {"monitored": False, "source": "none"}


@pytest.mark.parametrize(("stdout", "active"), [(b"active\n", True), (b"inactive\n", False)])
def test_systemd_mode_asks_systemctl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stdout: bytes, active: bool
) -> None:
    paths = HostPaths.under(str(tmp_path))
    paths.run_systemd_system.mkdir(parents=True)
    calls: list[Any] = []

    def fake_run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        calls.append((argv, kwargs))
        return subprocess.CompletedProcess(argv, 0 if active else 3, stdout, b"")

    monkeypatch.setattr(haproxy_probe.shutil, "which", lambda name: "/usr/bin/systemctl")
    monkeypatch.setattr(haproxy_probe.subprocess, "run", fake_run)
    assert probe(paths) == {"monitored": True, "active": active, "source": "systemd"}
    argv, kwargs = calls[0]
    assert argv == ["systemctl", "is-active", "haproxy"]
    assert kwargs["timeout"] == 5.0
    assert "shell" not in kwargs


def test_systemctl_timeout_reports_inactive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = HostPaths.under(str(tmp_path))
    paths.run_systemd_system.mkdir(parents=True)

    def slow(argv: list[str], **kwargs: Any) -> None:
        raise subprocess.TimeoutExpired(argv, kwargs["timeout"])

    monkeypatch.setattr(haproxy_probe.shutil, "which", lambda name: "/usr/bin/systemctl")
    monkeypatch.setattr(haproxy_probe.subprocess, "run", slow)
    assert probe(paths)["active"] is False


def test_systemd_dir_without_systemctl_is_not_monitored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = HostPaths.under(str(tmp_path))
    paths.run_systemd_system.mkdir(parents=True)
    monkeypatch.setattr(haproxy_probe.shutil, "which", lambda name: None)
    assert probe(paths) == {"monitored": False, "source": "none"}
