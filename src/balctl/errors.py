"""The agent's exceptions. Each message says what went wrong and what to do about it.

    AgentError                 root: anything balctl raises on purpose
     +-- ConfigError           bad input or local state (arguments, agent.env, files); exit 1
     +-- EnrolError            the control plane refused the enrolment (401/403/4xx); exit 2
     +-- TransportError        the control plane could not be reached or answered 5xx; exit 3
     +-- RuntimeApiError       HAProxy's admin socket is missing, silent or answered an error
     +-- JobError              a job cannot go on; its message becomes the job's summary
          +-- ParamError       a job's parameters are not what its type accepts

The CLI maps each branch to one exit code; library code raises and never exits. The job runner
turns every error of a job (these and unexpected ones) into a `failed` completion instead.
"""

from __future__ import annotations

from typing import Optional


class AgentError(Exception):
    """Root of every error balctl raises on purpose."""


class ConfigError(AgentError):
    """Something local is wrong: an argument, agent.env, its permissions, a CA file."""


class TransportError(AgentError):
    """The request did not get an answer the agent can use (network, TLS, 5xx)."""


class EnrolError(AgentError):
    """The control plane answered the enrolment with a refusal; `status` is its HTTP status."""

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status


class RuntimeApiError(AgentError):
    """HAProxy's admin socket could not be used: absent, refused, timed out, or said no."""


class JobError(AgentError):
    """A job cannot go on. The message is the job's one-line summary, so it says what to do."""


class ParamError(JobError):
    """A job's parameters do not match what its type accepts."""
