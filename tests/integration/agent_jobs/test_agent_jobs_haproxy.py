"""haproxy.validate, haproxy.reload and haproxy.server_state against real haproxy processes."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
from agent_jobs_host import Host

from balctl.jobs.runner import JobRunner

BROKEN = "\nfrontend fe_broken\n    bogus_keyword here\n"


def test_validate_accepts_a_good_config(host: Host) -> None:
    host.write_config(host.config_text())
    done = host.job("haproxy.validate")
    assert done.state == "completed"
    assert done.summary == "configuration is valid"
    assert "Configuration file is valid" in done.output


def test_validate_names_the_first_alert_of_a_broken_config(host: Host) -> None:
    host.write_config(host.config_text() + BROKEN)
    done = host.job("haproxy.validate")
    assert done.state == "failed"
    assert done.summary.startswith("configuration is invalid: [ALERT]")
    assert "unknown keyword 'bogus_keyword'" in done.summary
    assert "haproxy.cfg:" in done.summary


def test_validate_reads_conf_d_cfg_files_only(host: Host) -> None:
    host.write_config(host.config_text())
    conf_d = host.paths.haproxy_conf_d
    conf_d.mkdir()
    (conf_d / "10-extra.cfg").write_text("backend be_extra\n    server x 127.0.0.1:1\n")
    (conf_d / "ignored.txt").write_text("not haproxy at all\n")
    assert host.job("haproxy.validate").state == "completed"

    (conf_d / "20-bad.cfg").write_text("bogus_keyword out of section\n")
    done = host.job("haproxy.validate")
    assert done.state == "failed"
    assert "20-bad.cfg:1" in done.summary


def test_reload_keeps_a_half_sent_request_and_changes_the_pid(host: Host) -> None:
    host.write_config(host.config_text())
    old_pid = host.start()
    with socket.create_connection(("127.0.0.1", host.web), timeout=10) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")  # half a request: no blank line yet

        done = host.job("haproxy.reload")

        assert done.state == "completed", done.summary
        new_pid = host.pid()
        assert new_pid is not None and new_pid != old_pid
        assert done.result == {
            "mode": "pidfile",
            "pid": new_pid,
            "verified": True,
            "reloaded": True,
        }
        assert f"pid {new_pid} replaced {old_pid}" in done.summary
        assert f"admin socket {host.socket} answers (pid {new_pid})" in done.summary
        conn.sendall(b"Connection: close\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"served\n")
    assert host.get().endswith(b"served\n")  # and the new process serves new connections
    assert f"Pid: {new_pid}" in host.ask("show info")


def test_reload_starts_haproxy_when_none_runs(host: Host) -> None:
    host.write_config(host.config_text())
    done = host.job("haproxy.reload")
    assert done.state == "completed", done.summary
    assert done.summary.startswith(f"haproxy started (pid {host.pid()})")
    assert "-sf" not in done.output
    assert host.get().endswith(b"served\n")


def test_reload_refuses_a_broken_config_and_keeps_the_old_process(host: Host) -> None:
    host.write_config(host.config_text())
    old_pid = host.start()
    broken = host.config_text() + BROKEN
    host.write_config(broken)

    done = host.job("haproxy.reload")

    assert done.state == "failed"
    assert done.summary.startswith("refusing to reload: configuration is invalid: [ALERT]")
    assert done.result is not None and done.result["reloaded"] is False
    assert host.pid() == old_pid
    assert f"Pid: {old_pid}" in host.ask("show info")
    assert host.paths.haproxy_cfg.read_text() == broken  # the job does not touch the file
    assert host.get().endswith(b"served\n")


def test_reload_reports_a_new_process_that_cannot_bind(host: Host) -> None:
    host.write_config(host.config_text())
    old_pid = host.start()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        host.write_config(host.config_text() + f"\nfrontend fe_busy\n    bind 127.0.0.1:{busy}\n")
        done = host.job("haproxy.reload")
    assert done.state == "failed"
    assert "haproxy did not start" in done.summary and "cannot bind socket" in done.summary
    assert f"the old process ({old_pid}) keeps running" in done.summary
    assert host.pid() == old_pid
    assert f"Pid: {old_pid}" in host.ask("show info")


def test_server_state_drain_maint_ready_show_in_show_stat(host: Host) -> None:
    host.write_config(host.config_text())
    host.start()
    assert host.server_status("be_app", "app1") == "no check"

    drained = host.job(
        "haproxy.server_state", {"backend": "be_app", "server": "app1", "state": "drain"}
    )
    assert drained.state == "completed", drained.summary
    assert drained.result == {
        "backend": "be_app",
        "server": "app1",
        "requested": "drain",
        "admin_state": "drain",
        "status": "DRAIN",
    }
    assert host.server_status("be_app", "app1") == "DRAIN"

    maint = host.job(
        "haproxy.server_state", {"backend": "be_app", "server": "app1", "state": "maint"}
    )
    assert maint.state == "completed"
    assert maint.result is not None and maint.result["admin_state"] == "maint"
    assert host.server_status("be_app", "app1") == "MAINT"

    ready = host.job(
        "haproxy.server_state", {"backend": "be_app", "server": "app1", "state": "ready"}
    )
    assert ready.state == "completed"
    assert ready.summary == "be_app/app1 is ready (status no check)"
    assert host.server_status("be_app", "app1") == "no check"


def test_server_state_of_an_unknown_server_fails_with_haproxys_words(host: Host) -> None:
    host.write_config(host.config_text())
    host.start()
    done = host.job(
        "haproxy.server_state", {"backend": "be_app", "server": "nope", "state": "drain"}
    )
    assert done.state == "failed"
    assert done.summary == "HAProxy refused 'set server be_app/nope state drain': No such server."


def test_server_state_without_an_admin_socket_says_how_to_get_one(host: Host) -> None:
    host.write_config(host.config_text(admin_socket=False))
    host.start()
    done = host.job(
        "haproxy.server_state", {"backend": "be_app", "server": "app1", "state": "drain"}
    )
    assert done.state == "failed"
    assert "haproxy.admin_socket.enable" in done.summary


SYSTEMCTL_STAND_IN = """#!/bin/sh
# Records its arguments; on `reload haproxy` it reloads the real haproxy, as the unit would.
echo "$*" >> "{calls}"
if [ "$1" = reload ] && [ "$2" = haproxy ]; then
    exec "{haproxy}" -D -p "{pidfile}" -f "{config}" -sf $(cat "{pidfile}")
