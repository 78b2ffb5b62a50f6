"""Jobs: queued by operators, cron, recipes or failover; run by the member's agent.

Life of a job: `pending` → `running` (claimed by a heartbeat) → `completed` | `failed`, or
`cancelled` by an operator, or `timed_out` when no result comes within its timeout (or nobody
claims it within the pending time limit). Every rule here uses only database timestamps, so a
control-plane restart loses nothing and leaves nothing `running` for ever.

A member runs one job at a time: a heartbeat claims the oldest pending job only when none is
running, so each job's timeout starts when it really starts. A recipe is a job of its own
(never sent to an agent) whose steps are ordinary jobs queued one after the other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from serverctl.agent_dist import build_zipapp
from serverctl.db.models import Job, Member, Pool, PoolDns
from serverctl.db.session import Database
from serverctl.db.types import utcnow
from serverctl.domain import audit, catalogue, lookup, recipes
from serverctl.domain.catalogue import RECIPE_JOB, TERMINAL, JobState
from serverctl.domain.live import LiveState
from serverctl.domain.pool_job_params import POOL_PARAMS
from serverctl.domain.principal import Principal
from serverctl.errors import Conflict, NotFound, ServerCTLError, ValidationError

log = logging.getLogger(__name__)

MAX_OUTPUT = 64 * 1024
MAX_SUMMARY = 500
# Time for the agent's completion to arrive after its own command timeout.
COMPLETION_GRACE_S = 10
# A job handed out this recently may not have reached the agent's worker yet.
LOST_JOB_GRACE_S = 15
SOURCES = ("operator", "cron", "recipe", "failover")


class JobHooks:
    """What a feature adds to the life of its job types (backups: upload URLs, snapshots).

    `handout` runs when an agent claims the job, inside the claim's transaction: it returns the
    params the agent gets (short-lived URLs are made here, not when the job is queued, so they
    are fresh however long the job waited). Raising ServerCTLError fails the job with its
    message, so raise before adding rows: the transaction goes on and commits.
    `review` runs when the agent's result arrives, before any transaction (it may do I/O, such
    as checking an upload): it returns the (state, summary) to record. `recorded` runs inside the
    completion's transaction, after the job row changed; `committed` after that transaction.
    """

    def handout(self, s: Session, job: Job) -> dict[str, Any]:
        return dict(job.params)

    def review(
        self, job_id: int, state: str, summary: str, result: dict[str, Any] | None
    ) -> tuple[str, str]:
        return state, summary

    def recorded(self, s: Session, job: Job) -> None:
        return None

    def committed(self, job_id: int) -> None:
        return None


@dataclass(frozen=True)
class Enqueue:
    """What to queue; `source`/`enqueued_by` say who or what asked for it."""

    pool_id: int
    member_id: int
    job_type: str
    params: dict[str, Any]
    source: str = "operator"
    idempotency_key: str | None = None
    timeout_s: int | None = None
    # Where agents reach this control plane (for agent.update); default: the configured URL.
    base_url: str | None = None


def bounded_output(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_OUTPUT:
        return text
    cut = len(text) - MAX_OUTPUT
    return f"[... {cut} characters cut]\n" + text[-MAX_OUTPUT:]


def job_view(job: Job, steps: list[Job] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": job.id,
        "pool_id": job.pool_id,
        "member_id": job.member_id,
        "parent_id": job.parent_id,
        "step_index": job.step_index,
        "type": job.type,
        "params": job.params,
        "state": job.state,
        "source": job.source,
        "enqueued_by": job.enqueued_by,
        "idempotency_key": job.idempotency_key,
        "timeout_s": job.timeout_s,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "summary": job.summary,
        "output": job.output,
        "result": job.result,
    }
    if job.type == RECIPE_JOB:
        view["steps"] = [
            {"index": i, "type": t, "state": _step_state(steps or [], i)}
            for i, t in enumerate(job.params.get("steps", []))
        ]
    return view


def _step_state(steps: list[Job], index: int) -> str:
    for step in steps:
        if step.step_index == index:
            return step.state
    return "waiting"


class JobService:
    def __init__(
        self,
        db: Database,
        live: LiveState,
        pending_ttl_s: int = 3600,
        public_url: str | None = None,
    ) -> None:
        self.db = db
        self.live = live
        self.pending_ttl = timedelta(seconds=pending_ttl_s)
        self.public_url = public_url
        # Job type -> the feature's hooks (see JobHooks); registered by AppState.build.
        self.hooks: dict[str, JobHooks] = {}

    # -- queueing -------------------------------------------------------------------------------

    def enqueue(self, principal: Principal, request: Enqueue) -> dict[str, Any]:
        if request.source == "operator":
            principal.require("operator")
        params = request.params
        if request.job_type == "agent.update":
            params = self._agent_update_params(request)
        if request.job_type in POOL_PARAMS:
            with self.db.session() as s:
                pool = lookup.pool(s, request.pool_id)
                params = POOL_PARAMS[request.job_type](s.get(PoolDns, pool.id), params or {})
        params = catalogue.validate_params(request.job_type, params)
        timeout = request.timeout_s or catalogue.kind(request.job_type).timeout_s
        if not 5 <= timeout <= 86_400:
            raise ValidationError(f"timeout_s must be 5-86400 seconds, not {timeout}")
        try:
            with self.db.session() as s:
                pool, member = lookup.pool_member(s, request.pool_id, request.member_id)
                existing = self._by_key(s, member.id, request.idempotency_key)
                if existing is not None:
                    return job_view(existing, self._steps(s, existing))
                self._check_host(pool, member, request.job_type)
                job = self._add(
                    s,
                    principal,
                    pool,
                    member,
                    request.job_type,
                    params,
                    timeout,
                    request.source,
                    request.idempotency_key,
                )
                return job_view(job)
        except IntegrityError:
            # Two callers raced with the same idempotency key: the first one's job stands.
            with self.db.session() as s:
                found = self._by_key(s, request.member_id, request.idempotency_key)
                if found is None:
                    raise
                return job_view(found)
        finally:
            self._hint(request.member_id)

    def start_recipe(
        self,
        principal: Principal,
        pool_id: int,
        member_id: int,
        recipe_id: str,
        action: str,
        idempotency_key: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        principal.require("operator")
        found = recipes.recipe(recipe_id)
        if not (found.apply_steps if action == "apply" else found.disable_steps):
            raise ValidationError(f"recipe {recipe_id!r} has no {action} action")
        with self.db.session() as s:
            pool, _ = lookup.pool_member(s, pool_id, member_id)
            # A pool-dependent recipe builds its steps' params from the pool (or says why not).
            steps = found.steps(s, pool, action, options or {})
        return self.start_sequence(
            principal,
            pool_id,
            member_id,
            recipe_id,
            steps,
            action=action,
            idempotency_key=idempotency_key,
        )

    def start_sequence(
        self,
        principal: Principal,
        pool_id: int,
        member_id: int,
        name: str,
        steps: list[tuple[str, dict[str, Any]]],
        *,
        action: str = "apply",
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Queue jobs that run one after the other (a recipe, or provisioning a standby): one
        parent job (type `recipe`) whose steps are ordinary jobs, each queued when the one
        before it completed; the first failure ends the sequence."""
        principal.require("operator")
        if not steps:
            raise ValidationError(f"{name} has no steps")
        checked = [(t, catalogue.validate_params(t, p)) for t, p in steps]
        with self.db.session() as s:
            pool, member = lookup.pool_member(s, pool_id, member_id)
            existing = self._by_key(s, member.id, idempotency_key)
            if existing is not None:
                return job_view(existing, self._steps(s, existing))
            for step, _ in checked:
                self._check_host(pool, member, step)
            total = sum(catalogue.kind(step).timeout_s for step, _ in checked)
            params: dict[str, Any] = {
                "recipe": name,
                "action": action,
                "steps": [step for step, _ in checked],
            }
            if any(p for _, p in checked):
                params["step_params"] = [p for _, p in checked]
            parent = self._add(
                s,
                principal,
                pool,
                member,
                RECIPE_JOB,
                params,
                total,
                "operator",
                idempotency_key,
            )
            parent.state = JobState.RUNNING
            parent.started_at = utcnow()
            first = self._add_step(s, parent, 0)
            view = job_view(parent, [first])
        self._hint(member_id)
        return view

    # -- reading --------------------------------------------------------------------------------

    def list_jobs(
        self,
        principal: Principal,
        pool_id: int,
        member_id: int | None = None,
        state: str | None = None,
        job_type: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        principal.require("viewer")
        if state is not None and state not in set(JobState):
            raise ValidationError(f"state must be one of {', '.join(JobState)}, not {state!r}")
        with self.db.session() as s:
            query = select(Job).where(Job.pool_id == pool_id)
            if member_id is None:
                lookup.pool(s, pool_id)
            else:
                lookup.pool_member(s, pool_id, member_id)
                query = query.where(Job.member_id == member_id)
            if state is not None:
                query = query.where(Job.state == state)
            if job_type is not None:
                query = query.where(Job.type == job_type)
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = list(s.scalars(query.order_by(Job.id.desc()).limit(limit).offset(offset)))
            return [job_view(j, self._steps(s, j)) for j in rows], total

    def get(self, principal: Principal, job_id: int) -> dict[str, Any]:
        principal.require("viewer")
        with self.db.session() as s:
            job = self._job(s, job_id)
            return job_view(job, self._steps(s, job))

    def cancel(self, principal: Principal, job_id: int) -> dict[str, Any]:
        principal.require("operator")
        with self.db.session() as s:
            job = self._job(s, job_id)
            if job.state in TERMINAL:
                raise Conflict(f"job {job_id} is already {job.state}")
            self._finish(s, job, JobState.CANCELLED, f"cancelled by {principal.actor}")
            for step in self._steps(s, job):
                if step.state not in TERMINAL:
                    self._finish(s, step, JobState.CANCELLED, "its recipe was cancelled")
            audit.record(s, principal, "job.cancel", f"job:{job.id}", {"type": job.type})
            if job.parent_id is not None:
                self._advance(s, job)
            return job_view(job, self._steps(s, job))

    def recipe_states(
        self, principal: Principal, pool_id: int, member_id: int
    ) -> list[dict[str, Any]]:
        """Each recipe with its completion state on the host and its latest run."""
        principal.require("viewer")
        with self.db.session() as s:
            pool, member = lookup.pool_member(s, pool_id, member_id)
            live = self.live.members.get(member_id)
            block = (live.haproxy if live else member.haproxy) or {}
            out = []
            recent = list(
                s.scalars(
                    select(Job)
                    .where(Job.member_id == member_id, Job.type == RECIPE_JOB)
                    .order_by(Job.id.desc())
                    .limit(50)
                )
            )
            for found in recipes.RECIPES.values():
                last = next((j for j in recent if j.params.get("recipe") == found.id), None)
                out.append(
                    {
                        "id": found.id,
                        "title": found.title,
                        "description": found.description,
                        # state_label, completed, note; unavailable: why it cannot run yet
                        **found.describe(s, pool, block),
                        "apply_steps": list(found.apply_steps),
                        "disable_steps": list(found.disable_steps),
                        "options": list(found.options),
                        "last_job": job_view(last, self._steps(s, last)) if last else None,
                    }
                )
            return out

    # -- the agent side -------------------------------------------------------------------------

    def claim(self, member_id: int, agent_running: list[int] | None = None) -> list[dict[str, Any]]:
        """Hand the member's oldest pending job to its agent, when none is running.

        `agent_running` is what the agent says it is running. A job the control plane thinks is
        running, claimed a while ago, that the agent does not name was lost (the agent
        restarted): it fails now instead of blocking the member's queue until its timeout.
        """
        with self.db.session() as s:
            busy = s.scalar(
                select(Job)
                .where(
                    Job.member_id == member_id,
                    Job.state == JobState.RUNNING,
                    Job.type != RECIPE_JOB,
                )
                .limit(1)
            )
            if busy is not None and not self._lost(busy, agent_running):
                return []
            if busy is not None:
                self._finish(
                    s,
                    busy,
                    JobState.FAILED,
                    "the agent is no longer running this job (it restarted?)",
                )
                if busy.parent_id is not None:
                    self._advance(s, busy)
            candidate = s.scalar(
                select(Job)
                .where(
                    Job.member_id == member_id,
                    Job.state == JobState.PENDING,
                    Job.type != RECIPE_JOB,
                )
                .order_by(Job.id)
                .limit(1)
            )
            if candidate is None:
                member = self.live.members.get(member_id)
                if member is not None:
                    member.jobs_hint = False
                return []
            # The state check in the WHERE makes the claim atomic: of two racing heartbeats,
            # one updates the row and the other sees no row changed.
            claimed = s.execute(
                update(Job)
                .where(Job.id == candidate.id, Job.state == JobState.PENDING)
                .values(state=JobState.RUNNING, started_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return []
            params = candidate.params
            hooks = self.hooks.get(candidate.type)
            if hooks is not None:
                try:
                    params = hooks.handout(s, candidate)
                except ServerCTLError as exc:
                    self._finish(s, candidate, JobState.FAILED, exc.message[:MAX_SUMMARY])
                    if candidate.parent_id is not None:
                        self._advance(s, candidate)
                    return []
            return [
                {
                    "id": candidate.id,
                    "type": candidate.type,
                    "params": params,
                    "timeout_s": candidate.timeout_s,
                }
            ]

    def complete(
        self,
        member_id: int,
        job_id: int,
        state: str,
        summary: str,
        output: str | None,
        result: dict[str, Any] | None,
    ) -> str:
        """Record an agent's result; a repeat of the same completion changes nothing.

        A job type with hooks has its result reviewed between two transactions (the review may
        do I/O); any other job is recorded in the one transaction that read it."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None or job.member_id != member_id or job.type == RECIPE_JOB:
                raise NotFound(f"no job {job_id} for this member")
            if job.state == state and job.state in TERMINAL:
                return job.state
            if job.state != JobState.RUNNING:
                raise Conflict(f"job {job_id} is {job.state}; its result is no longer wanted")
            hooks = self.hooks.get(job.type)
            if hooks is None:
                final = self._record(s, job, state, summary, output, result, None)
        if hooks is not None:
            state, summary = hooks.review(job_id, state, summary, result)
            with self.db.session() as s:
                job = s.get(Job, job_id)
                if job is None or job.state != JobState.RUNNING:
                    # Cancelled or timed out while the result was being reviewed.
                    return job.state if job is not None else JobState.CANCELLED
                final = self._record(s, job, state, summary, output, result, hooks)
            hooks.committed(job_id)
        self._hint(member_id)
        return final

    def _record(
        self,
        s: Session,
        job: Job,
        state: str,
        summary: str,
        output: str | None,
        result: dict[str, Any] | None,
        hooks: JobHooks | None,
    ) -> str:
        self._finish(s, job, JobState(state), summary[:MAX_SUMMARY], output, result)
        if hooks is not None:
            hooks.recorded(s, job)
        if job.parent_id is not None:
            self._advance(s, job)
        return job.state

    def reap(self) -> int:
        """Time out running jobs with no result and pending jobs nobody claimed."""
        now = utcnow()
        count = 0
        with self.db.session() as s:
            running = s.scalars(
                select(Job).where(Job.state == JobState.RUNNING, Job.type != RECIPE_JOB)
            )
            for job in list(running):
                assert job.started_at is not None
                limit = job.started_at + timedelta(seconds=job.timeout_s + COMPLETION_GRACE_S)
                if now > limit:
                    self._finish(
                        s,
                        job,
                        JobState.TIMED_OUT,
                        f"no result from the agent within {job.timeout_s} s",
                    )
                    count += 1
                    if job.parent_id is not None:
                        self._advance(s, job)
            stale = s.scalars(
                select(Job).where(
                    Job.state == JobState.PENDING, Job.created_at < now - self.pending_ttl
                )
            )
            for job in list(stale):
                self._finish(
                    s,
                    job,
                    JobState.TIMED_OUT,
                    "never claimed: the member's agent did not ask for work in time",
                )
                count += 1
                if job.parent_id is not None:
                    self._advance(s, job)
        return count

    def load_hints(self) -> None:
        """At start: members with queued or running work look for it on their next heartbeat."""
        with self.db.session() as s:
            for member_id in s.scalars(
                select(Job.member_id)
                .where(Job.state.in_([JobState.PENDING, JobState.RUNNING]))
                .distinct()
            ):
                self._hint(member_id)

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _lost(job: Job, agent_running: list[int] | None) -> bool:
        if agent_running is None or job.id in agent_running or job.started_at is None:
            return False
        return utcnow() - job.started_at > timedelta(seconds=LOST_JOB_GRACE_S)

    def _agent_update_params(self, request: Enqueue) -> dict[str, Any]:
        if request.params:
            raise ValidationError(
                "agent.update takes no params: it installs this control plane's own agent zipapp"
            )
        base = request.base_url or self.public_url
        if not base:
            raise ValidationError(
                "agent.update needs SERVERCTL_PUBLIC_URL set, so agents know "
                "where to download the zipapp from"
            )
        bundle = build_zipapp()
        return {"url": f"{base.rstrip('/')}/agent/balctl.pyz", "sha256": bundle.sha256}

    def _hint(self, member_id: int) -> None:
        member = self.live.members.get(member_id)
        if member is not None:
            member.jobs_hint = True

    def _add(
        self,
        s: Session,
        principal: Principal,
        pool: Pool,
        member: Member,
        job_type: str,
        params: dict[str, Any],
        timeout_s: int,
        source: str,
        idempotency_key: str | None,
    ) -> Job:
        job = Job(
            pool_id=pool.id,
            member_id=member.id,
            type=job_type,
            params=params,
            state=JobState.PENDING,
            source=source,
            enqueued_by=principal.actor,
            idempotency_key=idempotency_key,
            timeout_s=timeout_s,
        )
        s.add(job)
        s.flush()
        audit.record(
            s,
            principal,
            "job.enqueue",
            f"job:{job.id}",
            {"type": job_type, "member": member.hostname, "source": source},
        )
        return job

    def _add_step(self, s: Session, parent: Job, index: int) -> Job:
        step_type = parent.params["steps"][index]
        step_params = parent.params.get("step_params") or [{}] * len(parent.params["steps"])
        step = Job(
            pool_id=parent.pool_id,
            member_id=parent.member_id,
            parent_id=parent.id,
            step_index=index,
            type=step_type,
            params=dict(step_params[index]),
            state=JobState.PENDING,
            source="recipe",
            enqueued_by=f"recipe:{parent.params['recipe']}",
            timeout_s=catalogue.kind(step_type).timeout_s,
        )
        s.add(step)
        s.flush()
        return step

    def _advance(self, s: Session, step: Job) -> None:
        """A recipe step ended: queue the next one, or end the recipe with the step's result."""
        parent = s.get(Job, step.parent_id)
        if parent is None or parent.state in TERMINAL:
            return
        steps: list[str] = parent.params["steps"]
        index = step.step_index or 0
        label = f"step {index + 1}/{len(steps)} ({step.type})"
        if step.state == JobState.COMPLETED and index + 1 < len(steps):
            self._add_step(s, parent, index + 1)
            self._hint(parent.member_id)
        elif step.state == JobState.COMPLETED:
            self._finish(
                s,
                parent,
                JobState.COMPLETED,
                # The last step's own summary says what was done ("installed ...", "kept ...").
                f"{len(steps)} of {len(steps)} steps completed: {step.summary}"
                if len(steps) > 1
                else f"completed: {step.summary}",
                step.output,
                step.result,
            )
        else:
            self._finish(
                s,
                parent,
                JobState.FAILED,
                f"{label} {step.state}: {step.summary}",
                step.output,
                step.result,
            )

    @staticmethod
    def _finish(
        s: Session,
        job: Job,
        state: JobState,
        summary: str,
        output: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> None:
        job.state = state
        job.finished_at = utcnow()
        job.summary = summary
        if output is not None:
            job.output = bounded_output(output)
        if result is not None:
            job.result = result
        s.flush()

    @staticmethod
    def _steps(s: Session, job: Job) -> list[Job]:
        if job.type != RECIPE_JOB:
            return []
        return list(s.scalars(select(Job).where(Job.parent_id == job.id).order_by(Job.id)))

    @staticmethod
    def _by_key(s: Session, member_id: int, key: str | None) -> Job | None:
        if key is None:
            return None
        return s.scalar(select(Job).where(Job.member_id == member_id, Job.idempotency_key == key))

    @staticmethod
    def _job(s: Session, job_id: int) -> Job:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job with id {job_id}")
        return job

    def _check_host(self, pool: Pool, member: Member, job_type: str) -> None:
        if pool.template != "linux" or not catalogue.kind(job_type).needs_haproxy:
            return
        live = self.live.members.get(member.id)
        block = (live.haproxy if live else member.haproxy) or {}
        if not block.get("monitored"):
            raise Conflict(
                f"{job_type} needs HAProxy, and {member.hostname} in Generic Linux pool "
                f"{pool.name!r} does not report HAProxy on the host (install it first)"
            )
