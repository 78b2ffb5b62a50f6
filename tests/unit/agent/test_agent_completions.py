"""Delivering job results: retried with backoff until accepted, dropped on 404/409, in order."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from agent_fakes import KEY

from balctl.backoff import Backoff
from balctl.errors import TransportError
from balctl.jobs.completions import COMPLETE_PATH, CompletionQueue
from balctl.jobs.model import Completion, Outcome


class FakeClient:
    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.sent: list[dict[str, Any]] = []

    def post_json(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        assert path == COMPLETE_PATH
        self.sent.append(body)
        answer = self.answers.pop(0) if self.answers else (200, {"ok": True, "state": "completed"})
        if isinstance(answer, Exception):
            raise answer
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _queue(client: FakeClient, clock: Clock) -> CompletionQueue:
    return CompletionQueue(client, "edge-1", Backoff(initial=1, factor=2, cap=30), clock)  # type: ignore[arg-type]


def _done(job_id: int, ok: bool = True) -> Completion:
    return Completion.from_outcome(job_id, Outcome(ok, f"job {job_id}", "out"))


def test_network_errors_and_5xx_retry_with_backoff_until_accepted() -> None:
    client = FakeClient(TransportError("cannot reach"), (503, {"detail": "busy"}))
    clock = Clock()
    queue = _queue(client, clock)
    queue.add(_done(1))
    queue.drain()
    assert len(client.sent) == 1 and len(queue) == 1
    assert queue.wait_s() == 1.0
    queue.drain()  # not due yet: nothing sent
    assert len(client.sent) == 1
    clock.now += 1
    queue.drain()
    assert len(client.sent) == 2 and queue.wait_s() == 2.0  # the backoff doubled
    clock.now += 2
    queue.drain()
    assert len(client.sent) == 3 and len(queue) == 0 and queue.wait_s() is None
    assert (
        client.sent[0]
        == client.sent[2]
        == {
            "hostname": "edge-1",
            "job_id": 1,
            "state": "completed",
            "summary": "job 1",
            "output": "out",
        }
    )
    assert queue.backoff.failures == 0  # reset by the success


@pytest.mark.parametrize("status", [404, 409])
def test_404_and_409_drop_the_result(status: int, caplog: pytest.LogCaptureFixture) -> None:
    client = FakeClient((status, {"detail": "job 1 was cancelled"}))
    queue = _queue(client, Clock())
    queue.add(_done(1))
    queue.add(_done(2))
    with caplog.at_level(logging.WARNING, logger="balctl"):
        queue.drain()
    assert [body["job_id"] for body in client.sent] == [1, 2]
    assert len(queue) == 0
    assert "no longer wants job 1's result" in caplog.text and "cancelled" in caplog.text


def test_credential_refusals_are_retried_and_a_bad_body_is_dropped() -> None:
    client = FakeClient((401, {"detail": "revoked"}), (422, {"detail": "bad"}))
    clock = Clock()
    queue = _queue(client, clock)
    queue.add(_done(1))
    queue.drain()
    assert len(queue) == 1
    clock.now += 5
    queue.drain()
    assert len(queue) == 0 and len(client.sent) == 2


def test_results_go_out_in_order_and_a_failure_holds_the_rest() -> None:
    client = FakeClient((200, {"ok": True}), TransportError("down"))
    clock = Clock()
    queue = _queue(client, clock)
    for job_id in (1, 2, 3):
        queue.add(_done(job_id, ok=job_id != 2))
    queue.drain()
    assert [body["job_id"] for body in client.sent] == [1, 2]
    clock.now += 1
    queue.drain()
    assert [body["job_id"] for body in client.sent] == [1, 2, 2, 3]
    assert client.sent[2]["state"] == "failed"


def test_one_warning_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    client = FakeClient(*[TransportError("down")] * 3)
    clock = Clock()
    queue = _queue(client, clock)
    queue.add(_done(1))
    with caplog.at_level(logging.DEBUG, logger="balctl"):
        for _ in range(3):
            queue.drain()
            clock.now += 60
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert all(KEY not in r.getMessage() for r in caplog.records)


def test_completion_bodies_are_bounded() -> None:
    outcome = Outcome(False, "first line\nsecond   line " + "x" * 600, "y" * 70_000, {"a": 1})
    done = Completion.from_outcome(3, outcome)
    assert done.state == "failed"
    assert "\n" not in done.summary and len(done.summary) == 500
    assert done.summary.startswith("first line second line x")
    assert done.summary.endswith("...")
    assert len(done.output.encode()) <= 64 * 1024
    assert done.output.startswith("[... ") and done.output.endswith("y" * 100)
    assert done.body("edge-1")["result"] == {"a": 1}
