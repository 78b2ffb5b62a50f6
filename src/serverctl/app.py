"""The ASGI application: REST API, agent API, web UI, /healthz; and its background loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from serverctl import __version__
from serverctl.api import acme as acme_api
from serverctl.api import agent_tls as agent_tls_api
from serverctl.api import agents, backup_store, backups, dns, errors, jobs, operators, pools
from serverctl.api import alerts as alerts_api
from serverctl.api import certificates as certificates_api
from serverctl.api import metrics as metrics_api
from serverctl.api import support_bundle as support_api
from serverctl.api.body_limit import BodyLimit
from serverctl.api.heartbeat_fast_path import ControlPlaneApp
from serverctl.api.nul_guard import NulGuard
from serverctl.config import Settings
from serverctl.loops import alerts as alerts_loop
from serverctl.loops import backups as backups_loop
from serverctl.loops import flush
from serverctl.loops import jobs as jobs_loop
from serverctl.loops import tls_renewal as tls_renewal_loop
from serverctl.loops.failover import Evaluator
from serverctl.state import AppState
from serverctl.web import monitoring as web_monitoring
from serverctl.web import routes as web
from serverctl.web import support_pages as web_support

log = logging.getLogger(__name__)


def create_app(settings: Settings, state: AppState | None = None) -> FastAPI:
    state = state or AppState.build(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        count = await asyncio.to_thread(state.pools.load_live_state)
        await asyncio.to_thread(state.jobs.load_hints)
        log.info("loaded %d members into the live state", count)
        evaluator = Evaluator(state.failover, settings.failover_tick_s)
        state.wake_evaluator = evaluator.wake
        stop_dns = threading.Event()
        dns_worker = threading.Thread(
            target=state.publisher.run, args=(stop_dns,), name="dns-publisher", daemon=True
        )
        dns_worker.start()
        stop_alerts = threading.Event()
        alert_worker = threading.Thread(
            target=alerts_loop.run_delivery,
            args=(state.delivery, state.alerts.wakeup, stop_alerts),
            name="alert-email",
            daemon=True,
        )
        alert_worker.start()
        stop_tls = threading.Event()
        tls_worker = threading.Thread(
            target=state.tls_orders.run, args=(stop_tls,), name="tls-orders", daemon=True
        )
        tls_worker.start()
        tasks = [
            asyncio.create_task(evaluator.run(), name="failover"),
            asyncio.create_task(
                flush.run(state.db, state.live, settings.last_seen_flush_s), name="flush"
            ),
            asyncio.create_task(jobs_loop.run(state.jobs, state.schedules), name="jobs"),
            asyncio.create_task(alerts_loop.run_monitors(state.monitors), name="monitors"),
            asyncio.create_task(backups_loop.run(state.backups), name="backups"),
            asyncio.create_task(
                tls_renewal_loop.run(state.tls_renewal, settings.tls_renew_check_s),
                name="tls-renewal",
            ),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            stop_dns.set()
            state.publisher.kick()
            await asyncio.to_thread(dns_worker.join, 15)
            stop_alerts.set()
            state.alerts.wakeup.set()
            await asyncio.to_thread(alert_worker.join, 15)
            stop_tls.set()
            state.tls_orders.wakeup.set()
            # An order in flight may take minutes; it is failed as interrupted at the next start.
            await asyncio.to_thread(tls_worker.join, 5)
            # Keep the last-seen times of a clean shutdown.
            await asyncio.to_thread(flush.flush_once, state.db, state.live, include_seen=True)

    # FastAPI, with the heartbeat (most of the traffic) taken ahead of it: see
    # api/heartbeat_fast_path.py.
    app = ControlPlaneApp(
        state,
        title="ServerCTL",
        version=__version__,
        description="Control plane for HAProxy server pools. Authenticate with "
        "`Authorization: Bearer <token>` (make one with `serverctl tokens create`).",
        lifespan=lifespan,
    )
    app.state.serverctl = state
    errors.install(app)
    # Operator API and web bodies are small: refuse big ones before they are read (413).
    app.add_middleware(BodyLimit)
    # No NUL in a query string or a form field: no text column could keep it (api/nul_guard.py).
    app.add_middleware(NulGuard)

    @app.get("/healthz", tags=["health"], response_class=PlainTextResponse)
    async def healthz() -> str:
        # A constant answer that touches no database: for load balancers and liveness probes.
        return "ok"

    app.include_router(pools.router)
    app.include_router(operators.router)
    app.include_router(jobs.router)
    app.include_router(dns.router)
    app.include_router(agents.router)
    app.include_router(agent_tls_api.router)
    app.include_router(alerts_api.router)
    app.include_router(backups.router)
    app.include_router(backup_store.router)
    app.include_router(certificates_api.router)
    app.include_router(acme_api.router)
    app.include_router(metrics_api.router)
    web.install(app)
    app.include_router(web_monitoring.router)
    app.include_router(support_api.router)
    app.include_router(web_support.router)
    return app
