"""The fixed catalogue of job types: name -> (parameter check, handler, default time limit).

Nothing outside this table can run: the control plane names a type, the agent looks it up here.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, NamedTuple

from balctl.jobs import (
    admin_socket,
    agent_logs,
    backup_jobs,
    haproxy_jobs,
    install,
    restore_job,
    tls_jobs,
    update,
)
from balctl.jobs.model import JobContext, Outcome
from balctl.jobs.params import no_params

Check = Callable[[Any], Dict[str, Any]]
Handler = Callable[[Dict[str, Any], JobContext], Outcome]


class JobType(NamedTuple):
    name: str
    check: Check
    run: Handler
    # Used when the job carries no usable timeout_s.
    default_timeout_s: float


def _entries(*types: JobType) -> Mapping[str, JobType]:
    return {job_type.name: job_type for job_type in types}


CATALOGUE: Mapping[str, JobType] = _entries(
    JobType("haproxy.install", no_params, install.run_job, install.INSTALL_TIMEOUT_S),
    JobType("haproxy.validate", no_params, haproxy_jobs.validate, 120.0),
    JobType("haproxy.reload", no_params, haproxy_jobs.reload, 180.0),
    JobType(
        "haproxy.server_state", haproxy_jobs.check_server_state, haproxy_jobs.server_state, 60.0
    ),
    JobType("haproxy.admin_socket.enable", no_params, admin_socket.enable, 300.0),
    JobType("haproxy.admin_socket.disable", no_params, admin_socket.disable, 300.0),
    JobType("agent.update", update.check, update.run_job, 300.0),
    JobType("haproxy.backup", backup_jobs.check, backup_jobs.haproxy_backup, 600.0),
    JobType("backup.ufw", backup_jobs.check, backup_jobs.ufw_backup, 300.0),
    JobType("haproxy.restore", restore_job.check, restore_job.restore, 900.0),
    JobType("agent.logs", agent_logs.check, agent_logs.run_job, 60.0),
    JobType("tls.acme_issue", tls_jobs.check, tls_jobs.issue, tls_jobs.DEFAULT_TIMEOUT_S),
    JobType(
        "tls.acme_renew_force", tls_jobs.check_forced, tls_jobs.issue, tls_jobs.DEFAULT_TIMEOUT_S
    ),
)
