"""Building a snapshot archive and staging it again: a deterministic round trip."""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

from agent_backup_tree import link, put, sha

from balctl import archive
from balctl.archive_extract import stage
from balctl.backup_scope import HAPROXY, gather
from balctl.paths import HostPaths
from balctl.restore_scope import RestoreScope


def _host(paths: HostPaths) -> None:
    put(paths, "/etc/haproxy/haproxy.cfg", "global\ndefaults\n    mode http\n", 0o640)
    put(paths, "/etc/haproxy/conf.d/10-web.cfg", "frontend fe\n    bind :80\n")
    put(paths, "/etc/haproxy/certs/site.pem", b"\x00binary\xffPEM", 0o600)
    put(paths, "/etc/letsencrypt/archive/ex.net/cert1.pem", "C1")
    link(paths, "/etc/letsencrypt/live/ex.net/cert.pem", "../../archive/ex.net/cert1.pem")
    os.utime(paths.haproxy_cfg, (1_700_000_000, 1_700_000_000))


def test_archive_is_deterministic_and_names_members_without_the_slash(
    agent_root: HostPaths,
) -> None:
    _host(agent_root)
    entries = gather(agent_root, HAPROXY).entries
    first = archive.build(agent_root, entries)
    second = archive.build(agent_root, entries)
    try:
        assert first.sha256 == second.sha256
        assert first.path.read_bytes() == second.path.read_bytes()
        assert first.sha256 == sha(first.path.read_bytes())
        assert first.size == first.path.stat().st_size
        assert first.entries == entries
        assert first.path.parent == agent_root.state_dir
        assert stat.S_IMODE(agent_root.state_dir.stat().st_mode) == 0o700
        with tarfile.open(first.path) as tar:
            members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == sorted(e["path"][1:] for e in entries)
        cfg = members["etc/haproxy/haproxy.cfg"]
        assert cfg.isreg() and cfg.mode == 0o640 and cfg.mtime == 1_700_000_000
        assert cfg.uid == os.geteuid() and cfg.uname
        live = members["etc/letsencrypt/live/ex.net/cert.pem"]
        assert live.issym() and live.linkname == "../../archive/ex.net/cert1.pem"
        assert not any(m.islnk() for m in members.values())
    finally:
        first.path.unlink()
        second.path.unlink()


def test_round_trip_stages_the_same_files(agent_root: HostPaths, tmp_path: Path) -> None:
    _host(agent_root)
    entries = gather(agent_root, HAPROXY).entries
    built = archive.build(agent_root, entries)
    staging = tmp_path / "staging"

    staged = stage(built.path, built.sha256, entries, staging, RestoreScope(), agent_root.root)

    for entry in entries:
        host = agent_root.host(entry["path"])
        copy = staged.path(entry["path"])
        if entry["type"] == "symlink":
            assert os.readlink(copy) == os.readlink(host)
        else:
            assert copy.read_bytes() == host.read_bytes()
            assert stat.S_IMODE(copy.stat().st_mode) == stat.S_IMODE(host.stat().st_mode)
    assert staged.path("/etc/haproxy/haproxy.cfg").stat().st_mtime == 1_700_000_000
    assert stat.S_IMODE(staging.stat().st_mode) == 0o700
    built.path.unlink()


def test_a_file_changed_since_the_scope_was_gathered_is_archived_as_it_is_now(
    agent_root: HostPaths,
) -> None:
    _host(agent_root)
    entries = gather(agent_root, HAPROXY).entries
    agent_root.haproxy_cfg.write_text("global\n    # changed\n")
    built = archive.build(agent_root, entries)
    cfg = next(e for e in built.entries if e["path"] == "/etc/haproxy/haproxy.cfg")
    assert cfg["sha256"] == sha("global\n    # changed\n")
    built.path.unlink()
