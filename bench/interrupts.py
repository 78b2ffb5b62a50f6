"""Ctrl-C and SIGTERM end a benchmark through its clean-up, never half-way through a start.

A benchmark starts servers, agents, haproxy, keepalived and network namespaces; each is stopped
by a `finally` or a context manager. Two gaps remain, and this module closes them: SIGTERM
(which by default kills Python without running any `finally`), and an interrupt that lands
while a helper is starting a process, before the caller holds anything it could stop.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = {signal.SIGINT, signal.SIGTERM}


def stop_on_sigterm() -> None:
    """SIGTERM ends the run like Ctrl-C does: through every `finally`."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back until the block ends, then act on them as usual.

    Assign what the block starts to a name that an enclosing `finally` stops, so that it is
    stopped even when the held-back interrupt is raised as the block ends:

        server = None
        try:
            with deferred_interrupts():
                server = start_server(...)
            ...
        finally:
            if server is not None:
                stop_process(server.process)

    The signals are caught and noted rather than blocked: a blocked mask would be inherited by
    the processes the block starts, which would then ignore the SIGTERM that stops them."""
    noted: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        noted.append(signum)

    previous = {signum: signal.signal(signum, note) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if noted:
            signal.raise_signal(noted[0])
