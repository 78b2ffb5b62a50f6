from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from agent_fakes import KEY, FakeControlPlane, Reply

from balctl import __version__
from balctl.backoff import Backoff
from balctl.config import AgentConfig
from balctl.errors import TransportError
from balctl.heartbeat import HeartbeatLoop, build_payload, clamp_interval
from balctl.paths import HostPaths
from balctl.transport import ControlPlaneClient


def _cfg(**overrides: Any) -> AgentConfig:
    values: dict[str, Any] = {
        "server": "http://127.0.0.1:9",
        "key": KEY,
        "hostname": "edge-1",
        "public_ip": "203.0.113.7",
    }
    values.update(overrides)
    return AgentConfig(**values)


class FakeClient:
    """Answers from a script: (status, body) tuples or exceptions to raise."""

    origin = "http://127.0.0.1:9"

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.sent: list[dict[str, Any]] = []

    def post_json(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        assert path == "/api/agents/heartbeat"
        self.sent.append(body)
        answer = self.answers.pop(0) if self.answers else (200, {"ok": True, "jobs": []})
        if isinstance(answer, Exception):
            raise answer
        return answer


def _loop(client: FakeClient, tmp_path: Path, **cfg: Any) -> HeartbeatLoop:
    return HeartbeatLoop(
        _cfg(**cfg),
        client,  # type: ignore[arg-type]
        paths=HostPaths.under(str(tmp_path)),
        backoff=Backoff(jitter=0.0),
    )


def test_payload_has_the_documented_shape(tmp_path: Path) -> None:
    pidfile = tmp_path / "haproxy.pid"
    pidfile.write_text(str(os.getpid()))
    payload = build_payload(
        _cfg(haproxy_pidfile=str(pidfile)), paths=HostPaths.under(str(tmp_path))
    )
    assert payload == {
        "ip": "203.0.113.7",
        "hostname": "edge-1",
        "version": __version__,
        "haproxy": {"monitored": True, "active": True, "source": "pidfile"},
    }


def test_payload_probes_an_ipv4_address_when_none_is_configured(tmp_path: Path) -> None:
    payload = build_payload(_cfg(public_ip=None), paths=HostPaths.under(str(tmp_path)))
    assert payload["ip"] == "127.0.0.1"  # the route to the loopback control plane
    assert payload["haproxy"] == {"monitored": False, "source": "none"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.05, 0.2), (5, 5.0), (600, 60.0), ("2", 1.0), (True, 1.0), (None, 1.0), (float("nan"), 1.0)],
)
def test_server_interval_is_clamped(value: Any, expected: float) -> None:
    assert clamp_interval(value, 1.0) == expected


def test_success_uses_the_servers_interval(tmp_path: Path) -> None:
    loop = _loop(FakeClient((200, {"ok": True, "jobs": [], "heartbeat_interval_s": 2.5})), tmp_path)
    assert loop.beat() == 2.5
    assert loop.interval == 2.5


def test_network_errors_and_5xx_back_off_and_success_resets(tmp_path: Path) -> None:
    client = FakeClient(
        TransportError("cannot reach"),
        (503, {"detail": "starting"}),
        TransportError("cannot reach"),
        (200, {"ok": True, "jobs": []}),
        TransportError("cannot reach"),
    )
    loop = _loop(client, tmp_path)
    assert [loop.beat() for _ in range(5)] == [1.0, 2.0, 4.0, 1.0, 1.0]


def test_refusal_is_logged_once_as_an_error_with_the_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reason = "source IP 127.0.0.3 is not allowed for member edge-1"
    client = FakeClient(*[(403, {"detail": reason})] * 4)
    loop = _loop(client, tmp_path)
    with caplog.at_level(logging.DEBUG, logger="balctl"):
        delays = [loop.beat() for _ in range(4)]
    assert delays == [1.0, 2.0, 4.0, 8.0]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "403" in errors[0].getMessage() and reason in errors[0].getMessage()
    assert all(KEY not in r.getMessage() for r in caplog.records)


