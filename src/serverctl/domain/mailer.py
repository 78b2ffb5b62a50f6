"""Email over SMTP: the server settings and the one client that talks to the server.

`Mailer.send` is the only network I/O of alert email, and the test seam. smtplib runs in a
worker thread with a timeout on every socket operation and an overall deadline, so a server
that stalls never holds the caller for long. smtplib's, ssl's and the socket's exceptions
become a `MailError` whose message says what went wrong and what to check. The password never
reaches a message, a `repr` or a log line.
"""

from __future__ import annotations

import ipaddress
import logging
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Literal, TypeVar, cast

from serverctl.domain import validation
from serverctl.domain.alerts import email_addresses
from serverctl.errors import MailError, ValidationError

log = logging.getLogger(__name__)

Security = Literal["starttls", "tls", "none"]
SECURITY: dict[str, str] = {
    "starttls": "STARTTLS (usually port 587)",
    "tls": "TLS from the start (usually port 465)",
    "none": "none: plain text (port 25, trusted networks only)",
}
DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}

T = TypeVar("T")


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: Security
    from_address: str
    username: str = ""
    password: str = field(default="", repr=False)

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def public(self) -> dict[str, Any]:
        """Everything but the password: what is stored in clear and shown."""
        return {
            "host": self.host,
            "port": self.port,
            "security": self.security,
            "username": self.username,
            "from_address": self.from_address,
        }

    @classmethod
    def validated(
        cls,
        *,
        host: str,
        port: int,
        security: str,
        from_address: str,
        username: str = "",
        password: str = "",
    ) -> SmtpSettings:
        """Checked settings, or a ValidationError naming the field and what it should be."""
        if security not in SECURITY:
            raise ValidationError(f"security must be one of {sorted(SECURITY)}, not {security!r}")
        if not 1 <= port <= 65535:
            raise ValidationError(f"port must be 1-65535, not {port}")
        username = username.strip()
        if len(username) > 255 or any(c in username for c in "\r\n"):
            raise ValidationError("user name must be one line of at most 255 characters")
        if len(password) > 512 or any(c in password for c in "\r\n"):
            raise ValidationError("password must be one line of at most 512 characters")
        sender = email_addresses([from_address])
        if not sender:
            raise ValidationError("from address is required (e.g. serverctl@example.com)")
        return cls(
            host=_host(host),
            port=port,
            security=cast(Security, security),
            from_address=sender[0],
            username=username,
            password=password if username else "",
        )


def _host(value: str) -> str:
    value = value.strip().strip("[]")
    if not value:
        raise ValidationError("SMTP host is required (e.g. smtp.example.com)")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    try:
        return validation.hostname(value)
    except ValidationError:
        raise ValidationError(
            f"SMTP host {value!r} is not a host name or IP address (e.g. smtp.example.com)"
        ) from None


def build_message(settings: SmtpSettings, to: list[str], subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.from_address
    message["To"] = ", ".join(to)
    # One line: a header never carries a line break from an alert's text.
    message["Subject"] = " ".join(subject.split())[:200]
    message["Date"] = formatdate(usegmt=True)
    # With a domain given, make_msgid does no (possibly slow) DNS lookup of our own name.
    message["Message-ID"] = make_msgid(domain=settings.from_address.rpartition("@")[2])
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body)
    return message


class Mailer:
    """Sends one message through the configured server; tests may give a CA file to trust."""

    def __init__(self, timeout: float = 10.0, cafile: str | None = None) -> None:
        self.timeout = timeout
        self.cafile = cafile

    def send(self, settings: SmtpSettings, to: list[str], subject: str, body: str) -> list[str]:
        """Deliver to the server; returns the recipients it refused (when it took the others).
        Raises MailError saying what failed."""
        if not to:
            raise MailError("no recipients to send to")
        message = build_message(settings, to, subject, body)
        refused = _with_deadline(
            lambda: self._send(settings, message, to),
            # Connect, greeting, EHLO, STARTTLS, login, the message: each gets the timeout.
            deadline=self.timeout * 3,
            where=settings.where,
        )
        log.info("email %r sent through %s to %d recipient(s)", subject, settings.where, len(to))
        return sorted(refused)

    def _send(self, settings: SmtpSettings, message: EmailMessage, to: list[str]) -> list[str]:
        try:
            client = self._connect(settings)
            try:
                return list(client.send_message(message, settings.from_address, to))
            finally:
                _close(client)
        except MailError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated, with the cause kept
            raise translate(exc, settings, self.timeout) from exc

    def _connect(self, settings: SmtpSettings) -> smtplib.SMTP:
        context = ssl.create_default_context(cafile=self.cafile)
        # socket.getfqdn() (smtplib's default EHLO name) may wait on DNS; our name is enough.
        local = socket.gethostname() or "serverctl"
        client: smtplib.SMTP
        if settings.security == "tls":
            client = smtplib.SMTP_SSL(
                settings.host,
                settings.port,
                local_hostname=local,
                timeout=self.timeout,
                context=context,
            )
        else:
            client = smtplib.SMTP(
                settings.host, settings.port, local_hostname=local, timeout=self.timeout
            )
        try:
            client.ehlo()
            if settings.security == "starttls":
                if not client.has_extn("starttls"):
                    raise MailError(
                        f"{settings.where} does not offer STARTTLS: choose security TLS "
                        "(usually port 465), or none on a trusted network"
                    )
                client.starttls(context=context)
                client.ehlo()
            if settings.username:
                if not client.has_extn("auth"):
                    raise MailError(
                        f"{settings.where} does not offer login (AUTH) on this connection: "
                        "use STARTTLS or TLS, or leave the user name empty"
                    )
                client.login(settings.username, settings.password)
        except BaseException:
            _close(client)
            raise
        return client


