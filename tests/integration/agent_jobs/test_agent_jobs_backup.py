"""haproxy.backup and backup.ufw through the job runner, uploading to a loopback store."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator

import pytest
from agent_backup_kit import CERT, QUERY, ObjectStore, put, snapshot, tls_config
from agent_jobs_host import Host

from balctl.enrich import Enricher


@pytest.fixture
def store() -> Iterator[ObjectStore]:
    with ObjectStore() as running:
        yield running


def test_haproxy_backup_uploads_the_archive_and_reports_its_manifest(
    host: Host, store: ObjectStore
) -> None:
    host.write_config(tls_config(host))
    put(host.paths, "/etc/ssl/edge/ca.pem", CERT)
    put(host.paths, "/etc/haproxy/certs/site.pem", CERT, 0o600)
    put(host.paths, "/etc/haproxy/conf.d/20-extra.cfg", "backend be_extra\n")

    result = snapshot(host, store, 17)

    data = store.objects["/snap-17.tar.gz"]
    assert result["snapshot_id"] == 17
    assert result["archive_sha256"] == hashlib.sha256(data).hexdigest()
    assert result["size"] == len(data)
    assert result["haproxy_version"].startswith("2.")
    assert result["config_valid"] is True
    assert result["skipped"] == []
    paths = [entry["path"] for entry in result["files"]]
    assert paths == [
        "/etc/haproxy/certs/site.pem",
        "/etc/haproxy/conf.d/20-extra.cfg",
        "/etc/haproxy/haproxy.cfg",
        "/etc/ssl/edge/ca.pem",
    ]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert sorted(tar.getnames()) == sorted(p[1:] for p in paths)
        cert = tar.extractfile("etc/haproxy/certs/site.pem")
        assert cert is not None and cert.read().decode() == CERT
    assert not any(host.paths.state_dir.iterdir())  # the temporary archive is gone


def test_a_backup_captures_an_invalid_configuration_and_says_so(
    host: Host, store: ObjectStore
) -> None:
    host.write_config(host.config_text() + "\nfrontend broken\n    bogus_keyword\n")
    params = {"snapshot_id": 2, "max_bytes": 10_000_000, "upload": store.upload("b.tar.gz")}
    done = host.job("haproxy.backup", params)
    assert done.state == "completed", done.summary
    assert done.result is not None and done.result["config_valid"] is False
    assert "; note: configuration is invalid" in done.summary


def test_backup_failures_are_clear_and_never_show_the_presigned_query(
    host: Host, store: ObjectStore
) -> None:
    host.write_config(host.config_text())
    params = {"snapshot_id": 3, "max_bytes": 10, "upload": store.upload("c.tar.gz")}
    done = host.job("haproxy.backup", params)
    assert done.state == "failed"
    assert "more than the 10 allowed" in done.summary

    params["max_bytes"] = 10_000_000
    params["upload"] = {**store.upload("c.tar.gz"), "url": f"http://127.0.0.1:9/c?{QUERY}"}
    done = host.job("haproxy.backup", params)
    assert done.state == "failed"
    assert done.summary.startswith("cannot upload to http://127.0.0.1:9/c: ")
    assert QUERY not in done.summary + done.output


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"snapshot_id": 1, "max_bytes": 1}, "missing parameter(s) upload"),
        ({"snapshot_id": 1, "max_bytes": 1, "upload": {}, "x": 1}, "unknown parameter(s) x"),
        ({"snapshot_id": True, "max_bytes": 1, "upload": {}}, "snapshot_id must be"),
        ({"snapshot_id": 1, "max_bytes": 0, "upload": {}}, "max_bytes must be"),
    ],
)
def test_backup_params_are_strict(host: Host, params: dict, match: str) -> None:
    done = host.job("haproxy.backup", params)
    assert done.state == "failed"
    assert match in done.summary


def test_ufw_backup_captures_the_rules_and_the_status(host: Host, store: ObjectStore) -> None:
    params = {"snapshot_id": 4, "max_bytes": 10_000_000, "upload": store.upload("u.tar.gz")}
    done = host.job("backup.ufw", params)
    assert done.state == "failed"
    assert done.summary.startswith("ufw is not installed on this host")

    put(host.paths, "/usr/sbin/ufw", "#!/bin/sh\necho 'Status: active'\necho \"args: $*\"\n", 0o755)
    put(host.paths, "/etc/ufw/user.rules", "*filter\n:ufw-user-input - [0:0]\nCOMMIT\n")
    put(host.paths, "/etc/ufw/ufw.conf", "ENABLED=yes\n")
    put(host.paths, "/etc/default/ufw", "IPV6=yes\n")

    done = host.job("backup.ufw", params)

    assert done.state == "completed", done.summary
    assert "Status: active" in done.output and "args: status verbose" in done.output
    assert done.result is not None
    assert [f["path"] for f in done.result["files"]] == [
        "/etc/default/ufw",
        "/etc/ufw/ufw.conf",
        "/etc/ufw/user.rules",
    ]
    assert done.result["config_valid"] is None
    assert "/u.tar.gz" in store.objects


def test_heartbeat_inventory_reports_the_scope_and_resends_only_on_change(host: Host) -> None:
    host.write_config(tls_config(host))
    put(host.paths, "/etc/ssl/edge/ca.pem", CERT)
    enricher = Enricher(host.paths, interval=0)

    first = enricher.extra()["backup_files"]
    assert first["ufw"] is False
    assert [f["path"] for f in first["files"]] == [
        "/etc/haproxy/haproxy.cfg",
        "/etc/ssl/edge/ca.pem",
    ]
    assert len(first["digest"]) == 64 and "truncated" not in first
    assert "backup_files" not in enricher.extra()

    put(host.paths, "/etc/haproxy/certs/new.pem", CERT)
    changed = enricher.extra()["backup_files"]
    assert changed["digest"] != first["digest"]
    assert "/etc/haproxy/certs/new.pem" in [f["path"] for f in changed["files"]]
    assert "backup_files" not in enricher.extra()
    enricher.lost()
    assert enricher.extra()["backup_files"]["digest"] == changed["digest"]
