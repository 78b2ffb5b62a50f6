"""haproxy.admin_socket.enable / .disable against a real haproxy: edit, validate, reload."""

from __future__ import annotations

import os
import socket
import stat

from agent_jobs_host import Host

from balctl.files import backup_path


def _socket_line(host: Host) -> str:
    return f"    stats socket {host.socket} mode 600 level admin expose-fd listeners\n"


def test_enable_adds_the_lines_once_and_haproxy_answers_on_the_new_socket(host: Host) -> None:
    original = host.config_text(admin_socket=False)
    host.write_config(original)
    os.chmod(host.paths.haproxy_cfg, 0o640)
    host.socket.parent.rmdir()  # the job makes the socket's directory
    old_pid = host.start()

    done = host.job("haproxy.admin_socket.enable")

    assert done.state == "completed", done.summary
    assert done.result == {"changed": True}
    text = host.paths.haproxy_cfg.read_text()
    assert text == original.replace(
        "global\n", "global\n" + _socket_line(host) + "    stats timeout 2m\n", 1
    )
    assert stat.S_IMODE(host.paths.haproxy_cfg.stat().st_mode) == 0o640
    assert backup_path(host.paths.haproxy_cfg).read_text() == original
    new_pid = host.pid()
    assert new_pid != old_pid
    assert f"Pid: {new_pid}" in host.ask("show info")
    assert "admin socket enabled at" in done.summary

    again = host.job("haproxy.admin_socket.enable")

    assert again.state == "completed"
    assert again.summary == "admin socket already enabled"
    assert again.result == {"changed": False}
    assert host.paths.haproxy_cfg.read_text() == text
    assert host.pid() == new_pid  # no reload the second time


def test_disable_removes_exactly_the_two_lines_and_reloads(host: Host) -> None:
    other = f"    stats socket {host.root}/run/haproxy/other.sock mode 600 level user\n"
    with_lines = host.config_text().replace("global\n", "global\n" + other, 1)
    host.write_config(with_lines)
    old_pid = host.start()

    done = host.job("haproxy.admin_socket.disable")

    assert done.state == "completed", done.summary
    assert done.result == {"changed": True}
    text = host.paths.haproxy_cfg.read_text()
    assert text == with_lines.replace(_socket_line(host), "").replace("    stats timeout 2m\n", "")
    assert other in text
    assert host.pid() != old_pid
    assert done.summary.startswith("admin socket disabled; haproxy reloaded")

    again = host.job("haproxy.admin_socket.disable")
    assert again.summary == "admin socket already disabled"
    assert again.result == {"changed": False}


def test_disable_without_any_socket_left_reports_an_unverified_reload(host: Host) -> None:
    host.write_config(host.config_text())
    host.start()
    done = host.job("haproxy.admin_socket.disable")
    assert done.state == "completed", done.summary
    assert "not verified: no admin socket is configured" in done.summary
    assert host.get().endswith(b"served\n")


def test_enable_rolls_back_when_the_new_config_is_invalid(host: Host) -> None:
    # Valid now, but the added lines need the global section to parse: break it first.
    broken = host.config_text(admin_socket=False) + "\nfrontend fe_broken\n    bogus_keyword\n"
    host.write_config(broken)

    done = host.job("haproxy.admin_socket.enable")

    assert done.state == "failed"
    assert "refusing to reload: configuration is invalid" in done.summary
    assert done.summary.endswith("restored the previous haproxy.cfg")
    assert done.result == {"changed": False}
    assert host.paths.haproxy_cfg.read_text() == broken


def test_enable_rolls_back_when_the_reload_fails(host: Host) -> None:
    host.write_config(host.config_text(admin_socket=False))
    old_pid = host.start()
    # The file on disk already has a listener on a port someone else holds: valid, but the new
    # process cannot start, and the old one must be left serving.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        on_disk = (
            host.config_text(admin_socket=False)
            + f"\nfrontend fe_busy\n    bind 127.0.0.1:{busy}\n"
        )
        host.write_config(on_disk)

        done = host.job("haproxy.admin_socket.enable")

    assert done.state == "failed"
    assert done.summary.startswith("haproxy did not start: [ALERT]")
    assert done.summary.endswith("; restored the previous haproxy.cfg")
    assert done.result == {"changed": False}
    assert host.paths.haproxy_cfg.read_text() == on_disk
    assert host.pid() == old_pid
    assert host.get().endswith(b"served\n")


def test_enable_fails_cleanly_when_the_socket_directory_cannot_be_made(host: Host) -> None:
    original = host.config_text(admin_socket=False)
    host.write_config(original)
    host.socket.parent.rmdir()
    host.socket.parent.write_text("a file where the directory should be")

    done = host.job("haproxy.admin_socket.enable")

    assert done.state == "failed"
    assert done.summary.startswith(f"cannot change {host.paths.haproxy_cfg}:")
    assert host.paths.haproxy_cfg.read_text() == original