fi
exit 0
"""


def _under_systemd(host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """systemd "runs" (its runtime directory exists under the root), no pidfile is configured,
    and a systemctl stand-in is first on PATH; returns the file it records its calls in."""
    (host.root / "run/systemd/system").mkdir(parents=True)
    monkeypatch.delenv("BALCTL_HAPROXY_PIDFILE")
    host.cfg = host.cfg._replace(haproxy_pidfile=None)
    host.runner = JobRunner(host.cfg, host.client, host.paths)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "systemctl.calls"
    stand_in = bin_dir / "systemctl"
    stand_in.write_text(
        SYSTEMCTL_STAND_IN.format(
            calls=calls,
            haproxy=shutil.which("haproxy") or "/usr/sbin/haproxy",
            pidfile=host.pidfile,
            config=host.paths.haproxy_cfg,
        )
    )
    stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return calls


def test_reload_under_systemd_asks_systemctl_and_checks_the_socket(
    host: Host, tmp_path, monkeypatch
) -> None:
    # The reload goes through systemctl; the real haproxy answers on the admin socket.
    host.write_config(host.config_text())
    host.start()
    calls = _under_systemd(host, tmp_path, monkeypatch)

    old_pid = host.pid()
    done = host.job("haproxy.reload")
    assert done.state == "completed", done.summary
    assert "reload haproxy" in calls.read_text().splitlines()
    assert host.pid() != old_pid


def test_reload_under_systemd_refuses_a_broken_config_without_calling_systemctl(
    host: Host, tmp_path, monkeypatch
) -> None:
    host.write_config(host.config_text() + BROKEN)
    calls = _under_systemd(host, tmp_path, monkeypatch)

    done = host.job("haproxy.reload")
    assert done.state == "failed"
    assert not calls.exists() or "reload" not in calls.read_text()
