"""haproxy.restore against a real haproxy: validate, reload, or roll back to the exact old files."""

from __future__ import annotations

import socket
import stat
from collections.abc import Iterator

import pytest
from agent_backup_kit import (
    CERT,
    ObjectStore,
    fingerprint,
    restore_params,
    snapshot_then_reset,
    tls_config,
)
from agent_jobs_host import Host


@pytest.fixture
def store() -> Iterator[ObjectStore]:
    with ObjectStore() as running:
        yield running


def test_restore_swaps_the_files_and_reloads(host: Host, store: ObjectStore) -> None:
    result = snapshot_then_reset(host, store, tls_config(host, "restored"))
    old_pid = host.start()
    assert host.get().endswith(b"served\n")

    done = host.job("haproxy.restore", restore_params(result, store))

    assert done.state == "completed", done.summary
    assert done.result == {
        "snapshot_id": 1,
        "added": [
            "/etc/haproxy/certs/snap.pem",
            "/etc/haproxy/conf.d/10-snap.cfg",
            "/etc/ssl/edge/ca.pem",
        ],
        "changed": ["/etc/haproxy/haproxy.cfg"],
        "removed": ["/etc/haproxy/certs/own.pem"],
        "unchanged": 0,
        "reloaded": True,
    }
    new_pid = host.pid()
    assert new_pid != old_pid
    assert f"Pid: {new_pid}" in host.ask("show info")
    assert host.get().endswith(b"restored\n")
    assert host.paths.host("/etc/ssl/edge/ca.pem").read_text() == CERT
    assert stat.S_IMODE(host.paths.host("/etc/haproxy/certs/snap.pem").stat().st_mode) == 0o640
    assert not host.paths.host("/etc/haproxy/certs/own.pem").exists()
    assert not any(host.paths.restore_dir.iterdir())
    assert "restored snapshot 1 (3 added, 1 changed, 1 removed, 0 unchanged)" in done.summary

    again = host.job("haproxy.restore", restore_params(result, store))
    assert again.state == "completed", again.summary
    assert again.summary == "nothing to change: this host already has snapshot 1's files"
    assert again.result is not None and again.result["unchanged"] == 4
    assert host.pid() == new_pid


def test_a_restore_that_fails_haproxy_check_leaves_everything_as_it_was(
    host: Host, store: ObjectStore
) -> None:
    broken = tls_config(host) + "\nfrontend fe_broken\n    bogus_keyword\n"
    result = snapshot_then_reset(host, store, broken)
    old_pid = host.start()
    before = fingerprint(host.paths)

    done = host.job("haproxy.restore", restore_params(result, store))

    assert done.state == "failed"
    assert done.summary.startswith("the restored configuration does not validate: ")
    assert done.summary.endswith("; the previous files are back")
    assert fingerprint(host.paths) == before  # bytes, modes, owners, inodes and times
    assert host.pid() == old_pid
    assert f"Pid: {old_pid}" in host.ask("show info")
    assert not any(host.paths.restore_dir.iterdir())


def test_a_restore_whose_reload_fails_puts_the_old_files_back(
    host: Host, store: ObjectStore
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        config = tls_config(host) + f"\nfrontend fe_busy\n    bind 127.0.0.1:{busy}\n"
        result = snapshot_then_reset(host, store, config)
        old_pid = host.start()
        before = fingerprint(host.paths)

        done = host.job("haproxy.restore", restore_params(result, store))

    assert done.state == "failed"
    assert done.summary.startswith("haproxy did not start: [ALERT]")
    assert fingerprint(host.paths) == before
    assert host.pid() == old_pid
    assert host.get().endswith(b"served\n")


def test_a_refused_archive_changes_nothing(host: Host, store: ObjectStore) -> None:
    result = snapshot_then_reset(host, store, tls_config(host, "restored"))
    host.start()
    before = fingerprint(host.paths)
    params = restore_params(result, store)
    params["files"][0] = {**params["files"][0], "sha256": "0" * 64}

    done = host.job("haproxy.restore", params)

    assert done.state == "failed"
    assert done.summary.startswith("refused the archive: ")
    assert fingerprint(host.paths) == before
    assert not any(host.paths.restore_dir.iterdir())


def test_a_wrong_download_checksum_changes_nothing(host: Host, store: ObjectStore) -> None:
    result = snapshot_then_reset(host, store, tls_config(host, "restored"))
    before = fingerprint(host.paths)
    params = restore_params(result, store)
    params["archive_sha256"] = "f" * 64
    done = host.job("haproxy.restore", params)
    assert done.state == "failed"
    assert "has SHA-256" in done.summary and "nothing was changed" in done.summary
    assert fingerprint(host.paths) == before


def test_restore_needs_haproxy(
    host: Host, store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = snapshot_then_reset(host, store, tls_config(host))
    monkeypatch.setattr("balctl.haproxy_ctl.haproxy_binary", lambda: None)
    done = host.job("haproxy.restore", restore_params(result, store))
    assert done.state == "failed"
    assert "install HAProxy first" in done.summary


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"extra": 1}, "unknown parameter(s) extra"),
        ({"files": [{"path": "/etc/x"}]}, "files: files[0].type must be"),
        ({"archive_sha256": "xyz"}, "archive_sha256 must be 64 hexadecimal digits"),
        ({"download": {"method": "PUT", "url": "https://a/b"}}, "download.method must be 'GET'"),
    ],
)
def test_restore_params_are_strict(
    host: Host, store: ObjectStore, change: dict, match: str
) -> None:
    params = {
        "snapshot_id": 1,
        "source_hostname": "edge-0",
        "archive_sha256": "a" * 64,
        "size": 10,
        "files": [],
        "download": store.download("x"),
        **change,
    }
    done = host.job("haproxy.restore", params)
    assert done.state == "failed"
    assert match in done.summary
