"""The fixed catalogue of jobs an agent runs, with the parameters each one takes.

The agent checks parameters again on its side; here they are checked before anything is queued,
so an operator hears at once (422) what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from serverctl.errors import ValidationError


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT})

# HAProxy proxy and server names as the runtime API takes them.
HaproxyName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerStateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: HaproxyName
    server: HaproxyName
    state: Literal["ready", "drain", "maint"]


class AgentUpdateParams(BaseModel):
    """Filled in by the control plane (its own zipapp's URL and SHA-256), never by operators."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048)
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class RestoreParams(BaseModel):
    """What an operator queues; the control plane adds the download URL, the archive's SHA-256
    and the manifest when the agent claims the job (domain/backups.py)."""

    model_config = ConfigDict(extra="forbid")

    snapshot_id: int = Field(ge=1, strict=True)


class AgentLogsParams(BaseModel):
    """How much of the agent's log to send back (the support bundle's `agent.logs`)."""

    model_config = ConfigDict(extra="forbid")

    lines: int = Field(default=500, ge=1, le=5000, strict=True, description="newest lines")
    since_minutes: int | None = Field(
        default=None, ge=1, le=10080, strict=True, description="only lines this recent"
    )


_CERT_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _cert_name(value: str) -> str:
    """A name the agent puts in a CSR (balctl.tls_certs.dns_name_problem): lowercase, at least
    two labels, no wildcard, no trailing dot, not an IP address."""
    if value.startswith("*."):
        raise ValueError(f"{value[:80]!r}: wildcard names are not supported")
    if value != value.lower():
        raise ValueError(f"{value[:80]!r} must be lowercase")
    labels = value.split(".")
    if len(labels) < 2 or not all(_CERT_LABEL.match(label) for label in labels):
        raise ValueError(
            f"{value[:80]!r} is not a DNS name: use lowercase letters, digits and hyphens in at "
            "least two dot-separated labels, with no trailing dot"
        )
    if labels[-1].isdigit():
        raise ValueError(f"{value[:80]!r} looks like an IP address, not a DNS name")
    return value


CertName = Annotated[
    str, StringConstraints(min_length=1, max_length=253), AfterValidator(_cert_name)
]
MAX_CERT_NAMES = 10


class TlsIssueParams(BaseModel):
    """tls.acme_issue / tls.acme_renew_force, as the agent checks them (balctl.jobs.tls_jobs):
    `names` starts with `fqdn`, the PEM's file name."""

    model_config = ConfigDict(extra="forbid")

    fqdn: CertName
    names: list[CertName] = Field(min_length=1, max_length=MAX_CERT_NAMES)
    force: bool = Field(default=False, strict=True)

    @model_validator(mode="after")
    def _names(self) -> TlsIssueParams:
        if len(set(self.names)) != len(self.names):
            raise ValueError("names must not repeat a name")
        if self.names[0] != self.fqdn:
            raise ValueError(f"names must start with the fqdn {self.fqdn!r}")
        return self


@dataclass(frozen=True)
class JobKind:
    name: str
    title: str
    params: type[BaseModel]
    timeout_s: int
    # Needs HAProxy on the host: refused on a Generic Linux pool whose agent reports none.
    needs_haproxy: bool


CATALOGUE: dict[str, JobKind] = {
    kind.name: kind
    for kind in (
        JobKind("haproxy.install", "Install HAProxy", NoParams, 900, needs_haproxy=False),
        JobKind("haproxy.validate", "Validate configuration", NoParams, 60, needs_haproxy=True),
        JobKind("haproxy.reload", "Reload HAProxy", NoParams, 120, needs_haproxy=True),
        JobKind(
            "haproxy.server_state",
            "Set backend server state",
            ServerStateParams,
            60,
            needs_haproxy=True,
        ),
        JobKind(
            "haproxy.admin_socket.enable",
            "Enable admin stats socket",
            NoParams,
            120,
            needs_haproxy=True,
        ),
        JobKind(
            "haproxy.admin_socket.disable",
            "Disable admin stats socket",
            NoParams,
            120,
            needs_haproxy=True,
        ),
        JobKind("agent.update", "Update the agent", AgentUpdateParams, 300, needs_haproxy=False),
        # Backups: the upload URL is added when the agent claims the job (domain/backups.py).
        JobKind("haproxy.backup", "Back up HAProxy files", NoParams, 600, needs_haproxy=True),
        JobKind("backup.ufw", "Back up UFW rules", NoParams, 300, needs_haproxy=False),
        JobKind("haproxy.restore", "Restore a backup", RestoreParams, 900, needs_haproxy=False),
        # Read by the support bundle (domain/support_bundle.py); redacted on the host.
        JobKind("agent.logs", "Send the agent's log", AgentLogsParams, 60, needs_haproxy=False),
        # The control plane runs the ACME order between them (domain/tls_orders.py).
        JobKind(
            "tls.acme_issue", "Issue a TLS certificate", TlsIssueParams, 900, needs_haproxy=True
        ),
        JobKind(
            "tls.acme_renew_force",
            "Renew the TLS certificate now",
            TlsIssueParams,
            900,
            needs_haproxy=True,
        ),
    )
}

# A recipe's own job: never handed to an agent; its steps are ordinary jobs.
RECIPE_JOB = "recipe"


def kind(job_type: str) -> JobKind:
    found = CATALOGUE.get(job_type)
    if found is None:
        raise ValidationError(
            f"unknown job type {job_type!r}; the catalogue has: {', '.join(sorted(CATALOGUE))}"
        )
    return found


def validate_params(job_type: str, params: Any) -> dict[str, Any]:
    job_kind = kind(job_type)
    if not isinstance(params, dict):
        raise ValidationError(f"params of {job_type} must be a JSON object")
    try:
        checked = job_kind.params.model_validate(params)
    except PydanticValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in exc.errors()
        )
        raise ValidationError(f"bad params for {job_type}: {problems}") from None
    return checked.model_dump()
