"""What a backup captures: the HAProxy trees, the files the configuration references, UFW."""

from __future__ import annotations

import os

import pytest
from agent_backup_tree import link, put, sha

from balctl.backup_scope import HAPROXY, UFW, Scope, ScopeError, gather, ufw_binary
from balctl.paths import HostPaths


def _paths(scope: Scope) -> list[str]:
    return [entry["path"] for entry in scope.entries]


def _cfg(paths: HostPaths, body: str, global_lines: str = "") -> None:
    put(paths, "/etc/haproxy/haproxy.cfg", f"global\n{global_lines}\n{body}", 0o640)


def test_trees_and_their_entries(agent_root: HostPaths) -> None:
    paths = agent_root
    _cfg(paths, "defaults\n    mode http\n")
    put(paths, "/etc/haproxy/conf.d/10-web.cfg", "frontend a\n")
    put(paths, "/etc/haproxy/conf.d/.hidden.cfg", "x")
    put(paths, "/etc/haproxy/conf.d/notes.txt", "x")
    put(paths, "/etc/haproxy/certs/site.pem", "PEM", 0o600)
    put(paths, "/etc/haproxy/certs/deep/other.pem", "PEM2")
    put(paths, "/etc/haproxy/errors/503.http", "not in scope")
    put(paths, "/etc/letsencrypt/archive/ex.net/cert1.pem", "C1")
    link(paths, "/etc/letsencrypt/live/ex.net/cert.pem", "../../archive/ex.net/cert1.pem")

    scope = gather(paths, HAPROXY)

    assert _paths(scope) == [
        "/etc/haproxy/certs/deep/other.pem",
        "/etc/haproxy/certs/site.pem",
        "/etc/haproxy/conf.d/10-web.cfg",
        "/etc/haproxy/haproxy.cfg",
        "/etc/letsencrypt/archive/ex.net/cert1.pem",
        "/etc/letsencrypt/live/ex.net/cert.pem",
    ]
    by_path = {entry["path"]: entry for entry in scope.entries}
    cfg = by_path["/etc/haproxy/haproxy.cfg"]
    text = paths.haproxy_cfg.read_bytes()
    assert cfg == {
        "path": "/etc/haproxy/haproxy.cfg",
        "type": "file",
        "size": len(text),
        "mode": "0640",
        "owner": "root:root" if os.geteuid() == 0 else cfg["owner"],
        "sha256": sha(text),
    }
    assert by_path["/etc/haproxy/certs/site.pem"]["mode"] == "0600"
    live = by_path["/etc/letsencrypt/live/ex.net/cert.pem"]
    target = "../../archive/ex.net/cert1.pem"
    assert live["type"] == "symlink" and live["link"] == target
    assert live["size"] == len(target) and live["sha256"] == sha(target)
    assert live["mode"] == "0777"
    assert scope.skipped == []


