"""Everything one running control plane holds, built once from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from serverctl.config import Settings
from serverctl.db.session import Database
from serverctl.domain.agents import AgentGate
from serverctl.domain.live import LiveState
from serverctl.domain.operators import OperatorService
from serverctl.domain.pools import PoolService


@dataclass
class AppState:
    settings: Settings
    db: Database
    live: LiveState
    pools: PoolService
    operators: OperatorService
    gate: AgentGate

    @classmethod
    def build(cls, settings: Settings) -> AppState:
        db = Database(settings)
        live = LiveState()
        return cls(
            settings=settings,
            db=db,
            live=live,
            pools=PoolService(db, live),
            operators=OperatorService(db, settings.session_max_age_s),
            gate=AgentGate(live),
        )
