"""A load generator: many simulated members heartbeating at an agent's cadence, for soak runs.

Each member sends one heartbeat per `interval_s`, the members spread evenly over the interval
(as a real fleet's agents, started at different times, are). `connections` workers share the
members and keep one request in flight each: the bounded concurrency of a fleet behind a few
connections' worth of server capacity. A worker that falls behind sends at once rather than
skipping a beat, so the rate achieved is the rate the server and this client sustained.

What the beats carry, like real agents (docs/agent.md):
- the `show stat` summary every `enriched_every`-th beat, and the short block in between;
- now and then a member's HAProxy stops for a few seconds and starts again (`flip`): health
  changes the control plane writes to the database and evaluates failover for;
- jobs that come back in an answer are completed at once through /api/agents/jobs/complete.

Runs its own event loop in a thread (`start` / `stop`), so a test keeps its own thread for
operator work meanwhile. Every answer that is not a 200, and every connection error, counts.

The requests go out through a minimal HTTP/1.1 keep-alive client on asyncio streams
(`Http11Connection`), not httpx: httpx costs about a millisecond of CPU a request, so on a
2-core machine it could not send 1,000 a second beside the server it measures; this one costs
a tenth of that, as wrk does for the benchmarks.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from support.http11 import Answer, Http11Connection, HttpError
from support.simulated_members import SimulatedMember, heartbeat_body

# Real agents send the stats summary every few seconds (BALCTL_STATS_INTERVAL_S).
ENRICHED_EVERY = 5
# Error answers kept verbatim for the report; the rest are only counted.
KEPT_SAMPLES = 10


@dataclass
class LoadFigures:
    heartbeats: int = 0
    completions: int = 0
    jobs_received: list[int] = field(default_factory=list)
    flips: int = 0
    # kind ("status 500", "ReadTimeout", ...) -> count
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def rate(self) -> float:
        """Heartbeats answered per second over the run."""
        took = self.ended - self.started
        return self.heartbeats / took if took > 0 else 0.0

    def latency_ms(self, quantile: float) -> float:
        ordered = sorted(self.latencies_s)
        if not ordered:
            return 0.0
        return 1000 * ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]


class HeartbeatLoad:
    def __init__(
        self,
        url: str,
        members: list[SimulatedMember],
        *,
        interval_s: float = 1.0,
        connections: int = 32,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        self.members = members
        self.interval_s = interval_s
        self.connections = connections
        self.ssl_context = ssl_context
        self.figures = LoadFigures()
        # member index -> monotonic time until which its HAProxy is reported stopped
        self._down_until: dict[int, float] = {}
        # (member index, active, enriched) -> body: the same bytes an agent would send
        self._bodies: dict[tuple[int, bool, bool], bytes] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- control from the test's thread ---------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)
        self._thread.start()

    def stop(self) -> LoadFigures:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(60)
            assert not self._thread.is_alive(), "the load generator did not stop"
        return self.figures

    def flip(self, index: int, down_for_s: float) -> None:
        """Member `index` reports HAProxy stopped for `down_for_s`, then running again."""
        self._down_until[index] = time.monotonic() + down_for_s
        self.figures.flips += 1

    # -- the load -------------------------------------------------------------------------------

    async def _run(self) -> None:
        self.figures.started = time.monotonic()
        await asyncio.gather(*(self._worker(n) for n in range(self.connections)))
        self.figures.ended = time.monotonic()

    async def _worker(self, number: int) -> None:
        client = Http11Connection(self.url, ssl_context=self.ssl_context)
        try:
            await self._beats(client, number)
        finally:
            await client.close()

    async def _beats(self, client: Http11Connection, number: int) -> None:
        mine = range(number, len(self.members), self.connections)
        spacing = self.interval_s / len(self.members)
        started = self.figures.started
        beat = 0
        while not self._stopping.is_set():
            for index in mine:
                due = started + beat * self.interval_s + index * spacing
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if self._stopping.is_set():
                    return
                await self._beat(client, index, enriched=beat % ENRICHED_EVERY == 0)
            beat += 1

    def _body(self, index: int, enriched: bool) -> bytes:
        active = time.monotonic() >= self._down_until.get(index, 0.0)
        key = (index, active, enriched)
        body = self._bodies.get(key)
        if body is None:
            body = heartbeat_body(self.members[index], active=active, enriched=enriched)
            self._bodies[key] = body
        return body

    async def _beat(self, client: Http11Connection, index: int, *, enriched: bool) -> None:
        member = self.members[index]
        sent = time.monotonic()
        answer = await self._post(
            client, "/api/agents/heartbeat", member, self._body(index, enriched)
        )
        if answer is None:
            return
        self.figures.heartbeats += 1
        self.figures.latencies_s.append(time.monotonic() - sent)
        # Most answers carry no job: skip decoding those.
        if b'"jobs":[]' in answer.body:
            return
        for job in json.loads(answer.body)["jobs"]:
            self.figures.jobs_received.append(job["id"])
            await self._complete(client, member, job)

    async def _complete(
        self, client: Http11Connection, member: SimulatedMember, job: dict[str, Any]
    ) -> None:
        body = json.dumps(
            {
                "hostname": member.hostname,
                "job_id": job["id"],
                "state": "completed",
                "summary": f"{job['type']} done (simulated)",
                "output": "",
            }
        ).encode()
        if await self._post(client, "/api/agents/jobs/complete", member, body) is not None:
            self.figures.completions += 1

    async def _post(
        self, client: Http11Connection, path: str, member: SimulatedMember, body: bytes
    ) -> Answer | None:
        """The answer when it is a 200; otherwise None, with the error counted."""
        headers = {"Authorization": f"Bearer {member.secret}", "Content-Type": "application/json"}
        try:
            answer = await client.post(path, body, headers)
        except HttpError as exc:
            self._error(str(exc).split(":", 1)[0], f"{path} {member.hostname}: {exc}")
            return None
        if answer.status != 200:
            self._error(
                f"status {answer.status}", f"{path} {member.hostname}: {answer.body[:300]!r}"
            )
            return None
        return answer

    def _error(self, kind: str, sample: str) -> None:
        self.figures.errors[kind] += 1
        if len(self.figures.error_samples) < KEPT_SAMPLES:
            self.figures.error_samples.append(sample)
