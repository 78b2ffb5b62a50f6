"""Domain errors of the control plane.

    ServerCTLError
    ├── ValidationError        input that breaks a rule (→ 422)
    ├── NotFound               no such pool, member, user or token (→ 404)
    ├── Conflict               a duplicate, or a change the current state forbids (→ 409)
    ├── AuthError              missing or wrong credentials (→ 401)
    │   └── AgentAuthError     an agent request refused; carries the status and the reason
    ├── PermissionDenied       authenticated, but the role does not allow it (→ 403)
    ├── TooManyLogins(retry_after)  too many failed logins from this source (→ 429)
    ├── ProviderError          a DNS provider failed (→ 502)
    │   ├── ProviderAuthError  bad credentials or no permission
    │   ├── ZoneNotFound       the zone is not on the provider (or not visible to the token)
    │   ├── ProviderUnreachable  no connection, timeout or TLS failure
    │   ├── RateLimited(retry_after)
    │   └── NotSupported       the provider cannot do this (e.g. proxied records) (→ 422)
    ├── MailError              the SMTP server could not be reached or refused the mail (→ 502)
    ├── StorageError           a backup store failed (issue: backups)
    └── JobError               a job could not be queued or run (issue: jobs)

The rules raise these; one exception handler (`serverctl.api.errors`) maps them to HTTP answers.
Messages say what was wrong and what to do: they reach operators verbatim.
"""

from __future__ import annotations


class ServerCTLError(Exception):
    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(ServerCTLError):
    status_code = 422


class NotFound(ServerCTLError):
    status_code = 404


class Conflict(ServerCTLError):
    status_code = 409


class AuthError(ServerCTLError):
    status_code = 401


class AgentAuthError(AuthError):
    """An agent request refused; `status_code` is 401, 403 or 4xx as the check decides."""

    def __init__(self, message: str, status_code: int = 401, reason: str = "token") -> None:
        super().__init__(message)
        self.status_code = status_code
        # A short fixed word for counting refusals (the /metrics `reason` label): token,
        # revoked, source_ip, payload, too_large, hostname.
        self.reason = reason


class PermissionDenied(ServerCTLError):
    status_code = 403


class TooManyLogins(ServerCTLError):
    """Password logins from this source are paused for `retry_after` seconds."""

    status_code = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderError(ServerCTLError):
    status_code = 502


class ProviderAuthError(ProviderError):
    pass


class ZoneNotFound(ProviderError):
    pass


class ProviderUnreachable(ProviderError):
    pass


class RateLimited(ProviderError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotSupported(ProviderError):
    status_code = 422


class MailError(ServerCTLError):
    status_code = 502


class StorageError(ServerCTLError):
    status_code = 502


class JobError(ServerCTLError):
    status_code = 409
