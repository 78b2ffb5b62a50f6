"""Redaction: the secrets a support bundle must never carry, caught by three nets at once.

1. **Known values.** Every secret this instance can read: each string inside every encrypted
   column it keeps (DNS provider accounts, and every `app_settings` row with secrets: SMTP, the
   backup store, and whatever setting is added later, since all of them are decrypted here), the
   key that encrypts them (`SERVERCTL_SECRET_KEY` or `<data_dir>/secret.key`) and the database
   URL's password. Replaced wherever they appear, also JSON-escaped or percent-encoded.
2. **Key names.** In structured data, the value of any key whose name says secret (see
   `DENIED_KEY_PARTS`) is replaced whole, whatever it holds: a new `..._token` field is covered
   before anyone thinks of it.
3. **Shapes.** Text that looks like a secret, whatever its value: ServerCTL's own enrolment
   secrets (48 random letters and digits; stored only as hashes, so never "known") and API
   tokens (`sct_...`), one-time backup transfer URLs, Fernet tokens (encrypted credentials),
   `Authorization:` headers, `Bearer` and `Basic` credentials, `name=value` pairs whose name
   says secret, passwords in URLs, PEM private keys, JWTs and AWS access key ids.

`leaks` then scans finished bytes for every known value: the bundle refuses to go out with one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from serverctl.config import Settings
from serverctl.crypto import KEY_FILE_NAME, SecretBox, SecretBoxError
from serverctl.db.models import AppSetting, DnsProviderAccount
from serverctl.db.session import Database

REDACTED = "[REDACTED]"
# Shorter values would redact ordinary words everywhere; no credential is that short.
MIN_KNOWN_LENGTH = 4
# The shortest piece of a known secret, left beside a [REDACTED], that is redacted too.
MIN_PIECE = 4
# A key whose lower-cased name contains one of these has its value replaced whole.
DENIED_KEY_PARTS = (
    "secret",
    "password",
    "passwd",
    "token",
    "credential",
    "authorization",
    "signature",
    "cookie",
    "session",
    "apikey",
    "api_key",
    "private_key",
    "access_key",
    "tsig",
)
DENIED_KEYS = frozenset({"key", "auth", "pass", "pwd", "hash"})

_SECRET_NAME = (
    r"[\w.-]*(?:secret|password|passwd|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|signature|credential)[\w.-]*|[\w.-]*[_-]key|key"
)


def _mixed_48(match: re.Match[str]) -> str:
    """48 letters and digits mixing upper case, lower case and digits: the shape of an
    enrolment secret (a random one always mixes them; a hex digest or a word does not)."""
    word = match.group(0)
    tests = (str.isupper, str.islower, str.isdigit)
    return REDACTED if all(any(test(c) for c in word) for test in tests) else word


def _quoted_like(value: str) -> str:
    """[REDACTED] inside the quotes `value` had, so JSON or shell text stays well-formed."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[0] + REDACTED + value[0]
    return REDACTED


Rule = tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]
SHAPES: list[Rule] = [
    (
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S
        ),
        f"-----BEGIN PRIVATE KEY-----{REDACTED}-----END PRIVATE KEY-----",
    ),
    (re.compile(r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)[^\r\n\"']+"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)\b((?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{6,}"), rf"\1{REDACTED}"),
    # name=value; the name must start a token, so a value holding "secret=" is not cut in two.
    (
        re.compile(
            r"(?i)(?<![\w/+=.:-])(" + _SECRET_NAME + r")([\"']?\s*(?:=|:\s+|:(?=[\"']))\s*)"
            r"(\"[^\"\r\n]*\"|'[^'\r\n]*'|[^\s\"'&,;]+)"
        ),
        lambda m: m.group(1) + m.group(2) + _quoted_like(m.group(3)),
    ),
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+):[^@\s/]+@"), rf"\1:{REDACTED}@"),
    (re.compile(r"\bsct_[A-Za-z0-9]{16,}"), f"sct_{REDACTED}"),
    # One-time backup transfer URLs of the local store (domain/backup_jobs.py).
    (re.compile(r"(/api/agents/backups/transfer/)[A-Za-z0-9_-]+"), rf"\1{REDACTED}"),
    (re.compile(r"\bgAAAAA[A-Za-z0-9_-]{20,}={0,2}"), REDACTED),  # Fernet
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"), REDACTED),  # JWT
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),
    (re.compile(r"(?<![A-Za-z0-9_])[A-Za-z0-9]{48}(?![A-Za-z0-9_])"), _mixed_48),
]


def denied_key(name: str) -> bool:
    lowered = name.lower()
    return lowered in DENIED_KEYS or any(part in lowered for part in DENIED_KEY_PARTS)


