"""Between heartbeats: notice at once when HAProxy stops, or starts again.

The control plane promotes a standby when the active member's heartbeat says HAProxy is not
active, so the agent must not wait for the next regular beat to say so. The heartbeat loop
calls `changed()` every BALCTL_PROBE_INTERVAL_S (0.2 s by default) while it waits, and sends
the next beat at once when it returns True; `probe()` is the full check each beat carries.

A tick is cheap: it forks nothing. The full check (haproxy_probe.read) found a process, the
pidfile's pid or systemd's MainPID; a tick only reads /proc/<pid>/stat to see that the same
process (same start time, so not a recycled pid) is still alive and not a zombie. Only when it
is gone does the tick run the full check again. With nothing to watch, a tick reads the pidfile
again (pidfile mode: no fork either); under systemd it leaves that to the next beat, since
running `systemctl` several times a second would cost more than the whole agent.

A fall from active to inactive is confirmed before it is believed: a pidfile reload
(`haproxy -sf`) truncates the pidfile and the old process exits before the new pid is written,
a window of a few ms (7 ms at most in 100 reloads of HAProxy 2.6 here). The check is repeated
every CONFIRM_S until two readings agree or one is active again, for at most CONFIRM_MAX_S.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Optional, Tuple

from balctl.haproxy_probe import Reading, read
from balctl.paths import HostPaths
from balctl.proc import process_start

logger = logging.getLogger(__name__)

CONFIRM_S = 0.05
CONFIRM_MAX_S = 0.5

State = Tuple[Any, Any, Any]


def state_of(block: Dict[str, Any]) -> State:
    """What a change of is about: monitored or not, active or not, and how it was told."""
    return (block.get("monitored"), block.get("active"), block.get("source"))


def _serving(reading: Optional[Reading]) -> bool:
    return reading is not None and reading.block.get("active") is True


class HaproxyWatch:
    """The last state a heartbeat carried, the process behind it, and the cheap tick."""

    def __init__(
        self,
        read: Callable[[], Reading],
        identify: Callable[[int], Optional[str]] = process_start,
        sleep: Callable[[float], Any] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._identify = identify
        self._sleep = sleep
        self._clock = clock
        self._known: Optional[Reading] = None  # the last reading believed
        self._sent: Optional[State] = None  # the state the last heartbeat carried
        self._watched: Optional[Tuple[int, str]] = None  # (pid, start) of the serving process

    @classmethod
    def for_host(cls, paths: HostPaths, pidfile: Optional[str]) -> HaproxyWatch:
        return cls(lambda: read(paths, pidfile))

    @property
    def watched_pid(self) -> Optional[int]:
        return self._watched[0] if self._watched is not None else None

    def probe(self) -> Dict[str, Any]:
        """The full check, for a heartbeat: its `haproxy` block, whose state counts as sent."""
        reading = self._settle(self._read())
        self._sent = state_of(reading.block)
        return dict(reading.block)

    def changed(self) -> bool:
        """One probe tick: True when HAProxy's state is no longer the one the last heartbeat
        carried, so the next heartbeat should go now."""
        if self._watched is not None:
            pid, start = self._watched
            if self._identify(pid) == start:
                return False  # the same process still serves (the beats check the rest)
        elif self._known is None or not self._known.cheap:
            return False  # nothing to watch without forking: the next beat's full check tells
        reading = self._settle(self._read())
        return state_of(reading.block) != self._sent

    def _settle(self, reading: Reading) -> Reading:
        """Believe `reading` (confirmed first when it says HAProxy just stopped serving)."""
        if _serving(self._known) and reading.block.get("monitored") and not _serving(reading):
            reading = self._confirm(reading)
        previous, self._known = self._known, reading
        self._watched = None
        if _serving(reading) and reading.pid is not None:
            start = self._identify(reading.pid)
            if start is not None:
                self._watched = (reading.pid, start)
        if previous is not None and state_of(previous.block) != state_of(reading.block):
            self._log_change(reading)
        return reading

    def _confirm(self, first: Reading) -> Reading:
        end = self._clock() + CONFIRM_MAX_S
        last = first
        while True:
            self._sleep(CONFIRM_S)
            again = self._read()
            if _serving(again) or again == last or self._clock() >= end:
                return again
            last = again

    def _log_change(self, reading: Reading) -> None:
        block = reading.block
        if not block.get("monitored"):
            logger.warning("HAProxy is no longer monitored (source %s)", block.get("source"))
        elif block.get("active"):
            logger.info(
                "HAProxy is running (source %s, pid %s)", block.get("source"), reading.pid or "?"
            )
        else:
            logger.warning(
                "HAProxy is not running (source %s, pid %s)",
                block.get("source"),
                reading.pid or "none",
            )
