from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from agent_fakes import KEY

from balctl.config import (
    DEFAULT_PROBE_INTERVAL_S,
    PROBE_INTERVAL,
    AgentConfig,
    load_config,
    parse_probe_interval,
    quote,
    read_env_file,
    save_config,
)
from balctl.errors import ConfigError
from balctl.paths import HostPaths


def _cfg(**overrides: str) -> AgentConfig:
    values = {
        "server": "https://cp.example.com",
        "key": KEY,
        "hostname": "edge-1",
        "source_ip": "192.0.2.10",
        "ca_file": "/etc/balctl/ca.pem",
        "public_ip": "203.0.113.7",
        "haproxy_pidfile": "/run/haproxy.pid",
    }
    values.update(overrides)
    return AgentConfig(**values)


def test_agent_env_round_trip_keeps_every_key(agent_root: HostPaths) -> None:
    cfg = _cfg()
    save_config(cfg, agent_root)
    assert load_config(agent_root, environ={}) == cfg


def test_agent_env_omits_unset_optional_keys(agent_root: HostPaths) -> None:
    save_config(AgentConfig("https://cp.example.com", KEY, "edge-1"), agent_root)
    values = read_env_file(agent_root.agent_env)
    assert set(values) == {"BALCTL_SERVER", "BALCTL_KEY", "BALCTL_HOSTNAME"}


def test_agent_env_is_0600_in_a_0700_directory(agent_root: HostPaths) -> None:
    save_config(_cfg(), agent_root)
    assert stat.S_IMODE(agent_root.agent_env.stat().st_mode) == 0o600
    assert stat.S_IMODE(agent_root.etc_dir.stat().st_mode) == 0o700
    # Atomic write: no temporary file is left beside it.
    assert sorted(p.name for p in agent_root.etc_dir.iterdir()) == ["agent.env"]


@pytest.mark.parametrize("value", ["a b", 'it\'s "quoted"', "$HOME `id` \\n \\", "100%"])
def test_awkward_values_read_back_unchanged(tmp_path: Path, value: str) -> None:
    from balctl.config import write_env_file

    path = tmp_path / "etc" / "agent.env"
    write_env_file(path, {"BALCTL_PUBLIC_IP": value})
    assert read_env_file(path) == {"BALCTL_PUBLIC_IP": value}


def test_quote_escapes_what_bash_and_systemd_expand() -> None:
    assert quote('a"b$c`d\\e') == '"a\\"b\\$c\\`d\\\\e"'


def test_values_with_newlines_are_refused() -> None:
    with pytest.raises(ConfigError, match="newlines"):
        quote("a\nBALCTL_KEY=stolen")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_reading_refuses_a_file_others_can_read(agent_root: HostPaths, mode: int) -> None:
    save_config(_cfg(), agent_root)
    os.chmod(agent_root.agent_env, mode)
    with pytest.raises(ConfigError) as caught:
        load_config(agent_root, environ={})
    message = str(caught.value)
    assert f"chmod 600 {agent_root.agent_env}" in message
    assert KEY not in message


def test_environment_overrides_file_values(agent_root: HostPaths) -> None:
    save_config(_cfg(), agent_root)
    env = {"BALCTL_SERVER": "https://other.example.com", "BALCTL_PUBLIC_IP": "198.51.100.1"}
    cfg = load_config(agent_root, environ=env)
    assert cfg.server == "https://other.example.com"
    assert cfg.public_ip == "198.51.100.1"
    assert cfg.hostname == "edge-1"


def test_empty_environment_variable_does_not_override(agent_root: HostPaths) -> None:
    save_config(_cfg(), agent_root)
    assert load_config(agent_root, environ={"BALCTL_HOSTNAME": ""}).hostname == "edge-1"


def test_environment_alone_is_enough_without_a_file(agent_root: HostPaths) -> None:
    env = {"BALCTL_SERVER": "https://cp", "BALCTL_KEY": KEY, "BALCTL_HOSTNAME": "edge-2"}
    assert load_config(agent_root, environ=env).hostname == "edge-2"


def test_missing_file_says_to_enrol(agent_root: HostPaths) -> None:
    with pytest.raises(ConfigError, match="--enrol"):
        load_config(agent_root, environ={})


def test_invalid_address_in_file_is_named(agent_root: HostPaths) -> None:
    save_config(_cfg(public_ip="not-an-ip"), agent_root)
    with pytest.raises(ConfigError, match="BALCTL_PUBLIC_IP"):
        load_config(agent_root, environ={})


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("BALCTL_HOSTNAME=edge-1", "edge-1"),
        ("export BALCTL_HOSTNAME='edge-1'", "edge-1"),
        ('BALCTL_HOSTNAME="edge-1"  # a comment', "edge-1"),
        ("BALCTL_HOSTNAME=edge\\-1", "edge-1"),
    ],
)
def test_reader_accepts_shell_spellings(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "agent.env"
    path.write_text(f"# comment\n\n{line}\n")
    os.chmod(path, 0o600)
    assert read_env_file(path) == {"BALCTL_HOSTNAME": expected}


@pytest.mark.parametrize("line", ['BALCTL_HOSTNAME="edge-1', "BALCTL_HOSTNAME=a b", "no equals"])
def test_reader_names_the_bad_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "agent.env"
    path.write_text(f"# comment\n{line}\n")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="line 2"):
        read_env_file(path)


def test_repr_never_shows_the_key() -> None:
    cfg = _cfg()
    # str(), formatting and a log line go through the same __repr__, as does a container's.
    logged = logging.LogRecord("balctl", logging.INFO, __file__, 1, "cfg %s", (cfg,), None)
    for shown in (repr(cfg), str(cfg), f"{cfg}", logged.getMessage(), repr([cfg])):
        assert KEY not in shown
        assert "key=" not in shown
        assert "hostname='edge-1'" in shown and shown.count("AgentConfig(") == 1
    assert cfg.key == KEY  # left out of the repr only


# -- BALCTL_PROBE_INTERVAL_S --------------------------------------------------------------------


def test_probe_interval_defaults_to_a_fifth_of_a_second(agent_root: HostPaths) -> None:
    save_config(_cfg(), agent_root)
    cfg = load_config(agent_root, environ={})
    assert cfg.probe_interval_s is None
    assert cfg.probe_interval == DEFAULT_PROBE_INTERVAL_S == 0.2
    assert PROBE_INTERVAL not in read_env_file(agent_root.agent_env)


def test_probe_interval_round_trips_through_agent_env(agent_root: HostPaths) -> None:
    cfg = _cfg()._replace(probe_interval_s=0.1)
    save_config(cfg, agent_root)
    assert read_env_file(agent_root.agent_env)[PROBE_INTERVAL] == "0.1"
    assert load_config(agent_root, environ={}) == cfg
    assert load_config(agent_root, environ={PROBE_INTERVAL: "0.5"}).probe_interval == 0.5


@pytest.mark.parametrize(("raw", "expected"), [("0.05", 0.05), ("5", 5.0), (" 1e-1 ", 0.1)])
def test_probe_interval_takes_seconds_from_005_to_5(raw: str, expected: float) -> None:
    assert parse_probe_interval(raw) == expected


@pytest.mark.parametrize("raw", ["0.01", "0", "-1", "5.5", "fast", "nan", "inf"])
def test_probe_interval_out_of_range_is_refused_by_name(agent_root: HostPaths, raw: str) -> None:
    save_config(_cfg(), agent_root)
    with pytest.raises(ConfigError, match="BALCTL_PROBE_INTERVAL_S=.* from 0.05 to 5"):
        load_config(agent_root, environ={PROBE_INTERVAL: raw})
