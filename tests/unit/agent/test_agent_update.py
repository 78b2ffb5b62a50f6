"""agent.update and `balctl --update`: download from the control plane's origin only, check the
SHA-256 and that the new zipapp runs, replace atomically, then restart."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_fakes import KEY, FileServer, build_pyz

from balctl import cli, restart
from balctl.config import AgentConfig
from balctl.errors import JobError
from balctl.jobs import update
from balctl.jobs.model import JobContext
from balctl.paths import HostPaths
from balctl.proc import Deadline


@pytest.fixture(scope="module")
def new_pyz() -> bytes:
    return build_pyz("+next")


@pytest.fixture
def files() -> Iterator[FileServer]:
    with FileServer() as server:
        yield server


def _context(paths: HostPaths, server: str, restarts: list[int]) -> JobContext:
    cfg = AgentConfig(server=server, key=KEY, hostname="edge-1")
    return JobContext(1, cfg, paths, Deadline(60), lambda: restarts.append(1))


def test_install_pyz_checks_the_hash_and_replaces_atomically(
    agent_root: HostPaths, new_pyz: bytes
) -> None:
    target = agent_root.pyz
    target.parent.mkdir(parents=True)
    target.write_bytes(b"old")
    with pytest.raises(JobError, match="kept the current agent"):
        update.install_pyz(target, new_pyz, "0" * 64)
    assert target.read_bytes() == b"old"
    version = update.install_pyz(target, new_pyz, hashlib.sha256(new_pyz).hexdigest())
    assert version == "balctl 0.1.0+next"
    assert target.read_bytes() == new_pyz
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["balctl.pyz"]  # no temporary left


def test_install_pyz_refuses_a_file_that_does_not_run(agent_root: HostPaths) -> None:
    target = agent_root.pyz
    junk = b"PK not really a zipapp"
    with pytest.raises(JobError, match="does not run on this host"):
        update.install_pyz(target, junk, hashlib.sha256(junk).hexdigest())
    assert not target.exists()


def test_update_job_downloads_installs_and_asks_for_a_restart(
    agent_root: HostPaths, files: FileServer, new_pyz: bytes
) -> None:
    files.files["/agent/balctl.pyz"] = new_pyz
    sha = hashlib.sha256(new_pyz).hexdigest()
    restarts: list[int] = []
    checked = update.check({"url": f"{files.url}/agent/balctl.pyz", "sha256": sha.upper()})
    outcome = update.run_job(checked, _context(agent_root, files.url, restarts))
    assert outcome.ok, outcome.summary
    assert outcome.result == {"changed": True, "version": "0.1.0+next", "path": str(agent_root.pyz)}
    assert agent_root.pyz.read_bytes() == new_pyz
    assert restarts == [1]
    assert "authorization" not in files.seen[0][1]  # the download carries no secret


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:{port}/agent/balctl.pyz",
        "http://localhost:{port}/x",
        "http://127.0.0.1:1/x",
    ],
)
def test_update_job_refuses_another_origin(
    agent_root: HostPaths, files: FileServer, url: str
) -> None:
    restarts: list[int] = []
    port = files.url.rsplit(":", 1)[1]
    params = update.check({"url": url.format(port=port), "sha256": "a" * 64})
    outcome = update.run_job(params, _context(agent_root, files.url, restarts))
    assert not outcome.ok
    assert "not the control plane's origin" in outcome.summary
    assert files.seen == [] and restarts == []


def test_update_job_with_a_wrong_hash_keeps_the_agent(
    agent_root: HostPaths, files: FileServer, new_pyz: bytes
) -> None:
    files.files["/agent/balctl.pyz"] = new_pyz
    restarts: list[int] = []
    params = {"url": f"{files.url}/agent/balctl.pyz", "sha256": "b" * 64}
    outcome = update.run_job(params, _context(agent_root, files.url, restarts))
    assert not outcome.ok and "SHA-256" in outcome.summary
    assert not agent_root.pyz.exists() and restarts == []


def test_update_job_reports_a_missing_file(agent_root: HostPaths, files: FileServer) -> None:
    params = {"url": f"{files.url}/agent/balctl.pyz", "sha256": "b" * 64}
    outcome = update.run_job(params, _context(agent_root, files.url, []))
    assert not outcome.ok
    assert outcome.summary.endswith("/agent/balctl.pyz answered 404: Not Found")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"url": "ftp://x/y", "sha256": "a" * 64}, "http(s) URL"),
        ({"url": "http://x/y"}, "missing parameter(s) sha256"),
        ({"url": "http://x/y", "sha256": "abc"}, "64 hexadecimal"),
    ],
)
def test_update_params_are_checked(params: dict[str, Any], message: str) -> None:
    with pytest.raises(JobError, match=re.escape(message)):
        update.check(params)


def test_restart_under_systemd_exits_for_restart_always(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVOCATION_ID", "abc")
    assert restart.restart_self(Path("/x/balctl.pyz"), ["run"]) == restart.RESTART_EXIT_CODE


def test_restart_without_systemd_execs_the_zipapp(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    calls: list[tuple[str, list[str]]] = []

    class Execd(Exception):
        pass

    def fake_execv(path: str, argv: list[str]) -> None:
        calls.append((path, argv))
        raise Execd

    monkeypatch.setattr(os, "execv", fake_execv)
    pyz = tmp_path / "balctl.pyz"
    with pytest.raises(Execd):
        restart.restart_self(pyz, ["run", "--source-ip", "10.0.0.1"])
    pyz.write_bytes(b"zipapp")
    with pytest.raises(Execd):
        restart.restart_self(pyz, ["run"])
    assert calls == [
        # No zipapp yet (started from a source tree): started again the same way.
        (sys.executable, [sys.executable, "-m", "balctl", "run", "--source-ip", "10.0.0.1"]),
        (sys.executable, [sys.executable, str(pyz), "run"]),
    ]


def test_running_pyz(agent_root: HostPaths, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/opt/balctl.pyz", "run"])
    assert restart.running_pyz(agent_root) == Path("/opt/balctl.pyz")
    monkeypatch.setattr(sys, "argv", ["/src/balctl/__main__.py", "run"])
    assert restart.running_pyz(agent_root) == agent_root.pyz


def test_restart_running_agent_signals_only_a_balctl_process(agent_root: HostPaths) -> None:
    assert "no running agent found" in restart.restart_running_agent(agent_root)
    agent_root.run_dir.mkdir(parents=True)
    script = "import time; time.sleep(30)"
    with subprocess.Popen([sys.executable, "-c", script, "not-the-agent"]) as other:
        agent_root.pidfile.write_text(f"{other.pid}\n")
        assert "no running agent found" in restart.restart_running_agent(agent_root)
        other.kill()
    with subprocess.Popen([sys.executable, "-c", script, "balctl.pyz"]) as agent:
        agent_root.pidfile.write_text(f"{agent.pid}\n")
        said = restart.restart_running_agent(agent_root)
        assert said == f"asked the running agent (pid {agent.pid}) to restart"
        assert agent.wait(10) == -signal.SIGHUP


def test_cli_update_installs_then_says_it_is_current(
    agent_root: HostPaths,
    files: FileServer,
    new_pyz: bytes,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files.files["/agent/balctl.pyz"] = new_pyz
    files.files["/agent/balctl.pyz.sha256"] = (
        f"{hashlib.sha256(new_pyz).hexdigest()}  balctl.pyz\n".encode()
    )
    for name, value in (("SERVER", files.url), ("KEY", KEY), ("HOSTNAME", "edge-1")):
        monkeypatch.setenv(f"BALCTL_{name}", value)
    monkeypatch.setattr(sys, "argv", ["pytest"])

    assert cli.main(["--update"]) == 0
    out = capsys.readouterr().out
    assert f"balctl: installed balctl 0.1.0+next as {agent_root.pyz}\n" in out
    assert "no running agent found" in out
    assert agent_root.pyz.read_bytes() == new_pyz

    assert cli.main(["--update"]) == 0
    assert "already the control plane's agent" in capsys.readouterr().out
    assert [path for path, _ in files.seen].count("/agent/balctl.pyz") == 1


def test_cli_update_without_the_control_plane_exits_3(
    agent_root: HostPaths, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in (("SERVER", "http://127.0.0.1:9"), ("KEY", KEY), ("HOSTNAME", "edge-1")):
        monkeypatch.setenv(f"BALCTL_{name}", value)
    assert cli.main(["--update"]) == 3
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err


def test_cli_refuses_to_combine_actions(
    agent_root: HostPaths, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--update", "--provision-haproxy"]) == 1
    assert "--provision-haproxy and --update cannot be combined" in capsys.readouterr().err
    assert cli.main(["--update", "--server", "https://x"]) == 1
    assert "--server only go with --enrol, not with --update" in capsys.readouterr().err
