"""Restore safety beyond the archive's own checks: symlink texts that the kernel reads
differently from a string, folders that are symlinks on the target host, and configurations
from another member that would make HAProxy run code."""

from __future__ import annotations

from pathlib import Path

import pytest

from balctl.errors import JobError
from balctl.haproxy_cfg import parse_sections
from balctl.paths import HostPaths
from balctl.restore_plan import _refuse_linked_folders
from balctl.restore_scope import code_directives


def test_code_running_directives_are_found() -> None:
    sections = parse_sections(
        "global\n    lua-load /etc/haproxy/certs/x.lua\n"
        "program sidecar\n    command /bin/true\n"
        "backend app\n    option external-check\n    external-check command /bin/sh\n"
        "frontend web\n    bind :80\n"
    )
    found = code_directives(sections)
    assert found == [
        "lua-load /etc/haproxy/certs/x.lua",
        "program sidecar",
        "option external-check in backend app",
        "external-check command",
    ]


def test_a_plain_configuration_runs_no_code() -> None:
    sections = parse_sections("global\n    maxconn 100\nfrontend web\n    bind :80\n")
    assert code_directives(sections) == []


def test_a_symlinked_certs_folder_on_the_host_is_refused(tmp_path: Path) -> None:
    paths = HostPaths.under(str(tmp_path))
    elsewhere = tmp_path / "etc/ssl/private"
    elsewhere.mkdir(parents=True)
    (tmp_path / "etc/haproxy").mkdir(parents=True)
    (tmp_path / "etc/haproxy/certs").symlink_to(elsewhere)
    with pytest.raises(JobError, match="/etc/haproxy/certs is a symlink on this host"):
        _refuse_linked_folders(paths, "/etc/haproxy/certs/site.pem")
    _refuse_linked_folders(paths, "/etc/haproxy/haproxy.cfg")  # a real folder: fine