class Redactor:
    """Applies the three nets; `count` is how many replacements it made."""

    def __init__(self, known: Mapping[str, str]) -> None:
        # value -> what it is ("DNS provider cf", "setting smtp"), for the refusal message.
        self.known: dict[str, str] = {}
        for value, label in known.items():
            if len(value) >= MIN_KNOWN_LENGTH:
                for form in _forms(value):
                    self.known.setdefault(form, label)
        # Longest first: a secret that contains another is replaced whole.
        self._ordered = sorted(self.known, key=len, reverse=True)
        self.count = 0

    def text(self, value: str) -> str:
        for secret in self._ordered:
            if secret in value:
                self.count += value.count(secret)
                value = value.replace(secret, REDACTED)
        if REDACTED in value:
            value = self._pieces(value)
        for pattern, rule in SHAPES:
            value = pattern.sub(self._counting(rule), value)
        return value

    def data(self, value: Any) -> Any:
        """A copy of JSON-like `value`: denied keys' values replaced, every string redacted."""
        if isinstance(value, Mapping):
            result: dict[str, Any] = {}
            for key, item in value.items():
                if denied_key(str(key)) and item not in (None, "", [], {}, False):
                    self.count += 1
                    result[str(key)] = REDACTED
                else:
                    result[str(key)] = self.data(item)
            return result
        if isinstance(value, list | tuple):
            return [self.data(item) for item in value]
        if isinstance(value, str):
            return self.text(value)
        return value

    def _pieces(self, value: str) -> str:
        """Text that ran into a [REDACTED] and is the start or the end of a known secret: the
        agent redacts by shape before its text gets here, and may have cut a secret it did not
        know in two ("s3/Bundle+[REDACTED]"); the piece left over is still part of the secret."""
        spans: list[tuple[int, int]] = []
        for marker in re.finditer(re.escape(REDACTED), value):
            start, end = marker.span()
            for secret in self._ordered:
                before = _piece_before(value, start, secret)
                after = _piece_after(value, end, secret)
                if before:
                    spans.append((start - before, start))
                if after:
                    spans.append((end, end + after))
        for start, end in sorted(set(spans), reverse=True):
            if value[start:end] and REDACTED not in value[start:end]:
                value = value[:start] + REDACTED + value[end:]
                self.count += 1
        return value

    def leaks(self, blob: bytes) -> list[str]:
        """What each known secret still in `blob` is (empty: none is)."""
        text = blob.decode("utf-8", errors="replace")
        return sorted({label for value, label in self.known.items() if value in text})

    def _counting(
        self, rule: str | Callable[[re.Match[str]], str]
    ) -> Callable[[re.Match[str]], str]:
        def replace(match: re.Match[str]) -> str:
            new = match.expand(rule) if isinstance(rule, str) else rule(match)
            if new != match.group(0):
                self.count += 1
            return new

        return replace


def _piece_before(text: str, position: int, secret: str) -> int:
    """The length of the longest start of `secret` that ends at `position` (0: none)."""
    if text.find(secret[:MIN_PIECE], max(0, position - len(secret)), position) < 0:
        return 0  # the quick answer for nearly every marker and secret
    for k in range(len(secret) - 1, MIN_PIECE - 1, -1):
        if text.endswith(secret[:k], 0, position):
            return k
    return 0


def _piece_after(text: str, position: int, secret: str) -> int:
    """The length of the longest end of `secret` that starts at `position` (0: none)."""
    if text.find(secret[-MIN_PIECE:], position, position + len(secret)) < 0:
        return 0
    for k in range(len(secret) - 1, MIN_PIECE - 1, -1):
        if text.startswith(secret[-k:], position):
            return k
    return 0


def _forms(value: str) -> set[str]:
    """The ways a value shows up in text: as is, JSON-escaped, percent-encoded."""
    return {value, json.dumps(value)[1:-1], quote(value, safe="")}


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def known_secrets(
    db: Database, box: SecretBox, settings: Settings
) -> tuple[dict[str, str], list[str]]:
    """({secret value: what it is}, problems): every secret this instance can read. A problem
    is an encrypted value that cannot be decrypted (the key changed): its plain value cannot
    be searched for, so the bundle says so (the shape net still catches Fernet tokens)."""
    known: dict[str, str] = {}
    problems: list[str] = []
    encrypted: list[tuple[str, str]] = []
    with db.session() as s:
        for account in s.scalars(select(DnsProviderAccount)):
            encrypted.append((f"DNS provider {account.name!r}", account.secrets_encrypted))
        for row in s.scalars(select(AppSetting).where(AppSetting.secrets_encrypted.is_not(None))):
            encrypted.append((f"setting {row.key!r}", row.secrets_encrypted or ""))
    for label, token in encrypted:
        try:
            values = box.decrypt_json(token)
        except SecretBoxError:
            problems.append(f"the secrets of {label} cannot be decrypted with this key")
            continue
        for value in _strings(values):
            known.setdefault(value, label)
    for value, label in _instance_secrets(settings):
        known.setdefault(value, label)
    return known, problems


def _instance_secrets(settings: Settings) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if settings.secret_key is not None:
        found.append((settings.secret_key.get_secret_value(), "SERVERCTL_SECRET_KEY"))
    try:
        key_file = (settings.data_dir / KEY_FILE_NAME).read_text().strip()
    except (OSError, UnicodeDecodeError):
        key_file = ""
    if key_file:
        found.append((key_file, KEY_FILE_NAME))
    if settings.database_url:
        try:
            password = make_url(settings.database_url).password
        except ArgumentError:
            password = None
        if password:
            found.append((str(password), "the database URL's password"))
    return found
