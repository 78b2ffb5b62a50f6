"""The job loop: time out jobs that got no result, and queue the jobs of due cron schedules."""

from __future__ import annotations

import asyncio
import logging

from serverctl.domain.jobs import JobService
from serverctl.domain.schedules import ScheduleService

log = logging.getLogger(__name__)


async def run(jobs: JobService, schedules: ScheduleService, every_s: float = 2.0) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            await asyncio.to_thread(jobs.reap)
            await asyncio.to_thread(schedules.run_due)
        except Exception:  # noqa: BLE001 - the loop must outlive one bad round
            log.exception("job loop round failed; will retry")
