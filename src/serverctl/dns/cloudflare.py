"""The Cloudflare DNS provider: API v4 with an API token.

Zones are found by name inside the configured account. Cloudflare keeps one record per value,
so an RRset here is every record with the same name and type: an A RRset is updated in place
(one record kept, duplicates deleted); a TXT RRset gets its missing values created and its
extra values deleted, which never touches a value another ACME order still needs.

Errors come in Cloudflare's envelope (`success`, `errors[{code, message}]`, `result`) and are
translated here: 401/403 and the token error codes to `ProviderAuthError`, 429 to
`RateLimited` with the Retry-After seconds, everything else to `ProviderError` carrying
Cloudflare's own messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar, TypeVar

import httpx
from pydantic import Field, field_validator

from serverctl.dns.base import DNSProvider, ProviderConfig, Record
from serverctl.dns.http import ProviderHttp
from serverctl.errors import ProviderAuthError, ProviderError, RateLimited, ZoneNotFound

API_BASE = "https://api.cloudflare.com/client/v4"
# Only these types can go through Cloudflare's proxy; every other type is DNS-only.
PROXIABLE = frozenset({"A", "AAAA", "CNAME"})
# TTL 1 is Cloudflare's "automatic", the only TTL a proxied record can have.
AUTO_TTL = 1
ZONES_PER_PAGE = 50
RECORDS_PER_PAGE = 100
# Codes that mean "this token may not do that": invalid token (1000), malformed or refused
# Authorization header (6003, 6111), invalid or unauthorised token (9103, 9106, 9109), and
# missing permission (10000).
AUTH_CODES = frozenset({1000, 6003, 6111, 9103, 9106, 9109, 10000})
# "An identical record already exists" (81058, formerly 81057): the value is there already.
IDENTICAL_RECORD = frozenset({81057, 81058})
RECORD_MISSING = 81044
# "Could not route to ..., perhaps your object identifier is invalid?": an unknown zone id.
NO_ROUTE = 7003
# A record id no record has: a write to it proves the DNS Edit permission and changes nothing.
PROBE_RECORD_ID = "0" * 32

T = TypeVar("T")


class CloudflareConfig(ProviderConfig):
    api_token: str = Field(
        min_length=1,
        repr=False,
        description="API token with Zone / Zone / Read and Zone / DNS / Edit on the zones",
    )
    account_id: str = Field(
        pattern=r"^[0-9a-f]{32}$",
        description="the account that owns the zones (32 hex digits, shown on the dashboard)",
    )
    api_base: str = Field(API_BASE, description="API root; change it only for tests")

    @field_validator("account_id", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL, for example " + API_BASE)
        return value.rstrip("/")


class CloudflareError(ProviderError):
    """A refusal from Cloudflare that is neither auth nor rate limit; keeps the error codes."""

    def __init__(self, message: str, codes: frozenset[int], status: int) -> None:
        super().__init__(message)
        self.codes = codes
        self.status = status


class CloudflareProvider(DNSProvider):
    kind = "cloudflare"
    title = "Cloudflare"
    config_model = CloudflareConfig
    secret_fields = frozenset({"api_token"})
    supports_proxied = True
    config: CloudflareConfig

    _HEADERS: ClassVar[dict[str, str]] = {"Accept": "application/json"}

    def __init__(
        self,
        config: CloudflareConfig,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(config, timeout=timeout)
        self.http = ProviderHttp(
            config.api_base,
            headers={**self._HEADERS, "Authorization": f"Bearer {config.api_token}"},
            timeout=timeout,
            transport=transport,
        )
        self._zone_ids: dict[str, str] = {}

    def close(self) -> None:
        self.http.close()

    # -- hooks ----------------------------------------------------------------------------------

    def _check(self, zone: str | None) -> str:
        self._verify_token()
        if zone is None:
            count = len(self._zones())
            return f"API token valid; {count} zone(s) visible in account {self.config.account_id}"
        zone_id = self._need(zone, "read zones", "Zone / Zone / Read", lambda: self._zone_id(zone))
        records = f"/zones/{zone_id}/dns_records"
        self._need(zone, "read DNS records", "Zone / DNS / Read", lambda: self._read_probe(records))
        self._need(zone, "edit DNS records", "Zone / DNS / Edit", lambda: self._edit_probe(records))
        return f"API token valid; zone {zone} found; DNS records can be read and edited"

    def _zones(self) -> list[str]:
        found = self._pages("/zones", {"account.id": self.config.account_id}, ZONES_PER_PAGE)
        return [str(zone["name"]) for zone in found]

    def _get(self, zone: str, fqdn: str, rtype: str) -> Record | None:
        records = self._records(self._zone_id(zone), fqdn, rtype)
        if not records:
            return None
        values = tuple(_content_value(rtype, r) for r in records)
        proxied = any(bool(r.get("proxied")) for r in records) if rtype in PROXIABLE else None
        return Record(fqdn, rtype, values, int(records[0].get("ttl") or AUTO_TTL), proxied)

    def _put(self, zone: str, record: Record) -> None:
        zone_id = self._zone_id(zone)
        if record.proxied and record.ttl != AUTO_TTL:
            self.log.info(
                "%s is proxied: Cloudflare gives proxied records the automatic TTL, "
                "so the asked TTL %s is not used",
                record.name,
                record.ttl,
            )
        _Sync(self, zone_id, record, self._records(zone_id, record.name, record.type)).run()

    def _delete(self, zone: str, fqdn: str, rtype: str) -> None:
        zone_id = self._zone_id(zone)
        for existing in self._records(zone_id, fqdn, rtype):
            self._delete_record(zone_id, str(existing["id"]))

    # -- Cloudflare calls -----------------------------------------------------------------------

    def _verify_token(self) -> None:
        try:
            result = self._result("GET", "/user/tokens/verify")
        except ProviderAuthError:
            # Account-owned tokens are verified under their account; the user endpoint refuses
            # them as "Invalid API Token", so that refusal alone does not prove the token bad.
            result = self._result("GET", f"/accounts/{self.config.account_id}/tokens/verify")
        status = result.get("status") if isinstance(result, dict) else None
        if status != "active":
            raise ProviderAuthError(
                f"Cloudflare says the API token is {status or 'not active'}; "
                "make a new token with Zone / Zone / Read and Zone / DNS / Edit"
            )

    def _need(self, zone: str, what: str, permission: str, call: Callable[[], T]) -> T:
        """The result of `call`; a refusal is reported as the permission the token lacks."""
        try:
            return call()
        except ProviderAuthError as exc:
            raise ProviderAuthError(
                f"the API token has no permission to {what} in zone {zone}; "
                f"give it {permission} ({exc.message})"
            ) from exc

    def _read_probe(self, path: str) -> None:
        self._request("GET", path, params={"per_page": 5})

    def _edit_probe(self, path: str) -> None:
        try:
            self._request("PATCH", f"{path}/{PROBE_RECORD_ID}", body={})
        except CloudflareError as exc:
            # Cloudflare checks permissions before it looks the record up: "record does not
            # exist" (or "invalid identifier") means the token may edit DNS records.
            if exc.status >= 500:
                raise

    def _zone_id(self, zone: str) -> str:
        cached = self._zone_ids.get(zone)
        if cached is not None:
            return cached
        params = {"name": zone, "account.id": self.config.account_id}
        found = [z for z in self._pages("/zones", params, ZONES_PER_PAGE) if _named(z, zone)]
        if not found:
            raise ZoneNotFound(
                f"zone {zone} is not in Cloudflare account {self.config.account_id}, or the "
                "API token cannot see it (it needs Zone / Zone / Read on that zone)"
            )
        best = next((z for z in found if z.get("status") == "active"), found[0])
        self._zone_ids[zone] = str(best["id"])
        return self._zone_ids[zone]

    def _records(self, zone_id: str, fqdn: str, rtype: str) -> list[dict[str, Any]]:
        params = {"type": rtype, "name": fqdn}
        try:
            found = list(self._pages(f"/zones/{zone_id}/dns_records", params, RECORDS_PER_PAGE))
        except CloudflareError as exc:
            if NO_ROUTE in exc.codes:
                # The zone was deleted (and maybe added again under a new id): look it up
                # afresh next time instead of failing until the provider is rebuilt.
                self._zone_ids = {k: v for k, v in self._zone_ids.items() if v != zone_id}
            raise
        # Filter again: the answer must be exactly this RRset even if a filter were ignored.
        return [r for r in found if _named(r, fqdn) and str(r.get("type", "")).upper() == rtype]

    def _create_record(self, zone_id: str, body: dict[str, Any]) -> None:
        try:
            self._request("POST", f"/zones/{zone_id}/dns_records", body=body)
        except CloudflareError as exc:
            if not exc.codes & IDENTICAL_RECORD:
                raise

    def _replace_record(self, zone_id: str, record_id: str, body: dict[str, Any]) -> None:
        self._request("PUT", f"/zones/{zone_id}/dns_records/{record_id}", body=body)

    def _delete_record(self, zone_id: str, record_id: str) -> None:
        try:
            self._request("DELETE", f"/zones/{zone_id}/dns_records/{record_id}")
        except CloudflareError as exc:
            if RECORD_MISSING not in exc.codes and exc.status != 404:
                raise

    def _pages(self, path: str, params: dict[str, str], per_page: int) -> Iterator[dict[str, Any]]:
        """Every item of a paginated list, following `result_info.total_pages`."""
        page = 1
        while True:
            envelope = self._request(
                "GET", path, params={**params, "page": page, "per_page": per_page}
            )
            items = envelope.get("result")
            if not isinstance(items, list) or not items:
                return
            yield from (item for item in items if isinstance(item, dict))
            info = envelope.get("result_info")
            total = info.get("total_pages") if isinstance(info, dict) else None
            if not isinstance(total, int) or page >= total:
                return
            page += 1

    def _result(self, method: str, path: str) -> Any:
        return self._request(method, path).get("result")

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        self.log.debug("%s %s", method, path)
        if body is None:
            response = self.http.request(method, path, params=params)
        else:
            response = self.http.request(method, path, params=params, json=body)
        if response.status_code == 429:
            raise _rate_limited(response)
        envelope = _envelope(response)
        if response.status_code >= 400 or envelope.get("success") is not True:
            raise _failure(response.status_code, envelope)
        return envelope


class _Sync:
    """Makes the records of one name and type hold exactly the values of `want`."""

    def __init__(
        self,
        provider: CloudflareProvider,
        zone_id: str,
        want: Record,
        existing: list[dict[str, Any]],
    ) -> None:
        self.provider = provider
        self.zone_id = zone_id
        self.want = want
        self.ttl = AUTO_TTL if want.proxied else want.ttl
        self.kept: dict[str, dict[str, Any]] = {}
        self.spare: list[dict[str, Any]] = []
        for record in existing:
            value = _content_value(want.type, record)
            if value in want.values and value not in self.kept:
                self.kept[value] = record
            else:
                self.spare.append(record)

    def run(self) -> None:
        for value, record in self.kept.items():
            if not self._current(record):
                self.provider._replace_record(self.zone_id, str(record["id"]), self._body(value))
        missing = [v for v in dict.fromkeys(self.want.values) if v not in self.kept]
        # A, AAAA and CNAME are updated in place: the name keeps answering throughout.
        in_place = self.want.type in PROXIABLE
        for value in missing:
            if in_place and self.spare:
                record = self.spare.pop(0)
                self.provider._replace_record(self.zone_id, str(record["id"]), self._body(value))
            else:
                self.provider._create_record(self.zone_id, self._body(value))
        # Deleted last, so the name never goes without a value while it changes.
        for record in self.spare:
            self.provider._delete_record(self.zone_id, str(record["id"]))

    def _current(self, record: dict[str, Any]) -> bool:
        if int(record.get("ttl") or AUTO_TTL) != self.ttl:
            return False
        return self.want.proxied is None or bool(record.get("proxied")) == self.want.proxied

    def _body(self, value: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.want.type,
            "name": self.want.name,
            "content": quote_txt(value) if self.want.type == "TXT" else value,
            # Always explicit: Cloudflare's default TTL is "automatic", not the caller's.
            "ttl": self.ttl,
        }
        if self.want.proxied is not None:
            body["proxied"] = self.want.proxied
        return body


# -- pure helpers -------------------------------------------------------------------------------


def quote_txt(value: str) -> str:
    """A TXT value as Cloudflare content: double-quoted character-strings of at most 255 bytes
    each (Cloudflare stores what it is sent; the quoted form is the current schema)."""
    return " ".join('"' + _escape(chunk) + '"' for chunk in _chunks(value, 255))


def unquote_txt(content: str) -> str:
    """The value held by TXT content: its quoted strings joined, or bare content unchanged."""
    text = content.strip()
    if not text.startswith('"'):
        return content
    parts: list[str] = []
    current: list[str] | None = None
    escaped = False
    for char in text:
        if current is None:
            if char == '"':
                current = []
            elif not char.isspace():
                return content  # not a list of quoted strings: take it as it is
        elif escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            parts.append("".join(current))
            current = None
        else:
            current.append(char)
    return content if current is not None else "".join(parts)


def _escape(chunk: str) -> str:
    return chunk.replace("\\", "\\\\").replace('"', '\\"')


def _chunks(value: str, limit: int) -> list[str]:
    """Split on character boundaries into pieces of at most `limit` UTF-8 bytes."""
    chunks: list[str] = []
    current = ""
    for char in value:
        if len((current + char).encode()) > limit:
            chunks.append(current)
            current = ""
        current += char
    chunks.append(current)
    return chunks


def _content_value(rtype: str, record: dict[str, Any]) -> str:
    content = str(record.get("content", ""))
    return unquote_txt(content) if rtype == "TXT" else content


def _named(item: dict[str, Any], name: str) -> bool:
    return str(item.get("name", "")).rstrip(".").lower() == name


def _envelope(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ProviderError(
            f"Cloudflare answered HTTP {response.status_code} without its JSON envelope; "
            "check api_base"
        )
    return body


def _messages(envelope: dict[str, Any]) -> tuple[frozenset[int], str]:
    """The error codes and a readable text of an envelope's errors, chains included."""
    codes: set[int] = set()
    texts: list[str] = []
    pending = list(envelope.get("errors") or [])
    while pending:
        error = pending.pop(0)
        if not isinstance(error, dict):
            continue
        code = error.get("code")
        if isinstance(code, int):
            codes.add(code)
        texts.append(f"{error.get('message') or 'error'} ({code})")
        pending.extend(error.get("error_chain") or [])
    return frozenset(codes), "; ".join(texts) or "no error message"


def _failure(status: int, envelope: dict[str, Any]) -> ProviderError:
    codes, text = _messages(envelope)
    if status in (401, 403) or codes & AUTH_CODES:
        return ProviderAuthError(f"Cloudflare refused the API token: {text}")
    return CloudflareError(f"Cloudflare answered HTTP {status}: {text}", codes, status)


def _rate_limited(response: httpx.Response) -> RateLimited:
    retry_after = _seconds(response.headers.get("Retry-After"))
    try:
        _, text = _messages(_envelope(response))
    except ProviderError:
        text = "no error message"
    wait = f"; retry after {retry_after:g} s" if retry_after is not None else ""
    return RateLimited(f"Cloudflare rate limit reached: {text}{wait}", retry_after)


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None
