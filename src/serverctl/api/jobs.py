"""Jobs, recipes, cron schedules and the job catalogue."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from serverctl.api.deps import Operator, State
from serverctl.api.errors import API_ERRORS
from serverctl.api.json_route import StrictJSONRoute
from serverctl.api.schemas import Id, Page
from serverctl.domain import catalogue
from serverctl.domain.jobs import Enqueue

router = APIRouter(prefix="/api", tags=["jobs"], responses=API_ERRORS, route_class=StrictJSONRoute)


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(examples=["haproxy.reload"])
    params: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(
        default=None,
        max_length=128,
        description="Enqueueing again with the same key returns the first job.",
    )
    timeout_s: int | None = Field(default=None, description="5-86400; default per job type.")


class JobQueued(BaseModel):
    job_id: int


class RecipeRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    idempotency_key: str | None = Field(default=None, max_length=128)
    extra_names: list[str] | None = Field(
        default=None,
        max_length=9,
        description="letsencrypt only: more names for the certificate, in the pool's zone.",
    )


class ScheduleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_type: str = Field(examples=["haproxy.reload"])
    cron: str = Field(examples=["0 3 * * *"], description="5 fields, UTC.")
    member_id: Id | None = Field(default=None, description="Leave out for every member.")
    params: dict[str, Any] = Field(default_factory=dict)


class ScheduleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool


def _base_url(state: State, request: Request) -> str:
    return (state.settings.public_url or str(request.base_url)).rstrip("/")


@router.get("/catalogue")
def job_catalogue(who: Operator) -> dict[str, Any]:
    items = [
        {
            "type": k.name,
            "title": k.title,
            "timeout_s": k.timeout_s,
            "needs_haproxy": k.needs_haproxy,
            "params": k.params.model_json_schema(),
        }
        for k in catalogue.CATALOGUE.values()
    ]
    return {"items": items, "total": len(items)}


@router.post("/pools/{pool_id}/members/{member_id}/jobs", status_code=202, response_model=JobQueued)
def enqueue_job(
    pool_id: Id, member_id: Id, body: JobCreate, state: State, who: Operator, request: Request
) -> dict[str, Any]:
    job = state.jobs.enqueue(
        who,
        Enqueue(
            pool_id,
            member_id,
            body.type,
            body.params,
            idempotency_key=body.idempotency_key,
            timeout_s=body.timeout_s,
            base_url=_base_url(state, request),
        ),
    )
    return {"job_id": job["id"]}


@router.get("/pools/{pool_id}/members/{member_id}/jobs", response_model=Page[dict[str, Any]])
def list_member_jobs(
    pool_id: Id,
    member_id: Id,
    state: State,
    who: Operator,
    job_state: Annotated[str | None, Query(alias="state")] = None,
    job_type: Annotated[str | None, Query(alias="type")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    items, total = state.jobs.list_jobs(who, pool_id, member_id, job_state, job_type, limit, offset)
    return {"items": items, "total": total}


@router.get("/pools/{pool_id}/jobs", response_model=Page[dict[str, Any]])
def list_pool_jobs(
    pool_id: Id,
    state: State,
    who: Operator,
    job_state: Annotated[str | None, Query(alias="state")] = None,
    job_type: Annotated[str | None, Query(alias="type")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    items, total = state.jobs.list_jobs(who, pool_id, None, job_state, job_type, limit, offset)
    return {"items": items, "total": total}


@router.get("/jobs/{job_id}")
def get_job(job_id: Id, state: State, who: Operator) -> dict[str, Any]:
    return state.jobs.get(who, job_id)


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: Id, state: State, who: Operator) -> dict[str, Any]:
    return state.jobs.cancel(who, job_id)


@router.get("/pools/{pool_id}/members/{member_id}/recipes", response_model=Page[dict[str, Any]])
def list_recipes(pool_id: Id, member_id: Id, state: State, who: Operator) -> dict[str, Any]:
    items = state.jobs.recipe_states(who, pool_id, member_id)
    return {"items": items, "total": len(items)}


@router.post(
    "/pools/{pool_id}/members/{member_id}/recipes/{recipe_id}/apply",
    status_code=202,
    response_model=JobQueued,
)
def apply_recipe(
    pool_id: Id,
    member_id: Id,
    recipe_id: str,
    state: State,
    who: Operator,
    body: RecipeRun | None = None,
) -> dict[str, Any]:
    key = body.idempotency_key if body else None
    options = {"extra_names": body.extra_names} if body and body.extra_names is not None else {}
    job = state.jobs.start_recipe(who, pool_id, member_id, recipe_id, "apply", key, options)
    return {"job_id": job["id"]}


@router.post(
    "/pools/{pool_id}/members/{member_id}/recipes/{recipe_id}/disable",
    status_code=202,
    response_model=JobQueued,
)
def disable_recipe(
    pool_id: Id,
    member_id: Id,
    recipe_id: str,
    state: State,
    who: Operator,
    body: RecipeRun | None = None,
) -> dict[str, Any]:
    key = body.idempotency_key if body else None
    job = state.jobs.start_recipe(who, pool_id, member_id, recipe_id, "disable", key)
    return {"job_id": job["id"]}


@router.get("/pools/{pool_id}/schedules", response_model=Page[dict[str, Any]])
def list_schedules(
    pool_id: Id, state: State, who: Operator, member_id: Id | None = None
) -> dict[str, Any]:
    items = state.schedules.list(who, pool_id, member_id)
    return {"items": items, "total": len(items)}


@router.post("/pools/{pool_id}/schedules", status_code=201)
def create_schedule(
    pool_id: Id, body: ScheduleCreate, state: State, who: Operator
) -> dict[str, Any]:
    return state.schedules.create(
        who, pool_id, body.job_type, body.cron, body.member_id, body.params
    )


@router.patch("/pools/{pool_id}/schedules/{schedule_id}")
def update_schedule(
    pool_id: Id, schedule_id: Id, body: ScheduleUpdate, state: State, who: Operator
) -> dict[str, Any]:
    return state.schedules.set_enabled(who, pool_id, schedule_id, body.enabled)


@router.delete("/pools/{pool_id}/schedules/{schedule_id}", status_code=204)
def delete_schedule(pool_id: Id, schedule_id: Id, state: State, who: Operator) -> Response:
    state.schedules.delete(who, pool_id, schedule_id)
    return Response(status_code=204)
