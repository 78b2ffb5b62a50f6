"""The admin socket client and the heartbeat enrichment, against a stand-in Unix socket that
answers with output captured from haproxy 2.6 (haproxy26/)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from balctl import runtime_api
from balctl.enrich import Enricher, stats_interval
from balctl.errors import RuntimeApiError
from balctl.paths import HostPaths

DATA = Path(__file__).resolve().parent / "haproxy26"
ANSWERS = {
    "show info": (DATA / "show_info.txt").read_text(),
    "show stat": (DATA / "show_stat.txt").read_text(),
    "show servers state": (DATA / "show_servers_state.txt").read_text(),
    "set server be_app/nope state drain": (DATA / "set_server_unknown.txt").read_text(),
    "set server be_app/app4 state ready": (DATA / "set_server_ok.txt").read_text(),
}


class FakeAdminSocket:
    """Answers one command per connection, then closes; `silent` accepts and says nothing."""

    def __init__(self, path: Path, silent: bool = False) -> None:
        self.path = path
        self.silent = silent
        self.seen: list[str] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen()
        self.sock.settimeout(0.05)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        held = []
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(2)
            line = conn.recv(4096).decode().strip()
            self.seen.append(line)
            if self.silent:
                held.append(conn)
                continue
            conn.sendall(ANSWERS.get(line, "Unknown command.\n\n").encode())
            conn.close()
        for conn in held:
            conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def paths(tmp_path: Path) -> HostPaths:
    made = HostPaths.under(str(tmp_path / "r"))
    made.haproxy_dir.mkdir(parents=True)
    made.haproxy_cfg.write_text(
        "global\n"
        f"    stats socket {made.admin_socket} mode 600 level admin expose-fd listeners\n"
        "    stats timeout 2m\n\n"
        "frontend fe_web\n    bind 127.0.0.1:8080\n\n"
        "backend be_app\n    server app1 127.0.0.1:1\n"
    )
    return made


@pytest.fixture
def admin(paths: HostPaths) -> Iterator[FakeAdminSocket]:
    made = FakeAdminSocket(paths.admin_socket)
    yield made
    made.close()


def test_query_reads_the_whole_answer(admin: FakeAdminSocket) -> None:
    assert runtime_api.query(admin.path, "show info") == ANSWERS["show info"]
    assert admin.seen == ["show info"]


def test_command_raises_haproxys_words_and_accepts_an_empty_answer(admin: FakeAdminSocket) -> None:
    runtime_api.command(admin.path, "set server be_app/app4 state ready")
    with pytest.raises(RuntimeApiError, match=r"^No such server\.$"):
        runtime_api.command(admin.path, "set server be_app/nope state drain")


def test_a_missing_socket_is_a_runtime_api_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeApiError, match="No such file or directory"):
        runtime_api.query(tmp_path / "none.sock", "show info")


def test_a_silent_socket_costs_at_most_the_timeout(tmp_path: Path) -> None:
    silent = FakeAdminSocket(tmp_path / "silent.sock", silent=True)
    try:
        started = time.monotonic()
        with pytest.raises(RuntimeApiError, match="did not answer within 0.3 s"):
            runtime_api.query(silent.path, "show info", timeout=0.3)
        assert time.monotonic() - started < 1.0
    finally:
        silent.close()


def test_commands_are_one_line(admin: FakeAdminSocket) -> None:
    with pytest.raises(RuntimeApiError):
        runtime_api.query(admin.path, "show info\nshutdown frontend fe_web")


def test_first_answer_skips_sockets_that_do_not_answer(
    admin: FakeAdminSocket, tmp_path: Path
) -> None:
    path, text = runtime_api.first_answer([tmp_path / "dead.sock", admin.path], "show info")
    assert path == admin.path and text.startswith("Name: HAProxy")
    with pytest.raises(RuntimeApiError, match="no admin socket is configured"):
        runtime_api.first_answer([], "show info")


# -- enrichment ---------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_enrichment_every_interval_and_the_cheap_key_every_beat(
    paths: HostPaths, admin: FakeAdminSocket
) -> None:
    clock = Clock()
    enricher = Enricher(paths, interval=5, clock=clock, wall=lambda: 1_700_000_000.5)
    first = enricher.extra()
    assert set(first) == {
        "admin_socket_configured",
        "admin_socket",
        "info",
        "stats",
        "topology",
        "backup_files",
    }
    assert first["info"]["version"] == "2.6.12-1+deb12u4"
    assert first["stats"]["at"] == 1_700_000_000
    servers = first["stats"]["backends"][0]["servers"]
    assert [(s["name"], s["admin"]) for s in servers] == [
        ("app1", "ready"),
        ("app2", "drain"),
        ("app3", "maint"),
        ("app4", "ready"),
    ]
    assert first["topology"]["listeners"] == [{"frontend": "fe_web", "bind": "127.0.0.1:8080"}]
    clock.now += 4.9
    assert enricher.extra() == {"admin_socket_configured": True}
    clock.now += 0.1
    second = enricher.extra()
    assert "stats" in second and "topology" not in second  # unchanged topology is not resent
    clock.now += 60
    assert "topology" in enricher.extra()  # ... except every minute


def test_admin_socket_configured_follows_the_file(paths: HostPaths) -> None:
    enricher = Enricher(paths, interval=3600)
    assert enricher.extra()["admin_socket_configured"] is True
    paths.haproxy_cfg.write_text("global\n    daemon\n")
    assert enricher.extra() == {"admin_socket_configured": False}


def test_a_configured_socket_that_is_silent_is_reported_false_quickly(paths: HostPaths) -> None:
    silent = FakeAdminSocket(paths.admin_socket, silent=True)
    try:
        started = time.monotonic()
        block = Enricher(paths, interval=0).extra()
        assert time.monotonic() - started < 1.5
    finally:
        silent.close()
    assert block["admin_socket"] is False
    assert "stats" not in block and "info" not in block


def test_enrichment_failures_never_reach_the_heartbeat(
    paths: HostPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise ValueError("parser bug")

    monkeypatch.setattr("balctl.enrich.topology", broken)
    block = Enricher(paths, interval=0).extra()
    assert block == {"admin_socket_configured": True}


@pytest.mark.parametrize(
    ("raw", "expected"), [("", 5.0), ("2.5", 2.5), ("0", 0.0), ("-1", 5.0), ("soon", 5.0)]
)
def test_stats_interval_from_the_environment(raw: str, expected: float) -> None:
    assert stats_interval({"BALCTL_STATS_INTERVAL_S": raw}) == expected
