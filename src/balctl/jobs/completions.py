"""Delivering job results: POST /api/agents/jobs/complete until the control plane has them.

Results wait in a queue, oldest first, and only the job worker thread sends them, so a slow or
absent control plane never holds up a heartbeat. The endpoint is idempotent, so sending a result
again after a lost answer is safe. Network errors, 5xx and credential refusals back off and
retry (the operator may fix the cause); 404 and 409 mean the control plane no longer wants this
result (the job was cancelled, timed out or is unknown): it is logged and dropped. Any other 4xx
says the body itself is wrong, which no retry would fix: logged as an error and dropped.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Callable, Deque, Optional

from balctl.backoff import Backoff
from balctl.errors import TransportError
from balctl.jobs.model import Completion
from balctl.transport import ControlPlaneClient, describe_detail

logger = logging.getLogger(__name__)

COMPLETE_PATH = "/api/agents/jobs/complete"
# Far more than a host should ever hold; beyond it the oldest results are the least useful.
MAX_PENDING = 1000


class CompletionQueue:
    def __init__(
        self,
        client: ControlPlaneClient,
        hostname: str,
        backoff: Optional[Backoff] = None,
        clock: Callable[[], float] = time.monotonic,
        on_settled: Optional[Callable[[int], None]] = None,
    ) -> None:
        self.client = client
        # Told each job id whose result is settled (accepted, refused for good, or dropped).
        self._on_settled = on_settled
        self.hostname = hostname
        self.backoff = backoff or Backoff(initial=1.0, factor=2.0, cap=30.0, jitter=0.2)
        self._clock = clock
        self._pending: Deque[Completion] = deque()
        self._next_try = 0.0
        self._warned = False

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, completion: Completion) -> None:
        if len(self._pending) >= MAX_PENDING:
            dropped = self._pending.popleft()
            logger.error("too many undelivered job results; dropping job %d's", dropped.job_id)
            self._settled(dropped.job_id)
        self._pending.append(completion)

    def wait_s(self) -> Optional[float]:
        """Seconds until the next attempt is due; None when nothing is pending."""
        if not self._pending:
            return None
        return max(0.0, self._next_try - self._clock())

    def drain(self) -> None:
        """Send pending results, oldest first, until one fails or none is left or due."""
        while self._pending and self._clock() >= self._next_try:
            if not self._send(self._pending[0]):
                self._next_try = self._clock() + self.backoff.next_delay()
                return
            self._settled(self._pending.popleft().job_id)

    def _settled(self, job_id: int) -> None:
        if self._on_settled is not None:
            self._on_settled(job_id)

    def _send(self, completion: Completion) -> bool:
        """True when this result is settled (accepted or dropped); False to retry later."""
        job = completion.job_id
        try:
            status, answer = self.client.post_json(COMPLETE_PATH, completion.body(self.hostname))
        except TransportError as exc:
            return self._retry(job, str(exc))
        if status == 200:
            if self._warned:
                logger.info("job results are accepted again")
            self._warned = False
            self.backoff.reset()
            final = answer.get("state", completion.state)
            logger.info("job %d reported: %s (%s)", job, final, completion.summary)
            return True
        detail = describe_detail(answer)
        if status in (404, 409):
            logger.warning(
                "control plane no longer wants job %d's result (%d): %s", job, status, detail
            )
            return True
        if status >= 500 or status in (401, 403, 429):
            return self._retry(job, f"control plane answered {status}: {detail}")
        logger.error(
            "control plane rejected job %d's result (%d): %s; dropped", job, status, detail
        )
        return True

    def _retry(self, job: int, why: str) -> bool:
        # One warning per outage, not one per attempt.
        level = logging.DEBUG if self._warned else logging.WARNING
        logger.log(level, "cannot report job %d yet (%s); retrying with backoff", job, why)
        self._warned = True
        return False
