"""The job worker: runs the jobs that heartbeat answers hand out, one at a time, each id once.

The heartbeat thread only queues jobs (`offer`, never blocking); one worker thread runs them in
order of arrival and delivers their results (CompletionQueue), so heartbeats keep going while a
job runs for minutes. The server marks a job as running when it hands it out, and may hand the
same job out again until the result arrives: the set of ids seen in this process makes sure it
runs once. Nothing a job does can stop the worker: an unknown type, bad parameters or a handler
that raises all become a `failed` result.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, List, Mapping, Optional, Set

from balctl import __version__
from balctl.backoff import Backoff
from balctl.config import AgentConfig
from balctl.errors import ParamError
from balctl.jobs.catalogue import CATALOGUE, JobType
from balctl.jobs.completions import CompletionQueue
from balctl.jobs.model import Completion, Job, JobContext, Outcome
from balctl.paths import HostPaths
from balctl.proc import Deadline
from balctl.transport import ControlPlaneClient

logger = logging.getLogger(__name__)

IDLE_WAIT_S = 0.5
# How long an agent about to restart (agent.update) keeps trying to deliver its last results.
RESTART_GRACE_S = 60.0
MAX_TIMEOUT_S = 24 * 3600


def parse_job(item: Any) -> Optional[Job]:
    """A Job from one entry of the heartbeat answer's `jobs`; None when it has no usable id."""
    if not isinstance(item, dict):
        logger.warning("ignoring a job that is not a JSON object: %.80r", item)
        return None
    job_id = item.get("id")
    if not isinstance(job_id, int) or isinstance(job_id, bool):
        # Without an id there is nothing to report the failure against.
        logger.warning("ignoring a job without an integer id: %.80r", job_id)
        return None
    kind = item.get("type")
    timeout = item.get("timeout_s")
    limit: Optional[int] = None
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout >= 1:
        limit = int(min(timeout, MAX_TIMEOUT_S))
    return Job(
        id=job_id,
        type=kind if isinstance(kind, str) else "",
        params=item.get("params"),
        timeout_s=limit,
    )


class JobRunner:
    def __init__(
        self,
        cfg: AgentConfig,
        client: ControlPlaneClient,
        paths: Optional[HostPaths] = None,
        catalogue: Mapping[str, JobType] = CATALOGUE,
        backoff: Optional[Backoff] = None,
        on_restart: Optional[Callable[[], None]] = None,
    ) -> None:
        self.cfg = cfg
        self.paths = paths or HostPaths.from_env()
        self.catalogue = catalogue
        # The worker's own client: http.client connections are not shared between threads.
        self.completions = CompletionQueue(client, cfg.hostname, backoff, on_settled=self._settled)
        self.on_restart = on_restart
        self.restart_grace_s = RESTART_GRACE_S
        self._queue: queue.Queue[Job] = queue.Queue()
        self._seen: Set[int] = set()
        self._lock = threading.Lock()
        self._current: Optional[int] = None
        # Jobs taken from the control plane whose result it does not have yet: queued here,
        # running, or waiting for delivery. Heartbeats name them, so the control plane can tell
        # a job still in hand from one lost to an agent restart.
        self._open: Set[int] = set()
        self._restart_wanted = False

    # -- called from the heartbeat thread ------------------------------------------------------

    def offer(self, jobs: Any) -> int:
        """Queue the jobs not seen before; how many were queued. Never blocks."""
        if not isinstance(jobs, list):
            return 0
        queued = 0
        for item in jobs:
            job = parse_job(item)
            if job is None:
                continue
            with self._lock:
                if job.id in self._seen:
                    continue
                self._seen.add(job.id)
                self._open.add(job.id)
            logger.debug("queued job %d (%s)", job.id, job.type)
            self._queue.put(job)
            queued += 1
        return queued

    def running(self) -> List[int]:
        """The jobs in hand: queued, running, or with their result not yet delivered."""
        with self._lock:
            return sorted(self._open)

    def _settled(self, job_id: int) -> None:
        with self._lock:
            self._open.discard(job_id)

    # -- the worker thread -------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.step(stop)
            except Exception:  # the worker must outlive any bug in one job or one delivery
                logger.exception("job worker failed unexpectedly")
                stop.wait(1.0)

    def step(self, stop: threading.Event) -> None:
        """Deliver what is due, then run the next job if one arrives within a short wait."""
        self.completions.drain()
        due = self.completions.wait_s()
        wait = IDLE_WAIT_S if due is None else min(max(due, 0.01), IDLE_WAIT_S)
        try:
            job = self._queue.get(timeout=wait)
        except queue.Empty:
            return
        self.completions.add(self.execute(job))
        self.completions.drain()
        if self._restart_wanted:
            self._restart(stop)

    def execute(self, job: Job) -> Completion:
        logger.info("running job %d (%s)", job.id, job.type or "no type")
        self._current = job.id
        try:
            outcome = self._dispatch(job)
        except Exception as exc:
            logger.exception("job %d (%s) raised", job.id, job.type)
            outcome = Outcome(False, f"{job.type} failed unexpectedly: {type(exc).__name__}: {exc}")
        finally:
            self._current = None
        completion = Completion.from_outcome(job.id, outcome)
        level = logging.INFO if outcome.ok else logging.WARNING
        logger.log(
            level, "job %d (%s) %s: %s", job.id, job.type, completion.state, completion.summary
        )
        return completion

    def _dispatch(self, job: Job) -> Outcome:
        entry = self.catalogue.get(job.type)
        if entry is None:
            known = ", ".join(sorted(self.catalogue))
            return Outcome(
                False,
                f"unknown job type {job.type[:64]!r}: balctl {__version__} runs {known}",
            )
        try:
            checked = entry.check(job.params)
        except ParamError as exc:
            return Outcome(False, f"invalid parameters for {job.type}: {exc}")
        budget = float(job.timeout_s) if job.timeout_s else entry.default_timeout_s
        context = JobContext(job.id, self.cfg, self.paths, Deadline(budget), self._want_restart)
        return entry.run(checked, context)

    def _want_restart(self) -> None:
        self._restart_wanted = True

    def _restart(self, stop: threading.Event) -> None:
        # The result that says "updated, restarting" must reach the control plane first.
        end = time.monotonic() + self.restart_grace_s
        while len(self.completions) and time.monotonic() < end and not stop.is_set():
            self.completions.drain()
            due = self.completions.wait_s()
            if due is not None:
                stop.wait(min(max(due, 0.05), max(0.0, end - time.monotonic())))
        if len(self.completions):
            logger.warning("restarting with %d job result(s) undelivered", len(self.completions))
        self._restart_wanted = False
        if self.on_restart is None:
            logger.warning("a restart was asked for, but this agent cannot restart itself")
            return
        self.on_restart()