def _close(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        client.close()


def _with_deadline(work: Callable[[], T], *, deadline: float, where: str) -> T:
    """Run `work` in a daemon thread; give up waiting for it after `deadline` seconds."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="smtp-send", daemon=True)
    worker.start()
    worker.join(deadline)
    if worker.is_alive():
        raise MailError(f"cannot reach {where}: no complete answer within {deadline:.0f} s")
    if "error" in outcome:
        error = outcome["error"]
        if isinstance(error, MailError):
            raise error
        raise MailError(f"sending through {where} failed: {error}") from error
    return cast(T, outcome["value"])


def translate(exc: BaseException, settings: SmtpSettings, timeout: float) -> MailError:
    """A clear message for what smtplib, ssl or the socket raised."""
    if isinstance(exc, MailError):
        return exc
    if isinstance(exc, smtplib.SMTPException):
        return _smtp_error(exc, settings, timeout)
    return _network_error(exc, settings.where, timeout)


def _reply(code: int, text: bytes | str) -> str:
    message = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {' '.join(message.split())}".strip()


def _smtp_error(exc: smtplib.SMTPException, settings: SmtpSettings, timeout: float) -> MailError:
    where = settings.where
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return MailError(
            f"SMTP server refused the login of user {settings.username!r} at {where} "
            f"({_reply(exc.smtp_code, exc.smtp_error)}): check the user name and password"
        )
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = ", ".join(
            f"{addr} ({_reply(code, text)})" for addr, (code, text) in exc.recipients.items()
        )
        return MailError(f"SMTP server {where} refused every recipient: {refused}")
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return MailError(
            f"SMTP server {where} refused the from address {settings.from_address} "
            f"({_reply(exc.smtp_code, exc.smtp_error)}): use an address this account may send as"
        )
    if isinstance(exc, smtplib.SMTPServerDisconnected) and "timed out" in str(exc):
        return _timeout(where, timeout)
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return MailError(
            f"{where} closed the connection ({str(exc) or 'no reason given'}): check the port "
            "and the security setting"
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        return MailError(f"SMTP server {where} answered {_reply(exc.smtp_code, exc.smtp_error)}")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return MailError(f"SMTP server {where} does not support this: {exc}")
    return MailError(f"SMTP error with {where}: {exc}")


def _network_error(exc: BaseException, where: str, timeout: float) -> MailError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return MailError(
            f"TLS error with {where}: the server's certificate is not trusted "
            f"({exc.verify_message}): it needs a certificate for this host name from a CA "
            "this system trusts"
        )
    if isinstance(exc, ssl.SSLError) and exc.reason == "WRONG_VERSION_NUMBER":
        return MailError(
            f"TLS error with {where}: the server does not speak TLS on this port; choose "
            "security STARTTLS (usually port 587) or none, or the server's TLS port"
        )
    if isinstance(exc, ssl.SSLError):
        return MailError(
            f"TLS error with {where}: {exc.reason or exc}; check the security setting "
            "(TLS is usually port 465, STARTTLS port 587)"
        )
    if isinstance(exc, TimeoutError):
        return _timeout(where, timeout)
    if isinstance(exc, socket.gaierror):
        return MailError(f"cannot reach {where}: the host name does not resolve ({exc.strerror})")
    if isinstance(exc, OSError):
        return MailError(f"cannot reach {where}: {exc.strerror or exc}")
    return MailError(f"sending through {where} failed: {exc}")


def _timeout(where: str, timeout: float) -> MailError:
    return MailError(
        f"cannot reach {where}: no answer within {timeout:.0f} s (a TLS port such as 465 needs "
        "security TLS; a firewall may drop the connection)"
    )
