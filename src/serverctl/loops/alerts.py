"""The alert loops: email delivery in a thread of its own, the member monitors every 2 s.

Delivery runs about once a second and at once when an alert is raised
(`AlertService.wakeup`); it is a thread because smtplib blocks, and one slow SMTP server must
not hold up the event loop. The monitors only read the live state and write alert rows.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from serverctl.domain.alert_delivery import AlertDelivery
from serverctl.domain.monitors import MemberMonitors

log = logging.getLogger(__name__)


def run_delivery(
    delivery: AlertDelivery,
    wakeup: threading.Event,
    stop: threading.Event,
    every_s: float = 1.0,
) -> None:
    while not stop.is_set():
        wakeup.wait(every_s)
        # Cleared before the round: an alert raised during it wakes the next one.
        wakeup.clear()
        if stop.is_set():
            return
        try:
            delivery.run_once()
        except Exception:  # noqa: BLE001 - the loop must outlive one bad round
            log.exception("alert email round failed; will retry")


async def run_monitors(monitors: MemberMonitors, every_s: float = 2.0) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            await asyncio.to_thread(monitors.run_once)
        except Exception:  # noqa: BLE001 - the loop must outlive one bad round
            log.exception("member monitor round failed; will retry")
