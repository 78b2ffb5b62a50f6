"""Everything one running control plane holds, built once from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from serverctl.config import Settings
from serverctl.db.session import Database
from serverctl.domain.agents import AgentGate
from serverctl.domain.jobs import JobService
from serverctl.domain.live import LiveState
from serverctl.domain.operators import OperatorService
from serverctl.domain.pools import PoolService
from serverctl.domain.schedules import ScheduleService


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

    @classmethod
    def build(cls, settings: Settings) -> AppState:
        db = Database(settings)
        live = LiveState()
        jobs = JobService(db, live, settings.job_pending_ttl_s, settings.public_url)
        return cls(
            settings=settings,
            db=db,
            live=live,
            pools=PoolService(db, live),
            operators=OperatorService(db, settings.session_max_age_s),
            gate=AgentGate(live),
            jobs=jobs,
            schedules=ScheduleService(db, jobs),
        )
