"""Support bundles over REST: the archive of a pool or of one member, as a download
(docs/support-bundle.md). Operator role: making one queues `agent.logs` jobs on the hosts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from serverctl.api.deps import Operator, State
from serverctl.api.errors import API_ERRORS
from serverctl.api.schemas import Id
from serverctl.domain.support_bundle import DEFAULT_WAIT_S, MAX_WAIT_S, Bundle, SupportBundles
from serverctl.state import AppState

router = APIRouter(tags=["support"], responses=API_ERRORS)

WaitS = Annotated[
    float,
    Query(
        ge=0,
        le=MAX_WAIT_S,
        description="how long to wait for the agents' fresh log lines (seconds)",
    ),
]
ARCHIVE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/gzip": {}},
        "description": "a tar.gz archive; its README.txt says what is in it",
    }
}


def bundles_of(state: AppState) -> SupportBundles:
    """The bundle maker over the running control plane's services (cheap: nothing is copied)."""
    return SupportBundles(
        db=state.db,
        box=state.box,
        settings=state.settings,
        pools=state.pools,
        jobs=state.jobs,
        failover=state.failover,
        alerts=state.alerts,
        backups=state.backups,
        pool_dns=state.pool_dns,
    )


def download(bundle: Bundle) -> Response:
    return Response(
        bundle.data,
        media_type="application/gzip",
        headers={
            "Content-Disposition": f'attachment; filename="{bundle.filename}"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/api/pools/{pool_id}/support-bundle", responses=ARCHIVE, response_class=Response)
def pool_bundle(
    pool_id: Id, state: State, who: Operator, wait_s: WaitS = DEFAULT_WAIT_S
) -> Response:
    """Everything support needs about the pool and all its members (docs/support-bundle.md)."""
    return download(bundles_of(state).build(who, pool_id, wait_s=wait_s))


@router.get(
    "/api/pools/{pool_id}/members/{member_id}/support-bundle",
    responses=ARCHIVE,
    response_class=Response,
)
def member_bundle(
    pool_id: Id, member_id: Id, state: State, who: Operator, wait_s: WaitS = DEFAULT_WAIT_S
) -> Response:
    """The same for one member: its heartbeat, health, jobs, backups and agent log."""
    return download(bundles_of(state).build(who, pool_id, member_id, wait_s=wait_s))
