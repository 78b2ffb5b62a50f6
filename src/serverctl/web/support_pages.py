"""The "Download support bundle" buttons (pool Overview, member Health tab).

A POST with the CSRF token, not a link: making a bundle queues `agent.logs` jobs on the hosts.
It is answered with the archive itself, so the browser saves it and the page stays as it was.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import Response

from serverctl.api.deps import State
from serverctl.api.schemas import Id
from serverctl.api.support_bundle import bundles_of, download
from serverctl.domain.support_bundle import DEFAULT_WAIT_S
from serverctl.web.auth import FormUser

router = APIRouter(include_in_schema=False)

WaitS = Annotated[float, Form()]


@router.post("/pools/{pool_id}/support-bundle")
def pool_bundle(
    pool_id: Id, state: State, user: FormUser, wait_s: WaitS = DEFAULT_WAIT_S
) -> Response:
    return download(bundles_of(state).build(user.principal, pool_id, wait_s=wait_s))


@router.post("/pools/{pool_id}/members/{member_id}/support-bundle")
def member_bundle(
    pool_id: Id, member_id: Id, state: State, user: FormUser, wait_s: WaitS = DEFAULT_WAIT_S
) -> Response:
    return download(bundles_of(state).build(user.principal, pool_id, member_id, wait_s=wait_s))
