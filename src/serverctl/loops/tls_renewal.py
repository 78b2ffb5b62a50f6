"""The certificate renewal loop: renew failover certificates within 30 days of expiry every
`every_s` (SERVERCTL_TLS_RENEW_CHECK_S), and look for certificate jobs that ended without a
completion (timed out, lost) more often, so their failure alert is not an hour late."""

from __future__ import annotations

import asyncio
import logging
import time

from serverctl.domain.tls_renewal import TlsRenewal

log = logging.getLogger(__name__)

# The alert sweep's period (when renewal rounds are further apart than this).
SWEEP_S = 30.0
# The first renewal round this long after start (or one period, if shorter): a restart does
# not wait a whole period, and the start is left to the agents' first heartbeats.
FIRST_ROUND_S = 60.0


async def run(renewal: TlsRenewal, every_s: float) -> None:
    tick = min(every_s, SWEEP_S)
    next_renewal = time.monotonic() + min(every_s, FIRST_ROUND_S)
    while True:
        await asyncio.sleep(tick)
        try:
            await asyncio.to_thread(renewal.sweep_alerts)
            if time.monotonic() >= next_renewal:
                next_renewal = time.monotonic() + every_s
                await asyncio.to_thread(renewal.renew_due)
        except Exception:  # noqa: BLE001 - the loop must outlive one bad round
            log.exception("TLS renewal round failed; will retry")
