"""The agent reads "${VAR}" in haproxy.cfg from the environment HAProxy gets, which never holds
the agent's secret: a configuration that names BALCTL_KEY must not carry the secret into the
topology the agent reports (under systemd, agent.env is the agent's environment)."""

from __future__ import annotations

import pytest

from balctl.haproxy_cfg import parse_sections, split_words, topology
from balctl.proc import child_env

SECRET = "k3y-" + "s" * 44
CONFIG = """\
backend be_echo
    server "s-${BALCTL_KEY}" 127.0.0.1:1
    server "c-${ECHO_CONTROL}" 127.0.0.1:2
"""


@pytest.fixture(autouse=True)
def agent_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BALCTL_KEY", SECRET)
    monkeypatch.setenv("ECHO_CONTROL", "visible")


def test_the_topology_never_holds_the_secret() -> None:
    reported = topology(parse_sections(CONFIG))
    assert reported["backends"] == [{"name": "be_echo", "servers": ["s-", "c-visible"]}]
    assert SECRET not in repr(reported)


def test_a_line_expands_as_haproxy_would_see_it() -> None:
    assert "BALCTL_KEY" not in child_env()
    assert split_words('bind "${BALCTL_KEY}x:${ECHO_CONTROL}"') == ["bind", "x:visible"]
