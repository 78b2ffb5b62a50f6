"""The backup loop: queue the backups of due member policies, and tidy up after backup jobs that
ended without a result (their snapshots fail) and transfers past their time."""

from __future__ import annotations

import asyncio
import logging

from serverctl.domain.backups import BackupService

log = logging.getLogger(__name__)


async def run(backups: BackupService, every_s: float = 5.0) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            await asyncio.to_thread(backups.run_due)
            await asyncio.to_thread(backups.tidy)
        except Exception:  # noqa: BLE001 - the loop must outlive one bad round
            log.exception("backup loop round failed; will retry")
