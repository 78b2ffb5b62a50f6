from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from balctl import haproxy_probe
from balctl.haproxy_probe import Reading, pid_alive, probe, read
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


@pytest.mark.parametrize(
    ("stdout", "active", "pid"),
    [
        (b"MainPID=4242\nActiveState=active\n", True, 4242),
        # A reload (ExecReload runs `haproxy -c` first) still serves: not a dead HAProxy.
        (b"MainPID=4242\nActiveState=reloading\n", True, 4242),
        (b"MainPID=0\nActiveState=inactive\n", False, None),
        (b"MainPID=0\nActiveState=failed\n", False, None),
        (b"ActiveState=activating\nMainPID=77\n", False, 77),
        (b"", False, None),  # systemctl failed (no bus): not active
    ],
)
def test_systemd_mode_asks_systemctl_once_for_state_and_main_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stdout: bytes, active: bool, pid: int | None
) -> None:
    paths = HostPaths.under(str(tmp_path))
    paths.run_systemd_system.mkdir(parents=True)
    calls: list[Any] = []

    def fake_run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        calls.append((argv, kwargs))
        return subprocess.CompletedProcess(argv, 0 if stdout else 1, stdout, b"")

    monkeypatch.setattr(haproxy_probe.shutil, "which", lambda name: "/usr/bin/systemctl")
    monkeypatch.setattr(haproxy_probe.subprocess, "run", fake_run)
    reading = read(paths)
    assert reading.block == {"monitored": True, "active": active, "source": "systemd"}
    assert reading.pid == pid
    assert not reading.cheap  # re-reading forks systemctl: not for every probe tick
    assert len(calls) == 1
    argv, kwargs = calls[0]
    assert argv == [
        "systemctl",
        "show",
        "haproxy",
        "--property=ActiveState",
        "--property=MainPID",
    ]
    assert kwargs["timeout"] == 5.0
    assert "shell" not in kwargs


def test_pidfile_reading_names_the_pid_even_when_it_is_dead(tmp_path: Path) -> None:
    paths = HostPaths.under(str(tmp_path))
    assert read(paths, _pidfile(tmp_path, f"{DEAD_PID}\n")) == Reading(
        {"monitored": True, "active": False, "source": "pidfile"}, DEAD_PID, cheap=True
    )
    assert read(paths, _pidfile(tmp_path, f"{os.getpid()} 12\n")).pid == os.getpid()
    assert read(paths, str(tmp_path / "nope.pid")).pid is None


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
