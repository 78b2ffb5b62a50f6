"""Where a restore may write: the static scope, BALCTL_RESTORE_DIRS, referenced files."""

from __future__ import annotations

import pytest

from balctl.errors import ConfigError
from balctl.restore_scope import RestoreScope, in_replaced_set, in_static_scope, restore_dirs


@pytest.mark.parametrize(
    ("path", "static"),
    [
        ("/etc/haproxy/haproxy.cfg", True),
        ("/etc/haproxy/conf.d/10-web.cfg", True),
        ("/etc/haproxy/conf.d/.hidden.cfg", False),
        ("/etc/haproxy/conf.d/notes.txt", False),
        ("/etc/haproxy/conf.d/sub/x.cfg", False),
        ("/etc/haproxy/certs/a/b.pem", True),
        ("/etc/haproxy/errors/503.http", False),
        ("/etc/letsencrypt/live/x/cert.pem", True),
        ("/etc/ssl/private/x.pem", False),
        ("/etc/balctl/agent.env", False),
    ],
)
def test_static_scope(path: str, static: bool) -> None:
    assert in_static_scope(path) is static


def test_the_replaced_set_is_haproxy_only() -> None:
    assert in_replaced_set("/etc/haproxy/certs/x.pem")
    assert not in_replaced_set("/etc/letsencrypt/live/x/cert.pem")


def test_restore_dirs_extend_the_defaults() -> None:
    assert restore_dirs({}) == ("/etc/ssl", "/etc/pki")
    found = restore_dirs({"BALCTL_RESTORE_DIRS": "/etc/mycerts/:/etc/ssl: :/etc/a/b"})
    assert found == ("/etc/ssl", "/etc/pki", "/etc/mycerts", "/etc/a/b")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("/etc", "not an absolute folder under /etc/"),
        ("etc/x", "not an absolute folder under /etc/"),
        ("/srv/certs", "not an absolute folder under /etc/"),
        ("/etc/../srv", "not an absolute folder under /etc/"),
        ("/etc/balctl", "holds the agent's own settings and secret"),
        ("/etc/balctl/x", "holds the agent's own settings and secret"),
    ],
)
def test_restore_dirs_refuse_anything_else(raw: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        restore_dirs({"BALCTL_RESTORE_DIRS": raw})


def test_referenced_files_only_under_allowed_folders() -> None:
    scope = RestoreScope(("/etc/ssl", "/etc/mycerts"))
    referenced = {"/etc/mycerts/a.pem", "/etc/other/b.pem"}
    assert scope.holds("/etc/mycerts/a.pem", referenced)
    assert not scope.holds("/etc/mycerts/c.pem", referenced)
    assert not scope.holds("/etc/other/b.pem", referenced)
    assert "BALCTL_RESTORE_DIRS" in scope.refusal("/etc/other/b.pem", referenced)
    assert "not referenced" in scope.refusal("/etc/mycerts/c.pem", referenced)
