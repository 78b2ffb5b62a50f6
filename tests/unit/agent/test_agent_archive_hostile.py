"""Hostile archives are refused as a whole: nothing is written outside the staging folder, and
the staging folder is gone afterwards."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import pytest
from agent_backup_tree import file_entry, link_entry, listing, member, sha, tar_gz

from balctl.archive_extract import Staged, stage
from balctl.backup_manifest import StagingError
from balctl.paths import HostPaths
from balctl.restore_scope import RestoreScope

CFG = "global\ndefaults\n    mode http\n"
CFG_ENTRY = file_entry("/etc/haproxy/haproxy.cfg", CFG)
CFG_MEMBER = member("etc/haproxy/haproxy.cfg", CFG)
THROUGH = "../../letsencrypt/live/x"


class Stager:
    def __init__(self, paths: HostPaths, tmp_path: Path) -> None:
        self.paths = paths
        self.tmp_path = tmp_path
        self.work = paths.restore_dir / "1"
        self.work.mkdir(parents=True)
        self.archive = self.work / "archive.tar.gz"
        self.staging = self.work / "staging"

    def run(
        self,
        members: list[tuple[tarfile.TarInfo, bytes]],
        entries: list[dict[str, Any]],
        scope: RestoreScope | None = None,
        data: bytes | None = None,
        expected: str | None = None,
        before: set[str] | None = None,
    ) -> Staged:
        raw = data if data is not None else tar_gz(members)
        self.archive.write_bytes(raw)
        before.update(listing(self.tmp_path)) if before is not None else None
        return stage(
            self.archive,
            expected or sha(raw),
            entries,
            self.staging,
            scope or RestoreScope(),
            self.paths.root,
        )

    def refused(self, match: str, *args: Any, **kwargs: Any) -> None:
        before: set[str] = set()
        with pytest.raises(StagingError, match=match):
            self.run(*args, before=before, **kwargs)
        assert not self.staging.exists()
        assert listing(self.tmp_path) == before


@pytest.fixture
def stager(agent_root: HostPaths, tmp_path: Path) -> Stager:
    return Stager(agent_root, tmp_path)


def test_a_wrong_archive_checksum_is_refused(stager: Stager) -> None:
    stager.refused(
        "its SHA-256 is [0-9a-f]{64}, not the snapshot's 0{64}",
        [CFG_MEMBER],
        [CFG_ENTRY],
        expected="0" * 64,
    )


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("/etc/haproxy/haproxy.cfg", "is an absolute name"),
        ("etc/haproxy/../haproxy/haproxy.cfg", "has a '..' part"),
        ("", "a member has an empty name"),
        ("etc/haproxy/other.cfg", "'etc/haproxy/other.cfg' is not in the manifest"),
        ("./etc/haproxy/haproxy.cfg", "is not in the manifest"),
    ],
)
def test_bad_member_names_are_refused(stager: Stager, name: str, match: str) -> None:
    stager.refused(match, [CFG_MEMBER, member(name, "x")], [CFG_ENTRY])


def test_duplicate_members_are_refused(stager: Stager) -> None:
    stager.refused("appears twice", [CFG_MEMBER, CFG_MEMBER], [CFG_ENTRY])


def test_a_manifest_file_missing_from_the_archive_is_refused(stager: Stager) -> None:
    extra = file_entry("/etc/haproxy/certs/a.pem", "A")
    stager.refused(
        "/etc/haproxy/certs/a.pem is in the manifest but not in the archive",
        [CFG_MEMBER],
        [CFG_ENTRY, extra],
    )


def test_files_outside_the_restore_scope_are_refused(stager: Stager) -> None:
    stager.refused(
        "/etc/passwd lies outside the restore scope",
        [CFG_MEMBER, member("etc/passwd", "root::0:0")],
        [CFG_ENTRY, file_entry("/etc/passwd", "root::0:0")],
    )


def test_unreferenced_files_under_etc_ssl_are_refused(stager: Stager) -> None:
    stager.refused(
        "/etc/ssl/private/x.pem is not referenced by the restored configuration",
        [CFG_MEMBER, member("etc/ssl/private/x.pem", "X")],
        [CFG_ENTRY, file_entry("/etc/ssl/private/x.pem", "X")],
    )


def test_referenced_files_are_staged_under_allowed_folders_only(stager: Stager) -> None:
    root = stager.paths.root
    cfg = f"frontend fe\n    bind :443 ssl crt {root}/etc/mycerts/x.pem\n"
    members = [member("etc/haproxy/haproxy.cfg", cfg), member("etc/mycerts/x.pem", "X")]
    entries = [file_entry("/etc/haproxy/haproxy.cfg", cfg), file_entry("/etc/mycerts/x.pem", "X")]
    stager.refused("list the folder in BALCTL_RESTORE_DIRS", members, entries)

    staged = stager.run(members, entries, RestoreScope(("/etc/ssl", "/etc/mycerts")))
    assert staged.path("/etc/mycerts/x.pem").read_text() == "X"


@pytest.mark.parametrize(
    "target",
    ["/etc/shadow", "../../../shadow", "../../balctl/agent.env", "{root}/etc/ssl/x.pem", "/tmp"],
)
def test_symlinks_leaving_the_scope_are_refused(stager: Stager, target: str) -> None:
    target = target.format(root=stager.paths.root)
    path = "/etc/haproxy/certs/evil.pem"
    stager.refused(
        f"the symlink {path} points to .*(outside the restore scope|outside this host's root)",
        [CFG_MEMBER, member(path[1:], type=tarfile.SYMTYPE, linkname=target)],
        [CFG_ENTRY, link_entry(path, target)],
    )


def test_a_symlink_through_another_symlink_is_refused(stager: Stager) -> None:
    members = [
        CFG_MEMBER,
        member("etc/letsencrypt/live", type=tarfile.SYMTYPE, linkname="archive"),
        member("etc/haproxy/certs/x.pem", type=tarfile.SYMTYPE, linkname=THROUGH),
    ]
    entries = [
        CFG_ENTRY,
        link_entry("/etc/letsencrypt/live", "archive"),
        link_entry("/etc/haproxy/certs/x.pem", THROUGH),
    ]
    stager.refused("through the symlink /etc/letsencrypt/live", members, entries)


def test_a_path_under_a_symlink_entry_is_refused(stager: Stager) -> None:
    members = [
        CFG_MEMBER,
        member("etc/haproxy/certs/d", type=tarfile.SYMTYPE, linkname="../../letsencrypt"),
        member("etc/haproxy/certs/d/x.pem", "X"),
    ]
    entries = [
        CFG_ENTRY,
        link_entry("/etc/haproxy/certs/d", "../../letsencrypt"),
        file_entry("/etc/haproxy/certs/d/x.pem", "X"),
    ]
    stager.refused("/etc/haproxy/certs/d/x.pem lies under /etc/haproxy/certs/d", members, entries)


def test_a_hardlink_to_a_file_outside_the_archive_is_refused(stager: Stager) -> None:
    path = "/etc/haproxy/certs/x.pem"
    stager.refused(
        "is a hardlink to 'etc/passwd', which is not a regular file earlier in the archive",
        [CFG_MEMBER, member(path[1:], type=tarfile.LNKTYPE, linkname="etc/passwd")],
        [CFG_ENTRY, file_entry(path, "")],
    )


def test_a_hardlink_to_an_archived_file_becomes_a_copy(stager: Stager) -> None:
    path = "/etc/haproxy/certs/x.pem"
    members = [CFG_MEMBER, member(path[1:], type=tarfile.LNKTYPE, linkname=CFG_MEMBER[0].name)]
    staged = stager.run(members, [CFG_ENTRY, file_entry(path, CFG)])
    copy, origin = staged.path(path), staged.path("/etc/haproxy/haproxy.cfg")
    assert copy.read_text() == CFG
    assert copy.stat().st_ino != origin.stat().st_ino


@pytest.mark.parametrize(
    ("kind", "what"),
    [
        (tarfile.CHRTYPE, "a device file"),
        (tarfile.BLKTYPE, "a device file"),
        (tarfile.FIFOTYPE, "a FIFO"),
        (tarfile.DIRTYPE, "a folder"),
        (tarfile.CONTTYPE, "an unsupported member"),
    ],
)
def test_special_members_are_refused(stager: Stager, kind: bytes, what: str) -> None:
    path = "/etc/haproxy/certs/x.pem"
    stager.refused(
        f"'etc/haproxy/certs/x.pem' is {what}",
        [CFG_MEMBER, member(path[1:], type=kind)],
        [CFG_ENTRY, file_entry(path, "")],
    )


def test_a_member_of_another_type_than_its_entry_is_refused(stager: Stager) -> None:
    path = "/etc/haproxy/certs/x.pem"
    stager.refused(
        "is a symlink in the archive but a file in the manifest",
        [CFG_MEMBER, member(path[1:], type=tarfile.SYMTYPE, linkname="y.pem")],
        [CFG_ENTRY, file_entry(path, "y.pem")],
    )


def test_size_or_checksum_differences_are_refused(stager: Stager) -> None:
    stager.refused(
        "holds 3 bytes, the manifest says 4",
        [CFG_MEMBER, member("etc/haproxy/certs/x.pem", "abc")],
        [CFG_ENTRY, file_entry("/etc/haproxy/certs/x.pem", "abcd")],
    )
    stager.refused(
        "/etc/haproxy/certs/x.pem does not match the manifest",
        [CFG_MEMBER, member("etc/haproxy/certs/x.pem", "abc")],
        [CFG_ENTRY, file_entry("/etc/haproxy/certs/x.pem", "xyz")],
    )


def test_a_symlink_whose_text_differs_from_the_manifest_is_refused(stager: Stager) -> None:
    path = "/etc/letsencrypt/live/x/cert.pem"
    stager.refused(
        "points to '../../archive/x/evil.pem', the manifest says",
        [CFG_MEMBER, member(path[1:], type=tarfile.SYMTYPE, linkname="../../archive/x/evil.pem")],
        [CFG_ENTRY, link_entry(path, "../../archive/x/cert1.pem")],
    )


def test_garbage_and_gzip_bombs_are_refused(stager: Stager) -> None:
    stager.refused("not a valid tar.gz", [], [CFG_ENTRY], data=b"not a gzip at all")
    # A 16 MiB pax header compresses to a few KiB.
    info, data = member("etc/haproxy/haproxy.cfg", CFG)
    info.pax_headers = {"comment": "A" * (16 * 1024 * 1024)}
    bomb = tar_gz([(info, data)])
    assert len(bomb) < 100_000
    stager.refused("unpacks to far more than its manifest lists", [], [CFG_ENTRY], data=bomb)


def test_an_invalid_manifest_is_refused(stager: Stager) -> None:
    stager.refused(
        "its manifest is invalid: /etc/haproxy/haproxy.cfg is listed twice",
        [CFG_MEMBER],
        [CFG_ENTRY, CFG_ENTRY],
    )


def test_a_symlink_with_dotdot_after_a_folder_name_is_refused(stager: Stager) -> None:
    # The kernel follows q/r/s (a link to ../../live) before the `..` after it: read as a
    # string, the target looks like /etc/letsencrypt/etc; on disk it is /etc.
    escape = "q/r/s/../../../etc"
    members = [
        CFG_MEMBER,
        member("etc/letsencrypt/q/r/s", type=tarfile.SYMTYPE, linkname="../../live"),
        member("etc/letsencrypt/E", type=tarfile.SYMTYPE, linkname=escape),
    ]
    entries = [
        CFG_ENTRY,
        link_entry("/etc/letsencrypt/q/r/s", "../../live"),
        link_entry("/etc/letsencrypt/E", escape),
    ]
    stager.refused("with '..' after a folder name", members, entries)