def test_each_state_change_logs_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    client = FakeClient(
        TransportError("down"),
        TransportError("down"),
        (401, {"detail": "unknown or revoked enrolment secret"}),
        (401, {"detail": "unknown or revoked enrolment secret"}),
        (422, {"detail": "invalid heartbeat"}),
        (200, {"ok": True, "jobs": []}),
        (200, {"ok": True, "jobs": []}),
    )
    loop = _loop(client, tmp_path)
    with caplog.at_level(logging.INFO, logger="balctl"):
        for _ in range(7):
            loop.beat()
    levels = [r.levelname for r in caplog.records]
    assert levels == ["WARNING", "ERROR", "WARNING", "INFO"]
    assert "again after 5 failed attempts" in caplog.records[-1].getMessage()


def test_offered_jobs_without_a_runner_are_only_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loop = _loop(FakeClient((200, {"ok": True, "jobs": [{"id": 1}, {"id": 2}]})), tmp_path)
    with caplog.at_level(logging.DEBUG, logger="balctl"):
        assert loop.beat() == 1.0
    assert any("offered 2 job(s)" in r.getMessage() for r in caplog.records)


def test_run_stops_promptly_when_asked(tmp_path: Path) -> None:
    client = FakeClient(*[(200, {"ok": True, "heartbeat_interval_s": 0.2})] * 1000)
    loop = _loop(client, tmp_path)
    stop = threading.Event()
    worker = threading.Thread(target=loop.run, args=(stop,))
    worker.start()
    while len(client.sent) < 2:
        stop.wait(0.01)
    stop.set()
    worker.join(2)
    assert not worker.is_alive()


def test_run_survives_an_unexpected_exception(tmp_path: Path) -> None:
    client = FakeClient(RuntimeError("bug"), (200, {"ok": True, "heartbeat_interval_s": 0.2}))
    loop = _loop(client, tmp_path)
    loop.backoff = Backoff(initial=0.01, cap=0.01)
    stop = threading.Event()
    worker = threading.Thread(target=loop.run, args=(stop,))
    worker.start()
    while len(client.sent) < 2:
        stop.wait(0.01)
    stop.set()
    worker.join(2)
    assert not worker.is_alive()


def test_heartbeat_reaches_a_real_server(control_plane: FakeControlPlane, tmp_path: Path) -> None:
    control_plane.replies.append(Reply(200, {"ok": True, "jobs": [], "heartbeat_interval_s": 1}))
    cfg = _cfg(server=control_plane.url, public_ip=None)
    with ControlPlaneClient(cfg.server, cfg.key) as client:
        loop = HeartbeatLoop(cfg, client, paths=HostPaths.under(str(tmp_path)))
        assert loop.beat() == 1.0
    seen = control_plane.requests[0]
    assert seen.path == "/api/agents/heartbeat"
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.json == {
        "ip": "127.0.0.1",
        "hostname": "edge-1",
        "version": __version__,
        "haproxy": {"monitored": False, "source": "none"},
    }


class FakeEnricher:
    def __init__(self) -> None:
        self.lost_count = 0

    def extra(self) -> dict[str, Any]:
        return {"admin_socket_configured": True, "admin_socket": True}

    def lost(self) -> None:
        self.lost_count += 1


class FakeRunner:
    def __init__(self) -> None:
        self.offered: list[Any] = []

    def running(self) -> list[int]:
        return [12]

    def offer(self, jobs: Any) -> int:
        self.offered.append(jobs)
        return len(jobs)


def test_beats_carry_enrichment_and_running_jobs_and_hand_jobs_over(tmp_path: Path) -> None:
    jobs = [{"id": 12, "type": "haproxy.reload", "params": {}, "timeout_s": 60}]
    client = FakeClient((200, {"ok": True, "jobs": jobs}), TransportError("down"), (503, {}))
    enricher, runner = FakeEnricher(), FakeRunner()
    loop = HeartbeatLoop(
        _cfg(),
        client,  # type: ignore[arg-type]
        paths=HostPaths.under(str(tmp_path)),
        backoff=Backoff(jitter=0.0),
        jobs=runner,  # type: ignore[arg-type]
        enricher=enricher,  # type: ignore[arg-type]
    )
    loop.beat()
    assert client.sent[0]["haproxy"] == {
        "monitored": False,
        "source": "none",
        "admin_socket_configured": True,
        "admin_socket": True,
    }
    assert client.sent[0]["jobs_running"] == [12]
    assert runner.offered == [jobs]
    assert enricher.lost_count == 0
    loop.beat()
    loop.beat()
    assert enricher.lost_count == 2  # undelivered beats: the topology goes out again
