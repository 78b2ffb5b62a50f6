from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from agent_fakes import KEY, FakeControlPlane, Reply

from balctl import cli
from balctl.config import read_env_file
from balctl.paths import HostPaths
from support.tls import TEST_CA_PEM

ENROLLED = {"member_id": 7, "pool_id": 3, "pool_name": "web", "hostname": "edge-1"}


def _enrol_args(server: str, *extra: str) -> list[str]:
    return ["--enrol", "--server", server, "--key", KEY, "--hostname", "edge-1", *extra]


def test_version_prints_name_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == "balctl 0.1.0\n"


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 1
    assert "nothing to do" in capsys.readouterr().err


def test_unknown_option_exits_1_not_argparses_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--frobnicate"]) == 1
    assert capsys.readouterr().err.startswith("balctl: error:")


def test_enrol_needs_server_key_and_hostname(
    agent_root: HostPaths, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--enrol", "--hostname", "edge-1"]) == 1
    assert "--server, --key" in capsys.readouterr().err


def test_enrol_writes_agent_env(
    agent_root: HostPaths,
    control_plane: FakeControlPlane,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BALCTL_HAPROXY_PIDFILE", "/run/haproxy.pid")
    control_plane.replies.append(Reply(200, ENROLLED))
    assert cli.main(_enrol_args(control_plane.url, "--public-ip", "203.0.113.7")) == 0

    seen = control_plane.requests[0]
    assert seen.path == "/api/agents/enrol"
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.json == {"hostname": "edge-1", "ip": "203.0.113.7", "version": "0.1.0"}
    assert stat.S_IMODE(agent_root.agent_env.stat().st_mode) == 0o600
    assert read_env_file(agent_root.agent_env) == {
        "BALCTL_SERVER": control_plane.url,
        "BALCTL_KEY": KEY,
        "BALCTL_HOSTNAME": "edge-1",
        "BALCTL_PUBLIC_IP": "203.0.113.7",
        "BALCTL_HAPROXY_PIDFILE": "/run/haproxy.pid",
    }
    out, err = capsys.readouterr()
    assert "member 7 of pool 'web'" in out
    assert KEY not in out + err


def test_enrol_takes_the_key_from_the_environment(
    agent_root: HostPaths, control_plane: FakeControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BALCTL_KEY", KEY)
    control_plane.replies.append(Reply(200, ENROLLED))
    argv = ["--enrol", "--server", control_plane.url, "--hostname", "edge-1"]
    assert cli.main(argv) == 0
    assert control_plane.requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_enrol_installs_a_pinned_ca(
    agent_root: HostPaths, control_plane: FakeControlPlane, write_ca: Callable[[], Path]
) -> None:
    control_plane.replies.append(Reply(200, ENROLLED))
    assert cli.main(_enrol_args(control_plane.url, "--ca-file", str(write_ca()))) == 0
    assert agent_root.ca_pem.read_text() == TEST_CA_PEM
    assert stat.S_IMODE(agent_root.ca_pem.stat().st_mode) == 0o644
    assert read_env_file(agent_root.agent_env)["BALCTL_CA_FILE"] == str(agent_root.ca_pem)


def test_enrol_records_the_probe_interval(
    agent_root: HostPaths, control_plane: FakeControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BALCTL_PROBE_INTERVAL_S", "0.1")
    control_plane.replies.append(Reply(200, ENROLLED))
    assert cli.main(_enrol_args(control_plane.url)) == 0
    assert read_env_file(agent_root.agent_env)["BALCTL_PROBE_INTERVAL_S"] == "0.1"


def test_enrol_refuses_a_bad_probe_interval_before_asking_the_server(
    agent_root: HostPaths,
    control_plane: FakeControlPlane,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("BALCTL_PROBE_INTERVAL_S", "0.001")
    assert cli.main(_enrol_args(control_plane.url)) == 1
    assert "BALCTL_PROBE_INTERVAL_S='0.001'" in capsys.readouterr().err
    assert control_plane.requests == []
    assert not agent_root.agent_env.exists()


def test_refused_enrolment_exits_2_with_the_reason(
    agent_root: HostPaths, control_plane: FakeControlPlane, capsys: pytest.CaptureFixture[str]
) -> None:
    control_plane.replies.append(Reply(401, {"detail": "unknown or revoked enrolment secret"}))
    assert cli.main(_enrol_args(control_plane.url)) == 2
    err = capsys.readouterr().err
    assert "401" in err and "unknown or revoked enrolment secret" in err
    assert KEY not in err
    assert not agent_root.agent_env.exists()


def test_unreachable_server_exits_3(
    agent_root: HostPaths, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert cli.main(_enrol_args(f"http://127.0.0.1:{port}")) == 3
    assert "cannot reach" in capsys.readouterr().err


def test_plain_http_to_a_remote_server_exits_1(
    agent_root: HostPaths, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(_enrol_args("http://cp.example.com")) == 1
    assert "plain http" in capsys.readouterr().err


def test_invalid_hostname_exits_1(
    agent_root: HostPaths, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--enrol", "--server", "https://cp", "--key", KEY, "--hostname", "bad_host"]
    assert cli.main(argv) == 1
    assert "hostname 'bad_host' is not valid" in capsys.readouterr().err


def test_non_root_without_balctl_root_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BALCTL_ROOT", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.main(_enrol_args("https://cp.example.com")) == 1
    assert "must run as root" in capsys.readouterr().err
    assert cli.main(["run"]) == 1


def test_run_without_agent_env_exits_1(
    agent_root: HostPaths, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run"]) == 1
    assert "--enrol" in capsys.readouterr().err


def test_run_refuses_enrol_options(
    agent_root: HostPaths, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--server", "https://cp", "run"]) == 1
    assert "only go with --enrol" in capsys.readouterr().err
