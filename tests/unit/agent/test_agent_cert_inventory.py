"""The heartbeat's `certificates`: what is listed, safely, and read again only on change."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from agent_tls_fakes import TestCA, serial_of

from balctl import cert_inventory, tls_certs
from balctl.cert_inventory import CertInventory
from balctl.enrich import Enricher
from balctl.haproxy_cfg import config_files, read_sections
from balctl.paths import HostPaths


@pytest.fixture
def inspected(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files openssl was actually run on."""
    seen: list[str] = []
    real = tls_certs.inspect

    def counting(path: Path, deadline: Any) -> tls_certs.CertInfo:
        seen.append(str(path))
        return real(path, deadline)

    monkeypatch.setattr(tls_certs, "inspect", counting)
    return seen


def _put(paths: HostPaths, logical: str, text: str) -> Path:
    path = paths.host(logical)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _host(paths: HostPaths, ca: TestCA, outside: Path) -> dict[str, str]:
    """A host with a few certificates, and some files that are not (or must not be read)."""
    root = paths.root
    pems = {
        "a": ca.self_signed_pem(["a.example.com", "b.example.com"], 40),
        "site": ca.self_signed_pem(["site.example.com"], 5),
    }
    _put(
        paths,
        "/etc/haproxy/haproxy.cfg",
        "global\n    crt-base " + root + "/etc/ssl\n    ca-base " + root + "/etc/ssl\n"
        "frontend fe\n"
        f"    bind :443 ssl crt site.pem crt {root}/etc/haproxy/certs/a.pem ca-file ca.pem\n",
    )
    _put(paths, "/etc/ssl/site.pem", pems["site"])
    _put(paths, "/etc/ssl/ca.pem", ca.pem)  # a CA file: not a certificate HAProxy serves
    _put(paths, "/etc/haproxy/certs/a.pem", pems["a"])
    _put(paths, "/etc/haproxy/certs/garbage.pem", "not a certificate\n")
    _put(paths, "/etc/haproxy/certs/.a.pem.123.tmp", pems["a"])  # hidden: skipped
    _put(paths, "/etc/haproxy/certs/notes.txt", "hello")  # not *.pem / *.crt: skipped
    _put(paths, "/etc/haproxy/certs/big.pem", "x" * (cert_inventory.MAX_FILE_BYTES + 1))
    outside.write_text(pems["a"])
    os.symlink(str(outside), str(paths.host("/etc/haproxy/certs/outside.pem")))
    os.symlink("../../ssl/site.pem", str(paths.host("/etc/haproxy/certs/link.pem")))
    return pems


def _sections(paths: HostPaths) -> Any:
    return read_sections(config_files(paths))


