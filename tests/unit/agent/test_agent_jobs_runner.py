"""The job runner: dispatch from the catalogue, each id once, unknown types and bad parameters
as failed results, and the heartbeat handing jobs over without waiting for them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_fakes import KEY, FakeControlPlane, Reply

from balctl.backoff import Backoff
from balctl.config import AgentConfig
from balctl.errors import ParamError
from balctl.heartbeat import HeartbeatLoop
from balctl.jobs import params as p
from balctl.jobs.catalogue import CATALOGUE, JobType
from balctl.jobs.model import Job, JobContext, Outcome
from balctl.jobs.runner import JobRunner, parse_job
from balctl.paths import HostPaths
from balctl.transport import ControlPlaneClient


def _cfg(server: str = "http://127.0.0.1:9") -> AgentConfig:
    return AgentConfig(server=server, key=KEY, hostname="edge-1", public_ip="203.0.113.7")


class Recorder:
    """A test catalogue: `echo` returns its params, `slow` waits for a gate, `boom` raises."""

    def __init__(self) -> None:
        self.ran: list[tuple[int, str, dict[str, Any]]] = []
        self.contexts: list[JobContext] = []
        self.gate = threading.Event()
        self.clients: list[ControlPlaneClient] = []

    def check_echo(self, params: Any) -> dict[str, Any]:
        given = p.only(p.as_object(params), ("word",))
        return {"word": p.name(given, "word")}

    def echo(self, params: dict[str, Any], ctx: JobContext) -> Outcome:
        self.ran.append((ctx.job_id, "echo", params))
        self.contexts.append(ctx)
        return Outcome(True, f"said {params['word']}", "line 1\nline 2\n", {"word": params["word"]})

    def slow(self, params: dict[str, Any], ctx: JobContext) -> Outcome:
        self.ran.append((ctx.job_id, "slow", params))
        self.gate.wait(10)
        return Outcome(True, "slow done")

    def boom(self, params: dict[str, Any], ctx: JobContext) -> Outcome:
        raise RuntimeError("handler bug")

    def catalogue(self) -> dict[str, JobType]:
        return {
            "test.echo": JobType("test.echo", self.check_echo, self.echo, 30),
            "test.slow": JobType("test.slow", p.no_params, self.slow, 30),
            "test.boom": JobType("test.boom", p.no_params, self.boom, 30),
        }


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    made = Recorder()
    yield made
    for client in made.clients:
        client.close()


def _runner(recorder: Recorder, tmp_path: Path, server: str = "http://127.0.0.1:9") -> JobRunner:
    client = ControlPlaneClient(server, KEY)
    recorder.clients.append(client)
    return JobRunner(
        _cfg(server),
        client,
        HostPaths.under(str(tmp_path)),
        catalogue=recorder.catalogue(),
        backoff=Backoff(initial=0.05, cap=0.05),
    )


def test_the_catalogue_holds_every_documented_type() -> None:
    assert sorted(CATALOGUE) == [
        "agent.logs",
        "agent.update",
        "backup.ufw",
        "haproxy.admin_socket.disable",
        "haproxy.admin_socket.enable",
        "haproxy.backup",
        "haproxy.install",
        "haproxy.reload",
        "haproxy.restore",
        "haproxy.server_state",
        "haproxy.validate",
        "tls.acme_issue",
        "tls.acme_renew_force",
    ]


def test_dispatch_runs_the_handler_with_checked_params(recorder: Recorder, tmp_path: Path) -> None:
    runner = _runner(recorder, tmp_path)
    done = runner.execute(Job(5, "test.echo", {"word": "hello"}, 42))
    assert recorder.ran == [(5, "echo", {"word": "hello"})]
    assert done.state == "completed"
    assert done.body("edge-1") == {
        "hostname": "edge-1",
        "job_id": 5,
        "state": "completed",
        "summary": "said hello",
        "output": "line 1\nline 2\n",
        "result": {"word": "hello"},
    }
    deadline = recorder.contexts[0].deadline
    assert deadline.seconds == 42  # the job's own timeout_s is its budget
    assert runner.running() == []


def test_the_types_default_budget_applies_without_timeout_s(
    recorder: Recorder, tmp_path: Path
) -> None:
    _runner(recorder, tmp_path).execute(Job(5, "test.echo", {"word": "x"}))
    assert recorder.contexts[0].deadline.seconds == 30


def test_an_unknown_type_fails_and_names_the_known_ones(recorder: Recorder, tmp_path: Path) -> None:
    done = _runner(recorder, tmp_path).execute(Job(6, "test.nope", {}))
    assert done.state == "failed"
    assert done.summary == (
        "unknown job type 'test.nope': balctl 0.1.0 runs test.boom, test.echo, test.slow"
    )
    assert "result" not in done.body("edge-1")


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({}, "missing parameter(s) word"),
        ({"word": "a", "extra": 1}, "unknown parameter(s) extra (expected: word)"),
        ({"word": 7}, "word must be a string"),
        ({"word": "two words"}, "word 'two words' is not a valid name"),
        ("word", "params must be a JSON object, not str"),
    ],
)
def test_bad_params_fail_before_the_handler_runs(
    recorder: Recorder, tmp_path: Path, params: Any, reason: str
) -> None:
    done = _runner(recorder, tmp_path).execute(Job(7, "test.echo", params))
    assert done.state == "failed"
    assert done.summary.startswith(f"invalid parameters for test.echo: {reason}")
    assert recorder.ran == []


def test_a_handler_that_raises_becomes_a_failed_result(recorder: Recorder, tmp_path: Path) -> None:
    done = _runner(recorder, tmp_path).execute(Job(8, "test.boom", {}))
    assert done.state == "failed"
    assert done.summary == "test.boom failed unexpectedly: RuntimeError: handler bug"


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"id": 3, "type": "t", "params": {}, "timeout_s": 60}, Job(3, "t", {}, 60)),
        ({"id": 3, "type": "t", "timeout_s": 0}, Job(3, "t", None, None)),
        ({"id": 3, "type": "t", "timeout_s": True}, Job(3, "t", None, None)),
        ({"id": 3, "type": 5, "timeout_s": 10**9}, Job(3, "", None, 86400)),
        ({"id": "3", "type": "t"}, None),
        ({"id": True, "type": "t"}, None),
        (["id", 3], None),
    ],
)
def test_parse_job(item: Any, expected: Job | None) -> None:
    assert parse_job(item) == expected


def test_each_job_id_is_queued_once(recorder: Recorder, tmp_path: Path) -> None:
    runner = _runner(recorder, tmp_path)
    job = {"id": 1, "type": "test.echo", "params": {"word": "a"}}
    assert runner.offer([job, job]) == 1
    assert runner.offer([job, {"id": 2, "type": "test.echo", "params": {"word": "b"}}]) == 1
    assert runner.offer("not a list") == 0
    assert runner.offer([{"type": "no id"}]) == 0


def test_the_worker_runs_jobs_in_order_and_reports_them(
    recorder: Recorder, tmp_path: Path, control_plane: FakeControlPlane
) -> None:
    control_plane.default = Reply(200, {"ok": True, "state": "completed"})
    runner = _runner(recorder, tmp_path, control_plane.url)
    stop = threading.Event()
    worker = threading.Thread(target=runner.run, args=(stop,))
    worker.start()
    try:
        runner.offer([{"id": n, "type": "test.echo", "params": {"word": f"w{n}"}} for n in (3, 1)])
        runner.offer([{"id": 2, "type": "test.nope"}, {"id": 3, "type": "test.echo"}])
        deadline = time.monotonic() + 5
        while len(control_plane.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        worker.join(5)
    assert [r.json["job_id"] for r in control_plane.requests] == [3, 1, 2]
    assert {r.path for r in control_plane.requests} == {"/api/agents/jobs/complete"}
    assert control_plane.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert [r.json["state"] for r in control_plane.requests] == ["completed", "completed", "failed"]
    assert [ran[0] for ran in recorder.ran] == [3, 1]


def test_heartbeats_continue_while_a_job_runs_and_name_it(
    recorder: Recorder, tmp_path: Path, control_plane: FakeControlPlane
) -> None:
    slow_job = {"id": 9, "type": "test.slow", "params": {}, "timeout_s": 30}
    control_plane.default = Reply(
        200, {"ok": True, "jobs": [slow_job], "heartbeat_interval_s": 0.2}
    )
    runner = _runner(recorder, tmp_path, control_plane.url)
    stop = threading.Event()
    with ControlPlaneClient(control_plane.url, KEY) as client:
        loop = HeartbeatLoop(_cfg(control_plane.url), client, paths=runner.paths, jobs=runner)
        threads = [
            threading.Thread(target=loop.run, args=(stop,)),
            threading.Thread(target=runner.run, args=(stop,)),
        ]
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                beats = [r for r in control_plane.requests if r.path == "/api/agents/heartbeat"]
                if sum(1 for b in beats if b.json["jobs_running"] == [9]) >= 3:
                    break
                time.sleep(0.02)
            recorder.gate.set()
        finally:
            stop.set()
            for thread in threads:
                thread.join(5)
    beats = [r for r in control_plane.requests if r.path == "/api/agents/heartbeat"]
    assert sum(1 for b in beats if b.json["jobs_running"] == [9]) >= 3
    assert beats[0].json["jobs_running"] == []
    assert [ran[0] for ran in recorder.ran] == [9]  # handed out with every beat, run once


def test_a_restart_waits_until_the_completion_is_delivered(
    recorder: Recorder, tmp_path: Path, control_plane: FakeControlPlane
) -> None:
    control_plane.replies = [Reply(503, {"detail": "busy"})]
    control_plane.default = Reply(200, {"ok": True, "state": "completed"})
    restarted: list[int] = []

    def update(params: dict[str, Any], ctx: JobContext) -> Outcome:
        ctx.request_restart()
        return Outcome(True, "updated")

    runner = _runner(recorder, tmp_path, control_plane.url)
    runner.catalogue = {"agent.update": JobType("agent.update", p.no_params, update, 30)}
    runner.on_restart = lambda: restarted.append(len(control_plane.requests))
    runner.offer([{"id": 4, "type": "agent.update"}])
    runner.step(threading.Event())
    assert restarted == [2]  # after the refused attempt and the accepted one


def test_param_helpers() -> None:
    assert p.sha256({"s": "A" * 64}, "s") == "a" * 64
    with pytest.raises(ParamError, match="64 hexadecimal"):
        p.sha256({"s": "g" * 64}, "s")
    assert p.choice({"s": "drain"}, "s", ("ready", "drain")) == "drain"
    with pytest.raises(ParamError, match="must be one of ready, drain"):
        p.choice({"s": "up"}, "s", ("ready", "drain"))
    assert p.no_params(None) == {} and p.no_params({}) == {}
    for bad in ("a;b", "a b", "x" * 65, "", "é"):
        with pytest.raises(ParamError):
            p.name({"n": bad}, "n")
    assert p.name({"n": "be_app-1.2:x"}, "n") == "be_app-1.2:x"


def test_heartbeats_name_every_job_in_hand_until_its_result_is_delivered(
    recorder: Recorder, tmp_path: Path, control_plane: FakeControlPlane
) -> None:
    # The control plane fails a job the agent no longer names, so a job queued behind another,
    # or finished with its result still undelivered, must keep being named.
    runner = _runner(recorder, tmp_path, control_plane.url)
    runner.offer(
        [
            {"id": 1, "type": "test.echo", "params": {"word": "a"}, "timeout_s": 30},
            {"id": 2, "type": "test.echo", "params": {"word": "b"}, "timeout_s": 30},
        ]
    )
    assert runner.running() == [1, 2]
    control_plane.replies = [Reply(503, {"detail": "busy"})]
    stop = threading.Event()
    runner.step(stop)  # runs job 1; its delivery fails
    assert runner.running() == [1, 2]
    time.sleep(0.1)
    runner.step(stop)  # delivers job 1, runs job 2 and delivers it
    runner.step(stop)
    assert runner.running() == []
