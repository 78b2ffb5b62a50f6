"""The control plane's Prometheus metrics: in-memory counters and the scrape-time collector.

Counted in memory, because nothing else keeps them:
- heartbeats, by the heartbeat handler. It runs on the event loop (one thread) and only adds to
  plain integers here: no locks, no label lookups on the hot path;
- DNS record updates and their latency, by the DNS publisher's thread, through prometheus_client's
  thread-safe `Counter` and `Histogram`.

Everything else (member health, failovers, jobs, backup age) is read when Prometheus scrapes
(`domain.fleet_stats`), so it survives restarts and is never counted twice. Each app has its own
`CollectorRegistry`: tests build several apps in one process, and the global default registry
would mix them. See docs/metrics.md for every metric.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from serverctl import __version__
from serverctl.domain.fleet_stats import FleetStats

# AgentAuthError.reason values; each is reported from zero so a first refusal shows as a rise.
REJECTION_REASONS = ("token", "revoked", "source_ip", "payload", "too_large", "hostname")
# A provider API call takes tens of milliseconds to seconds; the timeout is 10 s by default.
DNS_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _dns_updates() -> PromCounter:
    return PromCounter(
        "serverctl_dns_updates",
        "Attempts to set a pool's A record at its DNS provider, by provider kind and outcome.",
        ["provider", "outcome"],
        registry=None,
    )


def _dns_seconds() -> Histogram:
    return Histogram(
        "serverctl_dns_update_seconds",
        "Seconds one attempt to set a pool's A record took at the provider (ok or error).",
        ["provider"],
        buckets=DNS_BUCKETS_S,
        registry=None,
    )


@dataclass
class Metrics:
    # Accepted heartbeats; refused ones by AgentAuthError.reason.
    heartbeats_received: int = 0
    heartbeats_rejected: Counter[str] = field(default_factory=Counter)
    dns_updates: PromCounter = field(default_factory=_dns_updates)
    dns_update_seconds: Histogram = field(default_factory=_dns_seconds)

    def heartbeat_rejected(self, reason: str) -> None:
        self.heartbeats_rejected[reason] += 1

    def dns_update_attempted(self, provider: str, ok: bool, seconds: float) -> None:
        """One attempt of the DNS publisher to set a record (called from its thread)."""
        self.dns_updates.labels(provider, "ok" if ok else "error").inc()
        self.dns_update_seconds.labels(provider).observe(seconds)

    def known_dns_providers(self, kinds: tuple[str, ...]) -> None:
        """Start the series of configured provider kinds at zero, so a first error shows."""
        for kind in kinds:
            self.dns_updates.labels(kind, "ok")
            self.dns_updates.labels(kind, "error")
            self.dns_update_seconds.labels(kind)


class ServerCtlCollector:
    """Builds every `serverctl_*` family when Prometheus scrapes (in a worker thread)."""

    def __init__(self, metrics: Metrics, read_fleet: Callable[[], FleetStats]) -> None:
        self.metrics = metrics
        self.read_fleet = read_fleet

    def collect(self) -> Iterator[Metric]:
        fleet = self.read_fleet()
        yield from self._heartbeats()
        yield from _fleet_families(fleet)
        self.metrics.known_dns_providers(fleet.dns_provider_kinds)
        yield from self.metrics.dns_updates.collect()
        yield from self.metrics.dns_update_seconds.collect()
        info = GaugeMetricFamily(
            "serverctl_info", "The running control plane's version.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info

    def _heartbeats(self) -> Iterator[Metric]:
        # Read from another thread than the one counting: an int read and a dict copy are each
        # atomic under the GIL, so the worst case is a figure one heartbeat old.
        received = CounterMetricFamily(
            "serverctl_heartbeats_received",
            "Agent heartbeats accepted.",
            value=self.metrics.heartbeats_received,
        )
        rejected = CounterMetricFamily(
            "serverctl_heartbeats_rejected",
            "Agent heartbeats refused, by reason (token, revoked, source_ip, payload, "
            "too_large, hostname).",
            labels=["reason"],
        )
        counts = dict.fromkeys(REJECTION_REASONS, 0) | dict(self.metrics.heartbeats_rejected)
        for reason, count in sorted(counts.items()):
            rejected.add_metric([reason], count)
        yield received
        yield rejected


def _fleet_families(fleet: FleetStats) -> Iterator[Metric]:
    members = GaugeMetricFamily(
        "serverctl_members",
        "Members by pool, role (active, standby) and health (pending, healthy, unhealthy), "
        "by the same rule as the API and the UI.",
        labels=["pool", "role", "health"],
    )
    for (pool, role, state), count in sorted(fleet.members.items()):
        members.add_metric([pool, role, state], count)
    yield members
    failovers = CounterMetricFamily(
        "serverctl_failovers",
        "Failover events recorded, by pool and trigger (automatic, manual, cutover).",
        labels=["pool", "trigger"],
    )
    for (pool, trigger), count in sorted(fleet.failovers.items()):
        failovers.add_metric([pool, trigger], count)
    yield failovers
    jobs = GaugeMetricFamily(
        "serverctl_jobs", "Jobs in the database, by type and state.", labels=["type", "state"]
    )
    for (job_type, state), count in sorted(fleet.jobs.items()):
        jobs.add_metric([job_type, state], count)
    yield jobs
    ages = GaugeMetricFamily(
        "serverctl_backup_age_seconds",
        "Seconds since each member's newest completed backup, by pool, member and kind "
        "(haproxy, ufw). Members with no completed backup have no series.",
        labels=["pool", "member", "kind"],
    )
    for (pool, member, kind), age in sorted(fleet.backup_ages.items()):
        ages.add_metric([pool, member, kind], round(age, 3))
    yield ages


def build_registry(metrics: Metrics, read_fleet: Callable[[], FleetStats]) -> CollectorRegistry:
    """One app's registry: the serverctl families and the process's own (CPU, memory, fds)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCtlCollector(metrics, read_fleet))
    ProcessCollector(registry=registry)
    return registry
