"""The failover evaluator: about once a second, and at once when a heartbeat changes health.

A heartbeat that flips HAProxy's state calls `wake()` (cheap: sets an asyncio event from the
event loop), so HAProxy death reaches DNS without waiting for the next tick. The tick still
catches silence, which no heartbeat can report.
"""

from __future__ import annotations

import asyncio
import logging

from serverctl.domain.failover import FailoverService

log = logging.getLogger(__name__)


class Evaluator:
    def __init__(self, failover: FailoverService, tick_s: float = 1.0) -> None:
        self.failover = failover
        self.tick_s = tick_s
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        self.failover.start_listening()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.tick_s)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await asyncio.to_thread(self.failover.evaluate)
            except Exception:  # noqa: BLE001 - the evaluator must outlive one bad round
                log.exception("failover evaluation failed; will retry")
