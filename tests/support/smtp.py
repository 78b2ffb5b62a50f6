"""A real SMTP server (aiosmtpd) on a free loopback port that keeps every message it takes.

    with SmtpServer() as smtp:                       # plain SMTP, no login
    with SmtpServer(user="alerts", password="pw"):   # AUTH (over plain text: tests only)
    with SmtpServer(mode="starttls", tls=(cert, key), user=..., password=...):
    with SmtpServer(mode="tls", tls=(cert, key)):    # TLS from the start (like port 465)

`tls` is a certificate and key for 127.0.0.1 (support.tls.make_ca_and_server_cert); the client
then needs the CA (serverctl.domain.mailer.Mailer(cafile=...)).
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from support.util import free_port


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    # The user that logged in for it (None: no login).
    login: str | None

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        part = self.message.get_body(("plain",))
        return part.get_content() if part is not None else ""


class _Collect:
    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.arrived = threading.Condition()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        data = raw if isinstance(raw, bytes) else raw.encode()
        message = message_from_bytes(data, policy=policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data.login.decode() if session.authenticated else None
        with self.arrived:
            self.messages.append(
                Received(envelope.mail_from or "", list(envelope.rcpt_tos), message, login)
            )
            self.arrived.notify_all()
        return "250 2.0.0 OK: queued"


class _Authenticator:
    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user.encode(), password.encode()

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == self.user
            and data.password == self.password
        )
        return AuthResult(success=ok, auth_data=data if ok else None, handled=False)


class SmtpServer:
    def __init__(
        self,
        *,
        mode: Literal["plain", "starttls", "tls"] = "plain",
        tls: tuple[Path, Path] | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        if mode != "plain" and tls is None:
            raise ValueError(f"mode {mode!r} needs tls=(cert, key)")
        self.host, self.port, self.mode = "127.0.0.1", free_port(), mode
        self._handler = _Collect()
        self._user, self._password = user, password
        context = None
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
        kwargs: dict[str, Any] = {"server_hostname": "smtp.test", "ready_timeout": 5.0}
        if user is not None:
            kwargs["authenticator"] = _Authenticator(user, password or "")
            # Only STARTTLS needs the upgrade first (aiosmtpd does not count TLS from the start as
            # TLS). Plain mode lets tests log in over plain text; real servers should not.
            kwargs["auth_require_tls"] = mode == "starttls"
        if mode == "starttls":
            kwargs.update(tls_context=context, require_starttls=True)
        elif mode == "tls":
            kwargs["ssl_context"] = context
        self._controller = Controller(self._handler, hostname=self.host, port=self.port, **kwargs)

    @property
    def messages(self) -> list[Received]:
        with self._handler.arrived:
            return list(self._handler.messages)

    def wait_for(self, count: int = 1, timeout: float = 5.0) -> list[Received]:
        """The first `count` messages, waiting up to `timeout` seconds for them."""
        deadline = time.monotonic() + timeout
        with self._handler.arrived:
            while len(self._handler.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout} s waiting for {count} email(s); "
                        f"got {len(self._handler.messages)}"
                    )
                self._handler.arrived.wait(left)
            return list(self._handler.messages[:count])

    def settings(self, from_address: str = "serverctl@example.com") -> dict[str, Any]:
        """The body of PUT /api/settings/smtp (and SmtpService.set) for this server."""
        return {
            "host": self.host,
            "port": self.port,
            "security": {"plain": "none"}.get(self.mode, self.mode),
            "username": self._user or "",
            "password": self._password,
            "from_address": from_address,
        }

    def start(self) -> Self:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
