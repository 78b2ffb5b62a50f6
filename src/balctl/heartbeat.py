"""The heartbeat loop: tell the control plane, about once a second, that this host is alive.

The loop never ends on its own: network errors, 5xx and refusals all back off (1, 2, 4 ... 30 s)
and try again, because the operator may fix the cause (restart the control plane, add an
allowed IP) without touching the agent. Logs change only when the state changes, so an outage
is a few lines in the journal, not one per second.

Between beats the loop checks HAProxy every BALCTL_PROBE_INTERVAL_S (haproxy_watch.py) and sends
the next beat at once when HAProxy stopped or started again: the control plane fails over on
that beat, so it must not wait out the interval. At most one such beat per check, so a
flapping HAProxy cannot cause a storm; the regular beats keep their interval.

Each beat may also carry the enrichment of enrich.py in its `haproxy` block and, with a job
runner, `jobs_running`. Jobs in the answer go to the runner, which runs them in its own thread:
a beat never waits for a job or for the delivery of a job's result.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List, Optional, Protocol, Tuple

from balctl import __version__
from balctl.backoff import Backoff
from balctl.config import AgentConfig
from balctl.enrich import Enricher
from balctl.errors import TransportError
from balctl.haproxy_probe import probe
from balctl.haproxy_watch import HaproxyWatch
from balctl.paths import HostPaths
from balctl.public_ip import resolve_ip
from balctl.transport import ControlPlaneClient, JsonDict, describe_detail

logger = logging.getLogger(__name__)

HEARTBEAT_PATH = "/api/agents/heartbeat"
MIN_INTERVAL_S = 0.2
MAX_INTERVAL_S = 60.0
# A probed address is looked up again this often (and after any network error): DHCP and
# interface changes happen, but not every second.
IP_REFRESH_S = 60.0

_OK: Tuple[Any, ...] = ("ok",)


class Jobs(Protocol):
    """What the loop needs of a job runner (jobs/runner.py, or deferred_jobs.py's stand-in)."""

    def offer(self, jobs: Any) -> int: ...

    def running(self) -> List[int]: ...


def build_payload(
    cfg: AgentConfig,
    ip: Optional[str] = None,
    paths: Optional[HostPaths] = None,
    haproxy: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """The heartbeat body. `ip` and `haproxy` save a probe when the caller already has them."""
    return {
        "ip": ip or resolve_ip(cfg.server, cfg.source_ip, cfg.public_ip),
        "hostname": cfg.hostname,
        "version": __version__,
        "haproxy": (
            haproxy
            if haproxy is not None
            else probe(paths or HostPaths.from_env(), cfg.haproxy_pidfile)
        ),
    }


def clamp_interval(value: Any, default: float) -> float:
    """The server's `heartbeat_interval_s`, kept within 0.2..60 s; `default` when unusable."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return default
    return min(MAX_INTERVAL_S, max(MIN_INTERVAL_S, float(value)))


class HeartbeatLoop:
    def __init__(
        self,
        cfg: AgentConfig,
        client: ControlPlaneClient,
        interval: float = 1.0,
        paths: Optional[HostPaths] = None,
        backoff: Optional[Backoff] = None,
        jobs: Optional[Jobs] = None,
        enricher: Optional[Enricher] = None,
        watch: Optional[HaproxyWatch] = None,
    ) -> None:
        self.cfg = cfg
        self.jobs = jobs
        self.enricher = enricher
        self.client = client
        self.interval = clamp_interval(interval, 1.0)
        self.paths = paths or HostPaths.from_env()
        self.watch = watch or HaproxyWatch.for_host(self.paths, cfg.haproxy_pidfile)
        self.probe_interval = cfg.probe_interval
        self._watch_failing = False
        self.backoff = backoff or Backoff(initial=1.0, factor=2.0, cap=30.0, jitter=0.2)
        # What the last beat looked like; a log line is written only when this changes.
        self._state: Optional[Tuple[Any, ...]] = None
        self._ip: Optional[str] = None
        self._ip_at = 0.0

    def run(self, stop: threading.Event) -> None:
        """Beat until `stop` is set. Beats are spaced start to start, not end to start."""
        logger.info(
            "sending heartbeats to %s as %s every %g s, checking HAProxy every %g s",
            self.client.origin,
            self.cfg.hostname,
            self.interval,
            self.probe_interval,
        )
        while not stop.is_set():
            started = time.monotonic()
            try:
                delay = self.beat()
            except Exception:  # a bug must not silence the host: log it and keep beating
                logger.exception("heartbeat failed unexpectedly")
                delay = self._failed(("bug",), logging.ERROR, "heartbeat failed unexpectedly")
            self._pause(stop, started + delay)
        logger.info("heartbeat loop stopped")

    def _pause(self, stop: threading.Event, until: float) -> None:
        """Wait until `until` (monotonic), checking HAProxy every probe interval; return early
        when `stop` is set or HAProxy's state changed, so that the next beat goes out now."""
        while True:
            left = until - time.monotonic()
            if left <= 0 or stop.wait(min(left, self.probe_interval)):
                return
            if time.monotonic() >= until:
                return  # the beat is due anyway, and it checks HAProxy itself
            try:
                changed = self.watch.changed()
                self._watch_failing = False
            except Exception:  # a bug here must not stop the beats: they check HAProxy too
                if not self._watch_failing:  # once, not every tick
                    logger.exception("checking HAProxy between heartbeats failed unexpectedly")
                self._watch_failing = True
                changed = False
            if changed:
                logger.debug("HAProxy's state changed: sending a heartbeat now")
                return

    def beat(self) -> float:
        """Send one heartbeat; the number of seconds to wait before the next one."""
        payload = build_payload(self.cfg, ip=self._address(), haproxy=self.watch.probe())
        if self.enricher is not None:
            payload["haproxy"].update(self.enricher.extra())
        if self.jobs is not None:
            payload["jobs_running"] = self.jobs.running()
        try:
            status, body = self.client.post_json(HEARTBEAT_PATH, payload)
        except TransportError as exc:
            self._ip = None  # the route may have changed: probe the address again
            self._not_delivered()
            return self._failed(("unreachable",), logging.WARNING, str(exc))
        if status == 200:
            return self._succeeded(body)
        self._not_delivered()
        detail = describe_detail(body)
        if status in (401, 403):
            # The control plane's reason says what to fix: revoked secret, source IP, hostname.
            message = f"control plane refused the heartbeat ({status}): {detail}"
            return self._failed(("refused", status, detail), logging.ERROR, message)
        if status >= 500:
            message = f"control plane error ({status}): {detail}"
            return self._failed(("server", status, detail), logging.WARNING, message)
        message = f"control plane rejected the heartbeat ({status}): {detail}"
        return self._failed(("rejected", status, detail), logging.WARNING, message)

    def _address(self) -> str:
        now = time.monotonic()
        if self._ip is None or now - self._ip_at >= IP_REFRESH_S:
            self._ip = resolve_ip(self.cfg.server, self.cfg.source_ip, self.cfg.public_ip)
            self._ip_at = now
        return self._ip

    def _succeeded(self, body: JsonDict) -> float:
        if self._state != _OK:
            if self._state is None:
                logger.info("heartbeat accepted by %s", self.client.origin)
            else:
                logger.info(
                    "heartbeat accepted again after %d failed attempts", self.backoff.failures
                )
            self._state = _OK
        self.backoff.reset()
        self.interval = clamp_interval(body.get("heartbeat_interval_s"), self.interval)
        self._offer_jobs(body.get("jobs"))
        return self.interval

    def _offer_jobs(self, jobs: Any) -> None:
        # The server hands each job out already claimed; the runner queues the new ones and
        # runs them in its own thread, so this returns at once.
        if not isinstance(jobs, list) or not jobs:
            return
        if self.jobs is None:
            logger.debug("control plane offered %d job(s); this loop has no job runner", len(jobs))
            return
        self.jobs.offer(jobs)

    def _not_delivered(self) -> None:
        if self.enricher is not None:
            self.enricher.lost()

    def _failed(self, state: Tuple[Any, ...], level: int, message: str) -> float:
        delay = self.backoff.next_delay()
        if state != self._state:
            logger.log(level, "%s; retrying with backoff", message)
            self._state = state
        else:
            logger.debug("%s; next attempt in %.1f s", message, delay)
        return delay
