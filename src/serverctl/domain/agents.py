"""Agent requests: the security checks every one must pass, and what a heartbeat changes.

Checks run in the order ARCHITECTURE.md gives: the bearer secret (401), the source address
(403), the body (4xx), the hostname (401). A refusal that can be tied to a member is recorded
so the operator sees it on the member card. Nothing here writes to the database: heartbeats
land in the live state and reach the database through the flusher.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from serverctl.db.types import utcnow
from serverctl.domain import secrets
from serverctl.domain.heartbeat import (
    EnrolPayload,
    HeartbeatPayload,
    JobCompletion,
    parse_completion,
    parse_enrolment,
    parse_heartbeat,
)
from serverctl.domain.live import HeartbeatChange, LiveState, MemberLive, Rejection
from serverctl.errors import AgentAuthError, ValidationError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentRequest:
    authorization: str | None
    source_ip: str
    body: bytes


@dataclass(frozen=True)
class Accepted:
    member: MemberLive
    payload: HeartbeatPayload
    change: HeartbeatChange
    # Dynamic DNS: the member called from a new address, now let in (the old address first).
    followed_from: str | None = None
    followed: bool = False


class AgentGate:
    def __init__(self, live: LiveState) -> None:
        self.live = live

    def heartbeat(self, request: AgentRequest) -> Accepted:
        member = self._authenticate(request, may_follow=True)
        payload: HeartbeatPayload = self._checked(member, request, parse_heartbeat)
        self._check_hostname(member, request, payload.hostname)
        followed_from = member.ip
        followed = not member.allows(request.source_ip)
        if followed:
            # Only a DDNS pool's member gets here (see _authenticate), and only when it declares
            # the very address it calls from: the secret and hostname have been checked.
            if payload.ip != request.source_ip:
                self._reject(
                    member.member_id, 403, self._ip_refusal(member, request), request, "source_ip"
                )
            self.live.follow_address(member, request.source_ip)
        change = self.live.record_heartbeat(
            member,
            now=utcnow(),
            ip=payload.ip,
            version=payload.version,
            haproxy=payload.haproxy.as_dict(),
        )
        return Accepted(member, payload, change, followed_from, followed)

    def completion(self, request: AgentRequest) -> tuple[MemberLive, JobCompletion]:
        member = self._authenticate(request)
        payload = self._checked(member, request, parse_completion)
        self._check_hostname(member, request, payload.hostname)
        return member, payload

    def transfer(self, request: AgentRequest, hostname: str | None) -> MemberLive:
        """A backup upload or download: the body is the archive, so the hostname comes in the
        X-Balctl-Hostname header; the checks are the same as for any agent request."""
        member = self._authenticate(request)
        if not hostname:
            self._reject(
                member.member_id, 401, "missing X-Balctl-Hostname header", request, "hostname"
            )
        self._check_hostname(member, request, hostname or "")
        return member

    def enrol(self, request: AgentRequest) -> tuple[MemberLive, EnrolPayload]:
        member = self._authenticate(request)
        payload = self._checked(member, request, parse_enrolment)
        self._check_hostname(member, request, payload.hostname)
        return member, payload

    # -- the checks -----------------------------------------------------------------------------

    def _authenticate(self, request: AgentRequest, may_follow: bool = False) -> MemberLive:
        secret = _bearer(request.authorization)
        if secret is None:
            raise AgentAuthError("missing bearer enrolment secret (Authorization: Bearer <key>)")
        digest = secrets.hash_secret(secret)
        member_id = self.live.by_secret.get(digest)
        member = self.live.members.get(member_id) if member_id is not None else None
        if member is None:
            revoked_for = self.live.revoked.get(digest)
            if revoked_for is not None:
                self._reject(revoked_for, 401, "enrolment secret was revoked", request, "revoked")
            raise AgentAuthError("unknown or revoked enrolment secret")
        if not member.allows(request.source_ip):
            if may_follow and member.pool_id in self.live.ddns_pools:
                return member  # decided in heartbeat(), once the body is checked
            self._reject(
                member.member_id, 403, self._ip_refusal(member, request), request, "source_ip"
            )
        return member

    @staticmethod
    def _ip_refusal(member: MemberLive, request: AgentRequest) -> str:
        return f"source IP {request.source_ip} is not allowed for member {member.hostname}"

    def _checked(self, member: MemberLive, request: AgentRequest, parse: Any) -> Any:
        try:
            return parse(request.body)
        except ValidationError as exc:
            reason = "too_large" if exc.status_code == 413 else "payload"
            self._reject(member.member_id, exc.status_code, exc.message, request, reason)

    def _check_hostname(self, member: MemberLive, request: AgentRequest, hostname: str) -> None:
        if hostname.rstrip(".").lower() != member.hostname:
            self._reject(
                member.member_id,
                401,
                f"hostname {hostname[:253]!r} does not match the enrolled hostname "
                f"{member.hostname!r}",
                request,
                "hostname",
            )

    def _reject(
        self, member_id: int, status: int, reason: str, request: AgentRequest, code: str
    ) -> None:
        self.live.record_rejection(
            member_id, Rejection(utcnow(), status, reason, request.source_ip)
        )
        log.info("agent request refused (%s): %s", status, reason)
        raise AgentAuthError(reason, status, code)


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
