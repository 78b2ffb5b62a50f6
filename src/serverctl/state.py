"""Everything one running control plane holds, built once from the settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from serverctl.acme.settings import AcmeSettingsService
from serverctl.backups.settings import BackupStores
from serverctl.config import Settings
from serverctl.crypto import SecretBox
from serverctl.db.session import Database
from serverctl.db.types import utcnow
from serverctl.domain import fleet_stats
from serverctl.domain.agents import AgentGate
from serverctl.domain.alert_delivery import AlertDelivery
from serverctl.domain.alerts import AlertService
from serverctl.domain.backups import BackupService
from serverctl.domain.dns_accounts import DnsAccounts
from serverctl.domain.dns_updates import DnsPublisher
from serverctl.domain.failover import FailoverService
from serverctl.domain.jobs import JobService
from serverctl.domain.live import LiveState
from serverctl.domain.login_throttle import LoginThrottle, ThrottleLimits
from serverctl.domain.monitors import MemberMonitors
from serverctl.domain.operators import OperatorService
from serverctl.domain.pool_dns import PoolDnsService
from serverctl.domain.pools import PoolService
from serverctl.domain.schedules import ScheduleService
from serverctl.domain.smtp_settings import SmtpService
from serverctl.domain.tls_orders import ORDER_JOBS, TlsOrders
from serverctl.domain.tls_renewal import TlsRenewal
from serverctl.metrics import Metrics, build_registry


def _no_wake() -> None:
    """Until the evaluator loop runs, there is nothing to wake."""


@dataclass
class AppState:
    settings: Settings
    db: Database
    live: LiveState
    pools: PoolService
    operators: OperatorService
    gate: AgentGate
    jobs: JobService
    schedules: ScheduleService
    box: SecretBox
    dns_accounts: DnsAccounts
    publisher: DnsPublisher
    pool_dns: PoolDnsService
    failover: FailoverService
    alerts: AlertService
    smtp: SmtpService
    delivery: AlertDelivery
    monitors: MemberMonitors
    backup_stores: BackupStores
    backups: BackupService
    acme_settings: AcmeSettingsService
    tls_orders: TlsOrders
    tls_renewal: TlsRenewal
    metrics: Metrics = field(default_factory=Metrics)
    # What /metrics exposes: `metrics`, and the fleet read at scrape time (set by `build`).
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    # Set by the evaluator loop: wakes it at once (a heartbeat changed a member's health).
    wake_evaluator: Callable[[], None] = field(default=_no_wake)

    @classmethod
    def build(cls, settings: Settings) -> AppState:
        db = Database(settings)
        live = LiveState()
        jobs = JobService(db, live, settings.job_pending_ttl_s, settings.public_url)
        box = SecretBox.from_key_or_file(
            settings.secret_key.get_secret_value() if settings.secret_key else None,
            settings.data_dir,
        )
        alerts = AlertService(db)
        accounts = DnsAccounts(db, box, timeout=settings.dns_timeout_s)
        metrics = Metrics()
        publisher = DnsPublisher(
            db, accounts, alert=alerts.hook, on_attempt=metrics.dns_update_attempted
        )
        smtp = SmtpService(db, box)
        stores = BackupStores(db, box, settings.data_dir)
        backups = BackupService(db, live, jobs, stores, alerts)
        for job_type in ("haproxy.backup", "backup.ufw", "haproxy.restore"):
            jobs.hooks[job_type] = backups
        acme_settings = AcmeSettingsService(db, box)
        renewal = TlsRenewal(db, live, jobs, alerts)
        for job_type in ORDER_JOBS:
            jobs.hooks[job_type] = renewal
        return cls(
            settings=settings,
            db=db,
            live=live,
            pools=PoolService(db, live),
            operators=OperatorService(
                db,
                settings.session_max_age_s,
                LoginThrottle(
                    ThrottleLimits(
                        settings.login_max_failures,
                        settings.login_max_failures_per_source,
                        settings.login_window_s,
                    )
                ),
            ),
            gate=AgentGate(live),
            jobs=jobs,
            schedules=ScheduleService(db, jobs),
            box=box,
            dns_accounts=accounts,
            publisher=publisher,
            pool_dns=PoolDnsService(db, live, accounts, publisher),
            failover=FailoverService(db, live, publisher, alert=alerts.hook),
            alerts=alerts,
            smtp=smtp,
            delivery=AlertDelivery(db, smtp, alerts, settings.public_url),
            monitors=MemberMonitors(db, live, alerts),
            backup_stores=stores,
            backups=backups,
            acme_settings=acme_settings,
            tls_orders=TlsOrders(db, accounts, acme_settings),
            tls_renewal=renewal,
            metrics=metrics,
            registry=build_registry(metrics, lambda: fleet_stats.read(db, live, utcnow())),
        )
