"""The ACME settings (Settings → TLS): which CA, the account's contact, the CA bundle that
verifies a private CA's HTTPS, the DNS servers that show a challenge record; and the account.

Kept in `app_settings` under the key "acme", like the SMTP settings: the public fields in
`value`, the account (private key and URL) only in `secrets_encrypted` (serverctl.crypto). The
account key is made on first use and never leaves the control plane: answers say
`account_registered` instead, and neither the audit log nor the logs carry it.

The account belongs to the directory it was made on (a new CA does not know it): changing
`directory_url` drops it, and the next order registers a new one.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.orm import Session

from serverctl.crypto import SecretBox, SecretBoxError
from serverctl.db.models import AppSetting
from serverctl.db.session import Database
from serverctl.db.types import utcnow
from serverctl.dns.propagation import parse_server
from serverctl.domain import audit
from serverctl.domain.alerts import email_addresses
from serverctl.domain.principal import SYSTEM, Principal
from serverctl.errors import Conflict, ValidationError

log = logging.getLogger(__name__)

KEY = "acme"
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"
NOT_CONFIGURED = (
    "ACME is not configured: set the directory URL and contact email first "
    "(Settings → TLS, PUT /api/settings/acme)"
)
MAX_CHECK_SERVERS = 8
MAX_CA_BUNDLE = 256 * 1024


@dataclass(frozen=True)
class AcmeSettings:
    """What an order needs to know, read from the stored settings."""

    directory_url: str
    email: str
    ca_bundle: str | None = None
    check_servers: tuple[str, ...] = ()


@dataclass(frozen=True)
class AcmeAccount:
    """The account on `directory_url`: its private key (PEM) and, once registered, its URL."""

    directory_url: str
    key_pem: str
    url: str | None = None


class AcmeSettingsService:
    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db = db
        self.box = box
        # Two orders starting together in this process must not make two accounts.
        self.account_lock = threading.Lock()

    # -- the operator's view --------------------------------------------------------------------

    def get(self, principal: Principal) -> dict[str, Any]:
        principal.require("viewer")
        with self.db.session() as s:
            row = s.get(AppSetting, KEY)
            if row is None:
                return {
                    "configured": False,
                    "directory_url": "",
                    "email": "",
                    "ca_bundle": None,
                    "check_servers": [],
                    "account_registered": False,
                    "account_url": None,
                    "updated_at": None,
                    "updated_by": None,
                }
            public = _public(row.value)
            return {
                "configured": True,
                **public,
                "check_servers": list(public["check_servers"]),
                "account_registered": bool(row.secrets_encrypted and row.value.get("account_url")),
                "account_url": row.value.get("account_url"),
                "updated_at": row.updated_at,
                "updated_by": row.updated_by,
            }

    def set(
        self,
        principal: Principal,
        *,
        directory_url: str,
        email: str,
        ca_bundle: str | None = None,
        check_servers: list[str] | None = None,
    ) -> dict[str, Any]:
        principal.require("admin")
        settings = validated(directory_url, email, ca_bundle, check_servers or [])
        with self.db.session() as s:
            row = s.get(AppSetting, KEY)
            before = _public(row.value) if row else None
            drop = before is not None and before["directory_url"] != settings.directory_url
            if row is None:
                row = AppSetting(key=KEY, value={}, updated_by=principal.actor)
                s.add(row)
            value: dict[str, Any] = {
                "directory_url": settings.directory_url,
                "email": settings.email,
                "ca_bundle": settings.ca_bundle,
                "check_servers": list(settings.check_servers),
            }
            if drop:
                row.secrets_encrypted = None
            elif row.value.get("account_url"):
                value["account_url"] = row.value["account_url"]
            row.value = value
            row.updated_at = utcnow()
            row.updated_by = principal.actor
            detail: dict[str, Any] = {
                "before": _audited(before) if before else None,
                "after": _audited(_public(value)),
            }
            if drop:
                detail["account"] = "dropped: the directory changed, the next order registers anew"
                log.info(
                    "ACME directory changed by %s: the stored account is dropped", principal.actor
                )
            audit.record(s, principal, "settings.acme.update", "settings:acme", detail)
        return self.get(principal)

    # -- what an order reads and writes ---------------------------------------------------------

    def load(self) -> AcmeSettings:
        """The settings; Conflict (409) saying what to do when there are none."""
        with self.db.session() as s:
            row = s.get(AppSetting, KEY)
            if row is None:
                raise Conflict(NOT_CONFIGURED)
            public = _public(row.value)
        return AcmeSettings(**public)

    def account(self) -> AcmeAccount:
        """The account for the configured directory, making its key on first use (EC P-256,
        stored encrypted; not registered with the CA yet: `url` is None until saved)."""
        with self.db.session() as s:
            row = _row(s)
            directory = str(row.value.get("directory_url", ""))
            stored = self._stored(row)
            if stored is not None and stored.directory_url == directory:
                return stored
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode("ascii")
            row.secrets_encrypted = self.box.encrypt_json(
                {"directory_url": directory, "key_pem": pem}
            )
            row.value = {k: v for k, v in row.value.items() if k != "account_url"}
            audit.record(
                s, SYSTEM, "settings.acme.account_key", "settings:acme", {"directory": directory}
            )
            return AcmeAccount(directory, pem)

    def save_account_url(self, account: AcmeAccount, url: str) -> None:
        """Remember where the CA keeps `account`, unless the settings moved on meanwhile (a new
        directory, hence a new key): then the registration is simply not kept."""
        with self.db.session() as s:
            row = _row(s)
            stored = self._stored(row)
            if stored is None or stored.key_pem != account.key_pem:
                return
            if row.value.get("account_url") == url:
                return
            row.value = {**row.value, "account_url": url}
            audit.record(
                s,
                SYSTEM,
                "settings.acme.account_registered",
                "settings:acme",
                {"directory": account.directory_url, "account_url": url},
            )

    def _stored(self, row: AppSetting) -> AcmeAccount | None:
        if not row.secrets_encrypted:
            return None
        try:
            secret = self.box.decrypt_json(row.secrets_encrypted)
        except SecretBoxError:
            # The secret key changed. An account is cheap to make again (nothing is lost but
            # the CA's record of it), so the next order registers a new one.
            log.warning("the stored ACME account key cannot be decrypted; a new one is made")
            return None
        url = row.value.get("account_url")
        return AcmeAccount(
            str(secret.get("directory_url", "")), str(secret["key_pem"]), str(url) if url else None
        )


# -- validation ---------------------------------------------------------------------------------


def validated(
    directory_url: str, email: str, ca_bundle: str | None, check_servers: list[str]
) -> AcmeSettings:
    """The settings from operator input; ValidationError (422) naming the field otherwise."""
    return AcmeSettings(
        directory_url=_directory_url(directory_url),
        email=_email(email),
        ca_bundle=_ca_bundle(ca_bundle),
        check_servers=_check_servers(check_servers),
    )


def _directory_url(value: str) -> str:
    url = (value or "").strip()
    example = f"for example {LETS_ENCRYPT} (staging: {LETS_ENCRYPT_STAGING})"
    if not url:
        raise ValidationError(f"directory_url is required: the ACME directory's URL, {example}")
    if len(url) > 2048 or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValidationError(f"directory_url {url[:100]!r} is not a URL, {example}")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        if parts.port == 0:
            raise ValueError("port 0")
    except ValueError as exc:
        raise ValidationError(f"directory_url {url!r} is not a URL ({exc}), {example}") from None
    if parts.scheme != "https":
        # RFC 8555 section 6.1: ACME runs over HTTPS only, private CAs included.
        raise ValidationError(
            f"directory_url must start with https:// (ACME is HTTPS only; for a private CA "
            f"with its own certificate authority give ca_bundle), not {url!r}"
        )
    if not host:
        raise ValidationError(f"directory_url {url!r} names no host, {example}")
    if parts.username or parts.password:
        raise ValidationError("directory_url must not carry a user name or password")
    return url


def _email(value: str) -> str:
    text = (value or "").strip()
    if not text:
        raise ValidationError(
            "email is required: the ACME account's contact (the CA writes there about the "
            "account and its certificates)"
        )
    try:
        [address] = email_addresses([text])
    except ValidationError as exc:
        raise ValidationError(f"email: {exc.message}") from None
    return address


def _ca_bundle(value: str | None) -> str | None:
    text = (value or "").strip()
    if not text:
        return None
    if len(text) > MAX_CA_BUNDLE:
        raise ValidationError(f"ca_bundle is over {MAX_CA_BUNDLE // 1024} KiB")
    if "PRIVATE KEY-----" in text:
        raise ValidationError(
            "ca_bundle holds a private key: give only the CA's certificates (PEM), never a key"
        )
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ValidationError(
            "ca_bundle is not a PEM certificate bundle: it must hold one or more "
            "'-----BEGIN CERTIFICATE-----' blocks (the CA that signed the ACME server's HTTPS "
            "certificate)"
        )
    try:
        certificates = x509.load_pem_x509_certificates(text.encode())
    except ValueError as exc:
        raise ValidationError(f"ca_bundle has a certificate that cannot be read: {exc}") from None
    blocks = text.count("-----BEGIN CERTIFICATE-----")
    if len(certificates) != blocks:
        raise ValidationError(
            f"ca_bundle has {blocks} certificate blocks but only {len(certificates)} can be read"
        )
    return text + "\n"


def _check_servers(values: list[str]) -> tuple[str, ...]:
    if len(values) > MAX_CHECK_SERVERS:
        raise ValidationError(f"check_servers takes at most {MAX_CHECK_SERVERS} servers")
    result: list[str] = []
    for raw in values:
        try:
            host, _port = parse_server(raw)
        except ValueError as exc:
            raise ValidationError(
                f"check_servers entry is not host or host:port (e.g. 192.0.2.53:53): {exc}"
            ) from None
        _check_host(host, raw)
        if raw.strip() not in result:
            result.append(raw.strip())
    return tuple(result)


def _check_host(host: str, raw: str) -> None:
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if not all(label and len(label) <= 63 and label.replace("-", "").isalnum() for label in labels):
        raise ValidationError(f"check_servers entry {raw!r} is not an address or host name")


# -- storage shapes -----------------------------------------------------------------------------


def _row(s: Session) -> AppSetting:
    row = s.get(AppSetting, KEY)
    if row is None:
        raise Conflict(NOT_CONFIGURED)
    return row


def _public(value: dict[str, Any]) -> dict[str, Any]:
    return {
        "directory_url": str(value.get("directory_url", "")),
        "email": str(value.get("email", "")),
        "ca_bundle": value.get("ca_bundle") or None,
        "check_servers": tuple(str(v) for v in value.get("check_servers") or ()),
    }


def _audited(public: dict[str, Any]) -> dict[str, Any]:
    """The settings as the audit log keeps them: the bundle by its subjects, not its PEM."""
    bundle = public.get("ca_bundle")
    subjects = (
        [c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(bundle.encode())]
        if bundle
        else []
    )
    return {
        **public,
        "check_servers": list(public["check_servers"]),
        "ca_bundle": subjects or None,
    }
