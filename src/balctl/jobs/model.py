"""The shapes the job runner, the handlers and the completion queue share."""

from __future__ import annotations

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


class Job(NamedTuple):
    """One job as the heartbeat answer hands it out (already claimed by the server)."""

    id: int
    type: str
    params: Any  # checked by the job type's parameter check, not here
    timeout_s: Optional[int] = None


def _no_restart() -> None:
    pass


class JobContext:
    """What a handler may use besides its parameters."""

    __slots__ = ("job_id", "cfg", "paths", "deadline", "request_restart")

    def __init__(
        self,
        job_id: int,
        cfg: AgentConfig,
        paths: HostPaths,
        deadline: Deadline,
        # Ask for the agent to restart once this job's completion has been delivered (agent.update).
        request_restart: Callable[[], None] = _no_restart,
    ) -> None:
        self.job_id = job_id
        self.cfg = cfg
        self.paths = paths
        self.deadline = deadline
        self.request_restart = request_restart


class Completion(NamedTuple):
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
