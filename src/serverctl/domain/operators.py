"""Operator accounts, API tokens and web sessions."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from serverctl.db.models import ApiToken, User, WebSession
from serverctl.db.session import Database
from serverctl.db.types import utcnow
from serverctl.domain import audit, secrets, validation
from serverctl.domain.login_throttle import LoginThrottle
from serverctl.domain.principal import SYSTEM, Principal
from serverctl.errors import AuthError, Conflict, NotFound, TooManyLogins, ValidationError

MIN_PASSWORD_LENGTH = 10
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebLogin:
    session_id: str
    csrf_token: str
    principal: Principal


def _user_view(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "role": user.role,
        "created_at": user.created_at,
        "disabled": user.disabled,
    }


def _token_view(token: ApiToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "role": token.role,
        "created_at": token.created_at,
        "created_by": token.created_by,
        "revoked_at": token.revoked_at,
    }


class OperatorService:
    def __init__(
        self,
        db: Database,
        session_max_age_s: int = 12 * 3600,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.db = db
        self.session_max_age = timedelta(seconds=session_max_age_s)
        self.throttle = throttle or LoginThrottle()

    # -- users ----------------------------------------------------------------------------------

    def has_users(self) -> bool:
        with self.db.session() as s:
            return (s.scalar(select(func.count()).select_from(User)) or 0) > 0

    def create_user(
        self, principal: Principal, name: str, role: str, password: str | None = None
    ) -> tuple[dict[str, Any], str]:
        """Create an account; returns it with its password (generated when none is given)."""
        principal.require("admin")
        name = validation.user_name(name)
        role = validation.role(role)
        if password is None:
            password = secrets.new_password()
        elif len(password) < MIN_PASSWORD_LENGTH:
            raise ValidationError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
        with self.db.session() as s:
            if s.scalar(select(User.id).where(User.name == name)) is not None:
                raise Conflict(f"a user named {name!r} already exists")
            user = User(name=name, role=role, password_hash=secrets.hash_password(password))
            s.add(user)
            s.flush()
            audit.record(
                s, principal, "user.create", f"user:{user.id}", {"name": name, "role": role}
            )
            return _user_view(user), password

    def create_first_admin(self) -> str | None:
        """On first start with no operator, make `admin` and return its password (else None)."""
        if self.has_users():
            return None
        _, password = self.create_user(SYSTEM, "admin", "admin")
        return password

    def list_users(self, principal: Principal) -> list[dict[str, Any]]:
        principal.require("admin")
        with self.db.session() as s:
            return [_user_view(u) for u in s.scalars(select(User).order_by(User.name))]

    def delete_user(self, principal: Principal, user_id: int) -> None:
        principal.require("admin")
        with self.db.session() as s:
            user = s.get(User, user_id)
            if user is None:
                raise NotFound(f"no user with id {user_id}")
            if principal.kind == "user" and principal.user_id == user_id:
                raise Conflict("you cannot delete your own account")
            admins = s.scalar(select(func.count()).select_from(User).where(User.role == "admin"))
            if user.role == "admin" and (admins or 0) <= 1:
                raise Conflict("cannot delete the last admin account")
            audit.record(s, principal, "user.delete", f"user:{user.id}", {"name": user.name})
            s.execute(delete(WebSession).where(WebSession.user_id == user.id))
            s.delete(user)

    # -- API tokens -----------------------------------------------------------------------------

    def create_token(
        self, principal: Principal, name: str, role: str
    ) -> tuple[dict[str, Any], str]:
        principal.require("admin")
        name = name.strip()
        if not 1 <= len(name) <= 64:
            raise ValidationError("token name must have 1-64 characters")
        role = validation.role(role)
        token = secrets.new_api_token()
        with self.db.session() as s:
            row = ApiToken(
                name=name,
                role=role,
                token_hash=secrets.hash_secret(token),
                created_by=principal.actor,
            )
            s.add(row)
            s.flush()
            audit.record(
                s, principal, "token.create", f"token:{row.id}", {"name": name, "role": role}
            )
            return _token_view(row), token

    def list_tokens(self, principal: Principal) -> list[dict[str, Any]]:
        principal.require("admin")
        with self.db.session() as s:
            return [_token_view(t) for t in s.scalars(select(ApiToken).order_by(ApiToken.id))]

    def revoke_token(self, principal: Principal, token_id: int) -> None:
        principal.require("admin")
        with self.db.session() as s:
            row = s.get(ApiToken, token_id)
            if row is None:
                raise NotFound(f"no API token with id {token_id}")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                audit.record(s, principal, "token.revoke", f"token:{row.id}", {"name": row.name})

    def authenticate_token(self, token: str, source_ip: str | None) -> Principal:
        # Looked up in the database on every call, so a token made by `serverctl tokens create`
        # in another process is accepted at once and a revoked one refused at once.
        with self.db.session() as s:
            row = s.scalar(
                select(ApiToken).where(ApiToken.token_hash == secrets.hash_secret(token))
            )
            if row is None or row.revoked_at is not None:
                raise AuthError("unknown or revoked API token")
            return Principal(kind="token", name=row.name, role=row.role, source_ip=source_ip)

    def audit_log(
        self, principal: Principal, limit: int = 100, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        principal.require("admin")
        with self.db.session() as s:
            rows, total = audit.recent(s, limit, offset)
            return [
                {
                    "id": r.id,
                    "at": r.at,
                    "actor": r.actor,
                    "action": r.action,
                    "target": r.target,
                    "detail": r.detail,
                    "source_ip": r.source_ip,
                }
                for r in rows
            ], total

    # -- web sessions ---------------------------------------------------------------------------

    def login(self, name: str, password: str, source_ip: str | None) -> WebLogin:
        """Check a password login: throttled per source (429) before the password is looked at;
        a failure is counted and audited (never with the password), a success opens a session."""
        wait = self.throttle.retry_after(source_ip, name)
        if wait is not None:
            raise TooManyLogins(
                f"too many failed logins from your address: try again in {_spell(wait)}", wait
            )
        with self.db.session() as s:
            user = s.scalar(select(User).where(User.name == name))
            valid = secrets.verify_password(
                user.password_hash if user else secrets.DUMMY_PASSWORD_HASH, password
            )
            if user is None or not valid or user.disabled:
                _audit_failed_login(s, user, valid, source_ip)
                login = None
            else:
                login = self._open_session(s, user, source_ip)
        # Raised outside the transaction: the audit entry of a failure is committed.
        if login is None:
            self.throttle.failed(source_ip, name)
            paused = self.throttle.retry_after(source_ip, name)
            if paused is not None:
                # Once per pause; the typed name is left out (it may be a mistyped password).
                log.warning("password logins from %s paused for %d s", source_ip, paused)
            raise AuthError("wrong user name or password")
        self.throttle.succeeded(source_ip, name)
        return login

    def _open_session(self, s: Session, user: User, source_ip: str | None) -> WebLogin:
        session_id = secrets.random_string(43)
        csrf = secrets.random_string(43)
        s.add(
            WebSession(
                session_hash=secrets.hash_secret(session_id),
                csrf_token=csrf,
                user_id=user.id,
                expires_at=utcnow() + self.session_max_age,
            )
        )
        principal = Principal("user", user.name, user.role, source_ip, user.id)
        audit.record(s, principal, "session.login", f"user:{user.id}")
        return WebLogin(session_id, csrf, principal)

    def session(self, session_id: str, source_ip: str | None) -> tuple[Principal, str] | None:
        """The principal and CSRF token of a live session, or None."""
        with self.db.session() as s:
            row = s.scalar(
                select(WebSession).where(WebSession.session_hash == secrets.hash_secret(session_id))
            )
            if row is None or row.expires_at < utcnow():
                return None
            user = s.get(User, row.user_id)
            if user is None or user.disabled:
                return None
            return Principal("user", user.name, user.role, source_ip, user.id), row.csrf_token

    def logout(self, session_id: str, principal: Principal) -> None:
        with self.db.session() as s:
            s.execute(
                delete(WebSession).where(WebSession.session_hash == secrets.hash_secret(session_id))
            )
            audit.record(s, principal, "session.logout", f"user:{principal.user_id}")
            s.execute(delete(WebSession).where(WebSession.expires_at < utcnow()))


# A failed login has no operator behind it yet: the audit names the form and the address.
_LOGIN_FORM = Principal(kind="anonymous", name="login-form", role="viewer")


def _audit_failed_login(s: Session, user: User | None, valid: bool, source_ip: str | None) -> None:
    """Audit a failed login. The typed name is kept only when it is an account's name: people
    type their password into the name field, and that must not land in the audit log."""
    if user is None:
        target, detail = "user:unknown", {"reason": "no such account"}
    else:
        reason = "account disabled" if valid else "wrong password"
        target, detail = f"user:{user.id}", {"name": user.name, "reason": reason}
    audit.record(
        s, replace(_LOGIN_FORM, source_ip=source_ip), "session.login_failed", target, detail
    )


def _spell(seconds: int) -> str:
    minutes, rest = divmod(seconds, 60)
    if minutes == 0:
        return f"{rest} s"
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"
