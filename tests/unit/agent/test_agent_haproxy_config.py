"""Reading haproxy.cfg (words, sections, sockets, topology) and the admin-socket recipe's
edits: idempotent add, exact removal, and rollback when the reload fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agent_fakes import KEY

from balctl import haproxy_ctl, runtime_api
from balctl.config import AgentConfig
from balctl.files import backup_path
from balctl.haproxy_cfg import config_args, parse_sections, split_words, stats_sockets, topology
from balctl.jobs import admin_socket
from balctl.jobs.model import JobContext
from balctl.paths import HostPaths
from balctl.proc import Deadline

CONFIG = """\
# managed by hand
global
    log /dev/log local0
    stats socket /run/haproxy/other.sock mode 660 level operator
    stats timeout 30s

defaults
    mode http

frontend fe_web
    bind 127.0.0.1:80,127.0.0.1:81 name web
    bind "${FE_ADDR}" ssl crt /etc/x.pem  # the TLS side
    default_backend be_app

backend be_app
    server app1 10.0.0.1:80 check
    server-template dyn 3 10.0.0.9:80

listen li_tcp
    bind :9000
    server t1 10.0.0.2:9000
"""


def test_split_words_follows_haproxys_quoting() -> None:
    env = {"ADDR": "10.0.0.1", "PORT": "443"}
    assert split_words('  bind "${ADDR}:$PORT" ssl # comment', env) == [
        "bind",
        "10.0.0.1:443",
        "ssl",
    ]
    escaped = split_words("acl x path '/a b' \\#not-comment", env)
    assert escaped == ["acl", "x", "path", "/a b", "#not-comment"]
    quoted = split_words('x "a\\"b" "$NOPE" "$" \'$ADDR\'', env)
    assert quoted == ["x", 'a"b', "", "$", "$ADDR"]
    assert split_words("   # only a comment", env) == []
    assert split_words('x ""', env) == ["x", ""]


def test_sections_sockets_and_topology() -> None:
    sections = parse_sections(CONFIG, {"FE_ADDR": "0.0.0.0:443"})
    assert [(s.kind, s.name) for s in sections] == [
        ("global", ""),
        ("defaults", ""),
        ("frontend", "fe_web"),
        ("backend", "be_app"),
        ("listen", "li_tcp"),
    ]
    [sock] = stats_sockets(sections)
    assert sock.path == Path("/run/haproxy/other.sock") and sock.level == "operator"
    assert topology(sections) == {
        "listeners": [
            {"frontend": "fe_web", "bind": "127.0.0.1:80"},
            {"frontend": "fe_web", "bind": "127.0.0.1:81"},
            {"frontend": "fe_web", "bind": "0.0.0.0:443"},
            {"frontend": "li_tcp", "bind": ":9000"},
        ],
        "backends": [
            {"name": "be_app", "servers": ["app1", "dyn1", "dyn2", "dyn3"]},
            {"name": "li_tcp", "servers": ["t1"]},
        ],
    }


def test_stats_sockets_skip_tcp_and_relative_paths() -> None:
    text = (
        "global\n"
        "    stats socket ipv4@127.0.0.1:9999 level admin\n"
        "    stats socket relative.sock level admin\n"
        "    stats socket unix@/run/a.sock level admin\n"
    )
    assert [s.path for s in stats_sockets(parse_sections(text, {}))] == [Path("/run/a.sock")]


def test_socket_candidates_put_serverctls_socket_first(tmp_path: Path) -> None:
    paths = HostPaths.under(str(tmp_path))
    paths.haproxy_dir.mkdir(parents=True)
    paths.haproxy_cfg.write_text(
        "global\n"
        "    stats socket /run/user.sock level user\n"
        "    stats socket /run/adm.sock level admin\n"
        f"    stats socket {paths.admin_socket} level admin\n"
    )
    assert runtime_api.candidates(paths) == [
        paths.admin_socket,
        Path("/run/adm.sock"),
        Path("/run/user.sock"),
    ]


def test_socket_candidates_without_a_config(tmp_path: Path) -> None:
    paths = HostPaths.under(str(tmp_path))
    assert runtime_api.candidates(paths) == []
    paths.admin_socket.parent.mkdir(parents=True)
    paths.admin_socket.write_text("")  # stands in for the socket file
    assert runtime_api.candidates(paths) == [paths.admin_socket]


def test_config_args_add_conf_d_only_with_cfg_files(tmp_path: Path) -> None:
    paths = HostPaths.under(str(tmp_path))
    assert config_args(paths) == ["-f", str(paths.haproxy_cfg)]
    paths.haproxy_conf_d.mkdir(parents=True)
    (paths.haproxy_conf_d / ".hidden.cfg").write_text("")
    (paths.haproxy_conf_d / "notes.txt").write_text("")
    assert config_args(paths) == ["-f", str(paths.haproxy_cfg)]
    (paths.haproxy_conf_d / "10-app.cfg").write_text("")
    assert config_args(paths) == ["-f", str(paths.haproxy_cfg), "-f", str(paths.haproxy_conf_d)]


# -- the admin-socket recipe's edits ------------------------------------------------------------


@pytest.fixture
def paths(tmp_path: Path) -> HostPaths:
    return HostPaths.under(str(tmp_path / "root"))


def _line(paths: HostPaths) -> str:
    return f"    stats socket {paths.admin_socket} mode 600 level admin expose-fd listeners\n"


def test_add_lines_goes_to_the_end_of_the_global_section(paths: HostPaths) -> None:
    text, changed = admin_socket.add_lines(CONFIG, paths)
    assert changed
    assert text == CONFIG.replace(
        "    stats timeout 30s\n",
        "    stats timeout 30s\n" + _line(paths) + "    stats timeout 2m\n",
    )
    assert admin_socket.is_enabled(text, paths)
    assert admin_socket.add_lines(text, paths) == (text, False)  # twice: no change


def test_add_lines_adds_only_what_is_missing(paths: HostPaths) -> None:
    text = "global\n    stats   timeout   2m\n\ndefaults\n    mode http"
    added, changed = admin_socket.add_lines(text, paths)
    assert changed
    assert (
        added == "global\n    stats   timeout   2m\n" + _line(paths) + "\ndefaults\n    mode http"
    )


def test_add_lines_makes_a_global_section_when_there_is_none(paths: HostPaths) -> None:
    text, changed = admin_socket.add_lines("defaults\n    mode http\n", paths)
    assert changed
    assert text == "global\n" + _line(paths) + "    stats timeout 2m\n\ndefaults\n    mode http\n"


def test_add_lines_to_a_file_without_a_final_newline(paths: HostPaths) -> None:
    text, _ = admin_socket.add_lines("global\n    daemon", paths)
    assert text == "global\n    daemon\n" + _line(paths) + "    stats timeout 2m\n"


def test_a_line_in_another_section_does_not_count(paths: HostPaths) -> None:
    text = "global\n    daemon\n\nfrontend x\n" + _line(paths)
    assert not admin_socket.is_enabled(text, paths)
    assert admin_socket.add_lines(text, paths)[1]


def test_remove_lines_removes_exactly_the_two_lines(paths: HostPaths) -> None:
    enabled, _ = admin_socket.add_lines(CONFIG, paths)
    assert admin_socket.remove_lines(enabled, paths) == (CONFIG, True)
    assert admin_socket.remove_lines(CONFIG, paths) == (CONFIG, False)
    # Another socket at the same path with other options is the operator's: it stays.
    other = "global\n    stats socket " + str(paths.admin_socket) + " mode 660 level admin\n"
    assert admin_socket.remove_lines(other, paths) == (other, False)


# -- the recipe's apply, with the reload faked -----------------------------------------------


class FakeReload:
    def __init__(self, *steps: haproxy_ctl.Step) -> None:
        self.steps = list(steps)
        self.seen: list[str] = []

    def __call__(self, paths: HostPaths, pidfile: Any, deadline: Deadline) -> haproxy_ctl.Step:
        self.seen.append(paths.haproxy_cfg.read_text())
        return self.steps.pop(0)


def _context(paths: HostPaths) -> JobContext:
    cfg = AgentConfig(server="http://127.0.0.1:9", key=KEY, hostname="edge-1")
    return JobContext(1, cfg, paths, Deadline(60))


def _write(paths: HostPaths, text: str) -> None:
    paths.haproxy_dir.mkdir(parents=True)
    paths.haproxy_cfg.write_text(text)


def test_apply_writes_keeps_a_backup_and_reloads(
    paths: HostPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(paths, CONFIG)
    reload = FakeReload(haproxy_ctl.Step(True, "haproxy reloaded", took_over=True))
    monkeypatch.setattr(haproxy_ctl, "reload", reload)
    outcome = admin_socket.enable({}, _context(paths))
    assert outcome.ok and outcome.result == {"changed": True}
    assert reload.seen == [paths.haproxy_cfg.read_text()]
    assert admin_socket.is_enabled(reload.seen[0], paths)
    assert backup_path(paths.haproxy_cfg).read_text() == CONFIG
    assert paths.admin_socket.parent.is_dir()


def test_apply_restores_the_file_when_the_reload_is_refused(
    paths: HostPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(paths, CONFIG)
    refused = haproxy_ctl.Step(False, "refusing to reload: configuration is invalid: [ALERT] x")
    reload = FakeReload(refused)
    monkeypatch.setattr(haproxy_ctl, "reload", reload)
    outcome = admin_socket.enable({}, _context(paths))
    assert not outcome.ok
    assert outcome.summary == (
        "refusing to reload: configuration is invalid: [ALERT] x; restored the previous haproxy.cfg"
    )
    assert paths.haproxy_cfg.read_text() == CONFIG
    assert len(reload.seen) == 1  # nothing had taken over: no second reload


def test_apply_reloads_back_when_a_new_process_had_taken_over(
    paths: HostPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(paths, CONFIG)
    reload = FakeReload(
        haproxy_ctl.Step(False, "haproxy reloaded (pid 2 replaced 1); but x", took_over=True),
        haproxy_ctl.Step(True, "haproxy reloaded (pid 3 replaced 2)", took_over=True),
    )
    monkeypatch.setattr(haproxy_ctl, "reload", reload)
    outcome = admin_socket.enable({}, _context(paths))
    assert not outcome.ok
    assert outcome.summary.endswith("restored the previous haproxy.cfg and reloaded it")
    assert reload.seen[1] == CONFIG  # the second reload ran with the restored file
    assert outcome.result == {"changed": False}


def test_apply_without_a_config_fails_clearly(paths: HostPaths) -> None:
    outcome = admin_socket.enable({}, _context(paths))
    assert not outcome.ok
    assert outcome.summary.startswith("there is no HAProxy configuration at")