def test_entries_errors_and_references(agent_root: HostPaths, tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    pems = _host(agent_root, ca, tmp_path / "outside.pem")
    entries = CertInventory(agent_root).current(_sections(agent_root))
    assert entries is not None
    by_path = {entry["path"]: entry for entry in entries}
    assert list(by_path) == [
        "/etc/haproxy/certs/a.pem",
        "/etc/haproxy/certs/big.pem",
        "/etc/haproxy/certs/garbage.pem",
        "/etc/haproxy/certs/link.pem",
        "/etc/haproxy/certs/outside.pem",
        "/etc/ssl/site.pem",
    ]
    a = by_path["/etc/haproxy/certs/a.pem"]
    assert a == {
        "path": "/etc/haproxy/certs/a.pem",
        "subject": "CN=a.example.com",
        "sans": ["a.example.com", "b.example.com"],
        "issuer": "CN=a.example.com",
        "not_after": a["not_after"],
        "serial": serial_of(pems["a"], tmp_path),
        "referenced": True,
    }
    site = by_path["/etc/ssl/site.pem"]
    assert site["sans"] == ["site.example.com"] and site["referenced"] is True
    # The symlink into /etc is read (and HAProxy does not load it here: not referenced).
    assert by_path["/etc/haproxy/certs/link.pem"]["serial"] == site["serial"]
    assert by_path["/etc/haproxy/certs/link.pem"]["referenced"] is False
    assert by_path["/etc/haproxy/certs/outside.pem"] == {
        "path": "/etc/haproxy/certs/outside.pem",
        "error": "a symlink that leads outside /etc: not read",
        "referenced": False,
    }
    assert "larger than" in by_path["/etc/haproxy/certs/big.pem"]["error"]
    assert "could not read the certificate" in by_path["/etc/haproxy/certs/garbage.pem"]["error"]
    assert "PRIVATE" not in repr(entries)


def test_unchanged_files_fork_no_openssl(
    agent_root: HostPaths, tmp_path: Path, inspected: list[str]
) -> None:
    ca = TestCA(tmp_path / "ca")
    _host(agent_root, ca, tmp_path / "outside.pem")
    inventory = CertInventory(agent_root)
    sections = _sections(agent_root)
    first = inventory.due(100.0, sections)
    assert first is not None and len(inspected) == 4  # a, garbage, link, site
    inspected.clear()
    assert inventory.due(105.0, sections) is None
    assert inspected == []

    changed = agent_root.host("/etc/haproxy/certs/a.pem")
    changed.write_text(ca.self_signed_pem(["a.example.com"], 40))
    second = inventory.due(110.0, sections)
    assert second is not None and inspected == [str(changed)]
    assert second[0]["sans"] == ["a.example.com"]

    inspected.clear()
    assert inventory.due(115.0, sections) is None
    inventory.lost()
    assert inventory.due(116.0, sections) == second
    assert inventory.due(116.0 + cert_inventory.RESEND_EVERY_S, sections) == second
    assert inspected == []


def test_reading_is_spread_over_rounds_and_sent_once_complete(
    agent_root: HostPaths, tmp_path: Path, inspected: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = TestCA(tmp_path / "ca")
    pem = ca.self_signed_pem(["a.example.com"], 40)
    for index in range(5):
        _put(agent_root, f"/etc/haproxy/certs/c{index}.pem", pem)
    monkeypatch.setattr(cert_inventory, "MAX_INSPECT_PER_ROUND", 2)
    inventory = CertInventory(agent_root)
    assert inventory.due(1.0, []) is None
    assert inventory.due(2.0, []) is None
    listed = inventory.due(3.0, [])
    assert listed is not None and len(listed) == 5 and len(inspected) == 5


def test_at_most_max_files(agent_root: HostPaths, monkeypatch: pytest.MonkeyPatch) -> None:
    for index in range(5):
        _put(agent_root, f"/etc/haproxy/certs/c{index}.pem", "x")
    monkeypatch.setattr(cert_inventory, "MAX_FILES", 3)
    entries = CertInventory(agent_root).current([])
    assert entries is not None and [e["path"][-6:] for e in entries] == [
        "c0.pem",
        "c1.pem",
        "c2.pem",
    ]


def test_a_host_without_certificates_sends_nothing_until_it_had_some(
    agent_root: HostPaths, tmp_path: Path
) -> None:
    inventory = CertInventory(agent_root)
    assert inventory.due(1.0, []) is None
    ca = TestCA(tmp_path / "ca")
    path = _put(agent_root, "/etc/haproxy/certs/a.pem", ca.self_signed_pem(["a.example.com"], 9))
    listed = inventory.due(2.0, [])
    assert listed is not None and len(listed) == 1
    path.unlink()
    assert inventory.due(3.0, []) == []  # gone: said once
    assert inventory.due(4.0, []) is None


def test_the_heartbeat_carries_certificates(agent_root: HostPaths, tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    _put(agent_root, "/etc/haproxy/haproxy.cfg", "global\n    daemon\n")
    _put(agent_root, "/etc/haproxy/certs/a.pem", ca.self_signed_pem(["a.example.com"], 9))
    enricher = Enricher(agent_root, interval=0)
    block = enricher.extra()
    [entry] = block["certificates"]
    assert entry["path"] == "/etc/haproxy/certs/a.pem" and entry["referenced"] is False
    assert "certificates" not in enricher.extra()
    enricher.lost()
    assert "certificates" in enricher.extra()
