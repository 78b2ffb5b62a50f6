"""The shapes the job runner, the handlers and the completion queue share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, NamedTuple, Optional

from balctl.bounds import bound_output, one_line
from balctl.config import AgentConfig
from balctl.paths import HostPaths
from balctl.proc import Deadline

COMPLETED = "completed"
FAILED = "failed"


class Outcome(NamedTuple):
    """What a handler returns: (ok, summary, output, result)."""

    ok: bool
    summary: str
    output: str = ""
    result: Optional[Dict[str, Any]] = None


@dataclass(frozen=True)
class Job:
    """One job as the heartbeat answer hands it out (already claimed by the server)."""

    id: int
    type: str
    params: Any  # checked by the job type's parameter check, not here
    timeout_s: Optional[int] = None


@dataclass
class JobContext:
    """What a handler may use besides its parameters."""

    job_id: int
    cfg: AgentConfig
    paths: HostPaths
    deadline: Deadline
    # Ask for the agent to restart once this job's completion has been delivered (agent.update).
    request_restart: Callable[[], None] = field(default=lambda: None, repr=False)


@dataclass(frozen=True)
class Completion:
    """A finished job, as POST /api/agents/jobs/complete wants it (bounded at construction)."""

    job_id: int
    state: str
    summary: str
    output: str
    result: Optional[Dict[str, Any]] = None

    @classmethod
    def from_outcome(cls, job_id: int, outcome: Outcome) -> Completion:
        return cls(
            job_id=job_id,
            state=COMPLETED if outcome.ok else FAILED,
            summary=one_line(outcome.summary) or ("done" if outcome.ok else "failed"),
            output=bound_output(outcome.output),
            result=outcome.result,
        )

    def body(self, hostname: str) -> Dict[str, Any]:
        body: Dict[str, Any] = {
            "hostname": hostname,
            "job_id": self.job_id,
            "state": self.state,
            "summary": self.summary,
            "output": self.output,
        }
        if self.result is not None:
            body["result"] = self.result
        return body