def test_references_crt_dir_crt_list_bases_and_variables(
    agent_root: HostPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = agent_root
    monkeypatch.setenv("CERT_DIR", "/etc/ssl/edge")
    put(paths, "/etc/ssl/edge/a.pem", "A")
    put(paths, "/etc/ssl/edge/a.pem.key", "AK")
    put(paths, "/etc/ssl/edge/b.pem", "B")
    put(paths, "/etc/ssl/edge/sub/ignored.pem", "S")
    crt_list = "# comment\nlisted.pem [ca-file ca2.pem alpn h2] x.net\n"
    put(paths, "/etc/ssl/lists/sites.txt", crt_list)
    put(paths, "/etc/ssl/crts/listed.pem", "L")
    put(paths, "/etc/ssl/cas/ca2.pem", "CA2")
    put(paths, "/etc/ssl/cas/ca.pem", "CA")
    put(paths, "/etc/pki/crl.pem", "CRL")
    put(paths, "/etc/ssl/client.pem", "CLIENT")
    root = paths.root
    _cfg(
        paths,
        "frontend fe\n"
        f'    bind :443 ssl crt "{root}${{CERT_DIR}}" crt-list "{root}/etc/ssl/lists/sites.txt"'
        " ca-file ca.pem crl-file /nowhere/crl.pem\n"
        "backend be\n"
        f"    default-server ca-file ca.pem crl-file {root}/etc/pki/crl.pem\n"
        f"    server s1 127.0.0.1:1 ssl crt {root}/etc/ssl/client.pem\n"
        "    server s2 127.0.0.1:2 ssl crt relative.pem\n",
        f"    crt-base {root}/etc/ssl/crts\n    ca-base {root}/etc/ssl/cas\n",
    )

    scope = gather(paths, HAPROXY)

    assert _paths(scope) == [
        "/etc/haproxy/haproxy.cfg",
        "/etc/pki/crl.pem",
        "/etc/ssl/cas/ca.pem",
        "/etc/ssl/cas/ca2.pem",
        "/etc/ssl/client.pem",
        "/etc/ssl/crts/listed.pem",
        "/etc/ssl/edge/a.pem",
        "/etc/ssl/edge/a.pem.key",
        "/etc/ssl/edge/b.pem",
        "/etc/ssl/lists/sites.txt",
    ]
    assert {"path": "/nowhere/crl.pem", "reason": "outside /etc"} in scope.skipped
    assert {"path": "/etc/ssl/crts/relative.pem", "reason": "missing"} in scope.skipped


def test_references_outside_etc_are_skipped_not_captured(agent_root: HostPaths) -> None:
    paths = agent_root
    put(paths, "/srv/certs/x.pem", "X")
    _cfg(
        paths,
        f"frontend fe\n    bind :443 ssl crt {paths.root}/srv/certs/x.pem ca-file /opt/ca.pem\n",
    )
    scope = gather(paths, HAPROXY)
    assert _paths(scope) == ["/etc/haproxy/haproxy.cfg"]
    # Under the root, a path is named as on the host it stands for.
    assert scope.skipped == [
        {"path": "/srv/certs/x.pem", "reason": "outside /etc"},
        {"path": "/opt/ca.pem", "reason": "outside /etc"},
    ]


def test_relative_reference_without_a_base_is_skipped(agent_root: HostPaths) -> None:
    _cfg(agent_root, "frontend fe\n    bind :443 ssl crt site.pem\n")
    scope = gather(agent_root, HAPROXY)
    assert scope.skipped == [
        {"path": "site.pem", "reason": "relative path and no absolute crt-base in global"}
    ]


def test_symlinks_are_kept_when_a_restore_can_make_them_else_followed(
    agent_root: HostPaths,
) -> None:
    paths = agent_root
    root = paths.root
    put(paths, "/etc/ssl/private/edge.pem", "EDGE")
    put(paths, "/etc/mycerts/other.pem", "OTHER")
    put(paths, "/srv/outside.pem", "OUTSIDE")
    # Referenced, pointing into /etc/ssl: kept, and its target captured.
    link(paths, "/etc/haproxy/certs/edge.pem", f"{root}/etc/ssl/private/edge.pem")
    # Not referenced: a restore would not be allowed to make its target: captured as a file.
    link(paths, "/etc/haproxy/certs/other.pem", "../../mycerts/other.pem")
    link(paths, "/etc/haproxy/certs/far.pem", f"{root}/srv/outside.pem")
    link(paths, "/etc/haproxy/certs/dangling.pem", "/nowhere/x.pem")
    _cfg(paths, f"frontend fe\n    bind :443 ssl crt {root}/etc/haproxy/certs/edge.pem\n")

    scope = gather(paths, HAPROXY)

    by_path = {entry["path"]: entry for entry in scope.entries}
    assert by_path["/etc/haproxy/certs/edge.pem"]["type"] == "symlink"
    assert by_path["/etc/ssl/private/edge.pem"]["sha256"] == sha("EDGE")
    assert by_path["/etc/haproxy/certs/other.pem"]["type"] == "file"
    assert by_path["/etc/haproxy/certs/other.pem"]["sha256"] == sha("OTHER")
    assert by_path["/etc/haproxy/certs/far.pem"]["sha256"] == sha("OUTSIDE")
    assert "/etc/mycerts/other.pem" not in by_path
    assert "/etc/haproxy/certs/dangling.pem" not in by_path
    assert scope.skipped == [
        {
            "path": "/etc/haproxy/certs/dangling.pem",
            "reason": "symlink to /nowhere/x.pem, which is missing or outside the backup scope",
        }
    ]


def test_ufw_scope_and_installed_check(agent_root: HostPaths) -> None:
    paths = agent_root
    assert ufw_binary(paths) is None
    put(paths, "/usr/sbin/ufw", "#!/bin/sh\necho Status: active\n", 0o755)
    assert ufw_binary(paths) == f"{paths.root}/usr/sbin/ufw"
    put(paths, "/etc/ufw/user.rules", "*filter\n")
    put(paths, "/etc/ufw/before.rules", "*filter\n")
    put(paths, "/etc/ufw/sysctl.conf", "not captured")
    put(paths, "/etc/ufw/ufw.conf", "ENABLED=yes\n")
    put(paths, "/etc/default/ufw", "IPV6=yes\n")
    assert _paths(gather(paths, UFW)) == [
        "/etc/default/ufw",
        "/etc/ufw/before.rules",
        "/etc/ufw/ufw.conf",
        "/etc/ufw/user.rules",
    ]


def test_scope_bounds_refuse_the_backup(
    agent_root: HostPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = agent_root
    _cfg(paths, "")
    for n in range(4):
        put(paths, f"/etc/haproxy/certs/{n}.pem", "x" * 10)
    monkeypatch.setattr("balctl.backup_scope.MAX_ENTRIES", 3)
    with pytest.raises(ScopeError, match="more than 3 files"):
        gather(paths, HAPROXY)
    monkeypatch.setattr("balctl.backup_scope.MAX_ENTRIES", 100)
    monkeypatch.setattr("balctl.backup_scope.MAX_TOTAL_BYTES", 20)
    with pytest.raises(ScopeError, match="larger than"):
        gather(paths, HAPROXY)
