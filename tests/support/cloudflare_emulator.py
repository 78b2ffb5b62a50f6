"""A Cloudflare API v4 emulator for the DNS provider's contract tests.

Written from Cloudflare's public API documentation (see shared/reference/APIS.md, section 1):
a real HTTP server on 127.0.0.1 that keeps accounts' zones and DNS records in memory, checks
the bearer token and its permissions, checks request shapes (JSON content type, required
fields and their types, TTL range, proxiable types) and answers with the documented envelope
`{success, errors[{code, message}], messages, result, result_info}` and error codes.

Faults, for retry and reliability tests: the next N requests (of any method, or only of the
given methods, such as `WRITES`) fail with 429 (and Retry-After) or a 5xx (`fail_next`), or hang
past the client's timeout and are then dropped unanswered and unapplied (`hang_next`). Every
request received is in `requests`, with its arrival time and the status it got.
"""

from __future__ import annotations

import ipaddress
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from support.loopback import LoopbackServer

ACCOUNT_ID = "0123456789abcdef0123456789abcdef"
TOKEN = "cf-test-token-5b7d1e"
ALL_PERMISSIONS = frozenset({"zone:read", "dns:read", "dns:edit"})
PREFIX = "/client/v4"
RECORD_TYPES = frozenset(
    "A AAAA CAA CERT CNAME DNSKEY DS HTTPS LOC MX NAPTR NS OPENPGPKEY PTR SMIMEA SRV SSHFP "
    "SVCB TLSA TXT URI".split()
)
PROXIABLE = frozenset({"A", "AAAA", "CNAME"})
# The methods that change records: `fail_next(..., methods=WRITES)` lets reads through.
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ApiError(Exception):
    def __init__(
        self, status: int, code: int, message: str, chain: list[dict[str, Any]] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.error: dict[str, Any] = {"code": code, "message": message}
        if chain:
            self.error["error_chain"] = chain


@dataclass
class Token:
    permissions: frozenset[str]
    owner: str = "user"  # "user" or "account"
    status: str = "active"
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class SeenRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)
    # The status answered; 0 for a request left hanging and dropped.
    status: int = 0


@dataclass(frozen=True)
class Fault:
    """One injected failure: an HTTP status, or a hang of `hang_s` (then no answer at all)."""

    status: int = 0
    retry_after: float | None = None
    methods: frozenset[str] | None = None  # None: any method
    hang_s: float = 0.0

    def matches(self, method: str) -> bool:
        return self.methods is None or method in self.methods


class CloudflareEmulator(LoopbackServer):
    """Serves the emulated API between `with` and its end; `api_base` is the provider's base."""

    def __init__(self, *, zones: tuple[str, ...] = ("example.com",), max_per_page: int = 50):
        self.account_id = ACCOUNT_ID
        self.max_per_page = max_per_page
        self.tokens: dict[str, Token] = {TOKEN: Token(ALL_PERMISSIONS)}
        self.zones: dict[str, dict[str, Any]] = {}
        self.records: dict[str, dict[str, dict[str, Any]]] = {}
        self.requests: list[SeenRequest] = []
        self._faults: list[Fault] = []
        self.lock = threading.Lock()
        for name in zones:
            self.add_zone(name)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.emulator = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.api_base = self.url + PREFIX
        super().__init__(server=self.server)

    # -- test controls --------------------------------------------------------------------------

    def add_token(
        self,
        token: str,
        permissions: frozenset[str] = ALL_PERMISSIONS,
        *,
        owner: str = "user",
        status: str = "active",
    ) -> None:
        self.tokens[token] = Token(frozenset(permissions), owner, status)

    def add_zone(self, name: str, status: str = "active", account_id: str | None = None) -> str:
        zone_id = uuid.uuid4().hex
        self.zones[zone_id] = {
            "id": zone_id,
            "name": name,
            "status": status,
            "paused": False,
            "type": "full",
            "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"],
            "account": {"id": account_id or self.account_id, "name": "Test account"},
        }
        self.records[zone_id] = {}
        return zone_id

    def provider_settings(self) -> dict[str, str]:
        """The `config` of a ServerCTL `cloudflare` DNS provider that talks to this emulator."""
        return {"api_token": TOKEN, "account_id": self.account_id, "api_base": self.api_base}

    def zone_id(self, name: str) -> str:
        return next(z["id"] for z in self.zones.values() if z["name"] == name)

    def add_record(self, zone: str, **fields: Any) -> dict[str, Any]:
        """Put a record straight into the store (as if made on the dashboard)."""
        zone_id = self.zone_id(zone)
        with self.lock:
            return self._store(zone_id, None, _validate(self.zones[zone_id], fields))

    def records_of(self, zone: str, name: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            found = list(self.records[self.zone_id(zone)].values())
        return [dict(r) for r in found if name is None or r["name"] == name]

    def fail_next(
        self,
        count: int,
        status: int = 429,
        retry_after: float | None = 30,
        *,
        methods: frozenset[str] | None = None,
    ) -> None:
        """Answer the next `count` requests (of `methods`, default any) with `status`; a 429
        carries Retry-After. Faults queue up in the order given."""
        with self.lock:
            self._faults.extend([Fault(status, retry_after, methods)] * count)

    def hang_next(
        self, count: int, seconds: float, *, methods: frozenset[str] | None = None
    ) -> None:
        """Hold the next `count` requests (of `methods`) for `seconds`, then drop the connection
        without applying them: a provider that stopped answering, as the client's timeout
        sees it."""
        with self.lock:
            self._faults.extend([Fault(methods=methods, hang_s=seconds)] * count)

    def faults_left(self) -> int:
        with self.lock:
            return len(self._faults)

    def seen(self, methods: frozenset[str] | None = None) -> list[SeenRequest]:
        """The requests received so far (of `methods`), oldest first."""
        with self.lock:
            return [r for r in self.requests if methods is None or r.method in methods]

    # -- request handling (called from the server threads) -------------------------------------

    def handle(
        self, method: str, target: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        """(status, body, extra headers); None: drop the connection without an answer."""
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        body = _parse_body(raw)
        with self.lock:
            seen = SeenRequest(method, parts.path, query, headers, body)
            self.requests.append(seen)
            fault = next((f for f in self._faults if f.matches(method)), None)
            if fault is not None:
                self._faults.remove(fault)
            answer: tuple[int, dict[str, Any], dict[str, str]] | None
            if fault is None:
                try:
                    answer = (*self._route(method, parts.path, query, headers, raw), {})
                except ApiError as exc:
                    answer = exc.status, _envelope(None, errors=[exc.error]), {}
            elif fault.hang_s:
                answer = None  # a hung request is never applied
            else:
                answer = _injected(fault.status, fault.retry_after)
            if answer is not None:
                seen.status = answer[0]
        if fault is not None and fault.hang_s:
            time.sleep(fault.hang_s)  # outside the lock: other requests go on meanwhile
        return answer

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        raw: bytes,
    ) -> tuple[int, dict[str, Any]]:
        if not path.startswith(PREFIX):
            raise _no_route(path)
        path = path[len(PREFIX) :].rstrip("/")
        if method == "GET" and path == "/user/tokens/verify":
            return self._verify(headers, "user")
        match = re.fullmatch(r"/accounts/([^/]+)/tokens/verify", path)
        if method == "GET" and match:
            if match.group(1) != self.account_id:
                raise _no_route(path)
            return self._verify(headers, "account")
        token = self._token(headers)
        if path == "/zones" and method == "GET":
            _need(token, "zone:read", 9109, "Unauthorized to access requested resource")
            return self._list_zones(query)
        match = re.fullmatch(r"/zones/([0-9a-f]{32})/dns_records(?:/([^/]+))?", path)
        if not match or match.group(1) not in self.zones:
            raise _no_route(path)
        zone_id, record_id = match.groups()
        if method == "GET":
            if not token.permissions & {"dns:read", "dns:edit"}:
                raise ApiError(403, 10000, "Authentication error")
        else:
            _need(token, "dns:edit", 10000, "Authentication error")
            if method in ("POST", "PUT", "PATCH"):
                _json_content(headers)
        return self._records(method, zone_id, record_id, query, _json_body(raw, method))

    def _verify(self, headers: dict[str, str], owner: str) -> tuple[int, dict[str, Any]]:
        token = self.tokens.get(_bearer(headers))
        if token is None or token.owner != owner:
            raise ApiError(401, 1000, "Invalid API Token")
        result = {"id": token.id, "status": token.status}
        message = {"code": 10000, "message": "This API Token is valid and active", "type": None}
        return 200, _envelope(result, messages=[message])

    def _token(self, headers: dict[str, str]) -> Token:
        value = headers.get("authorization", "")
        if not re.fullmatch(r"Bearer [A-Za-z0-9_.-]+", value):
            chain = [{"code": 6111, "message": "Invalid format for Authorization header"}]
            raise ApiError(400, 6003, "Invalid request headers", chain)
        token = self.tokens.get(_bearer(headers))
        if token is None or token.status != "active":
            raise ApiError(403, 9109, "Invalid access token")
        return token

    def _list_zones(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        zones = sorted(self.zones.values(), key=lambda z: z["name"])
        for key, attr in (("name", "name"), ("status", "status")):
            if key in query:
                zones = [z for z in zones if z[attr] == query[key][0].lower()]
        if "account.id" in query:
            zones = [z for z in zones if z["account"]["id"] == query["account.id"][0]]
        return 200, self._page(zones, query, default_per_page=20)

    def _page(
        self, items: list[dict[str, Any]], query: dict[str, list[str]], default_per_page: int
    ) -> dict[str, Any]:
        page = _int_param(query, "page", 1, minimum=1)
        per_page = min(
            _int_param(query, "per_page", default_per_page, minimum=1), self.max_per_page
        )
        chunk = items[(page - 1) * per_page : page * per_page]
        info = {
            "page": page,
            "per_page": per_page,
            "count": len(chunk),
            "total_count": len(items),
            "total_pages": -(-len(items) // per_page),
        }
        return _envelope([dict(i) for i in chunk], result_info=info)

    def _records(
        self,
        method: str,
        zone_id: str,
        record_id: str | None,
        query: dict[str, list[str]],
        body: Any,
    ) -> tuple[int, dict[str, Any]]:
        zone = self.zones[zone_id]
        store = self.records[zone_id]
        if record_id is None:
            if method == "GET":
                return 200, self._page(_filter(store.values(), query), query, default_per_page=100)
            if method == "POST":
                return 200, _envelope(self._store(zone_id, None, _validate(zone, body)))
            raise _no_route(f"/zones/{zone_id}/dns_records")
        current = store.get(record_id)
        if current is None:
            raise ApiError(404, 81044, "Record does not exist.")
        if method == "GET":
            return 200, _envelope(dict(current))
        if method == "DELETE":
            del store[record_id]
            return 200, _envelope({"id": record_id})
        merged = body if method == "PUT" else {**current, **body}
        return 200, _envelope(self._store(zone_id, record_id, _validate(zone, merged)))

    def _store(self, zone_id: str, record_id: str | None, fields: dict[str, Any]) -> dict[str, Any]:
        store = self.records[zone_id]
        others = [r for rid, r in store.items() if rid != record_id]
        key = (fields["type"], fields["name"], fields["content"])
        if any((r["type"], r["name"], r["content"]) == key for r in others):
            raise ApiError(400, 81058, "An identical record already exists.")
        clash = {"A", "AAAA", "CNAME"}
        if fields["type"] in clash and any(
            r["name"] == fields["name"]
            and r["type"] in clash
            and "CNAME" in (r["type"], fields["type"])
            for r in others
        ):
            raise ApiError(400, 81053, "An A, AAAA, or CNAME record with that host already exists.")
        record_id = record_id or uuid.uuid4().hex
        store[record_id] = {
            "id": record_id,
            **fields,
            "proxiable": fields["type"] in PROXIABLE,
            "created_on": "2024-01-01T00:00:00Z",
            "modified_on": "2024-01-01T00:00:00Z",
        }
        return dict(store[record_id])


# -- validation ---------------------------------------------------------------------------------


def _validate(zone: dict[str, Any], body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, 9207, "Request body is invalid.")
    rtype, name, content = body.get("type"), body.get("name"), body.get("content")
    if not isinstance(rtype, str) or rtype.upper() not in RECORD_TYPES:
        raise ApiError(
            400,
            9000 if rtype else 9101,
            "DNS record type is invalid." if rtype else "type is required",
        )
    if not isinstance(name, str) or not name:
        raise ApiError(400, 9000, "DNS name is invalid.")
    name = _absolute(name.lower(), zone["name"])
    if not isinstance(content, str):
        raise ApiError(400, 9005 if rtype == "A" else 9001, "Content is required.")
    ttl = body.get("ttl", 1)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not (ttl == 1 or 60 <= ttl <= 86400):
        raise ApiError(400, 9021, "TTL must be between 60 and 86400 seconds, or 1 for Automatic.")
    proxied = body.get("proxied", False)
    if not isinstance(proxied, bool):
        raise ApiError(400, 9003, "Invalid 'proxied' value, must be a boolean")
    rtype = rtype.upper()
    if proxied and rtype not in PROXIABLE:
        raise ApiError(400, 9004, "This record type cannot be proxied.")
    if rtype == "A" and not _ipv4(content):
        raise ApiError(400, 9005, "Content for A record must be a valid IPv4 address.")
    # A proxied record always has the automatic TTL.
    return {
        "type": rtype,
        "name": name,
        "content": content,
        "ttl": 1 if proxied else ttl,
        "proxied": proxied,
    }


def _absolute(name: str, zone: str) -> str:
    name = name.rstrip(".")
    if name == "@":
        return zone
    if name != zone and not name.endswith("." + zone):
        raise ApiError(400, 9000, "DNS name is invalid.")
    return name


def _ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


def _filter(records: Any, query: dict[str, list[str]]) -> list[dict[str, Any]]:
    found = sorted(records, key=lambda r: (r["type"], r["name"], r["content"]))
    if "type" in query:
        found = [r for r in found if r["type"] == query["type"][0].upper()]
    if "name" in query:
        found = [r for r in found if r["name"] == query["name"][0].lower().rstrip(".")]
    if "content" in query:
        found = [r for r in found if r["content"] == query["content"][0]]
    return found


def _need(token: Token, permission: str, code: int, message: str) -> None:
    if permission not in token.permissions:
        raise ApiError(403, code, message)


def _json_content(headers: dict[str, str]) -> None:
    if not headers.get("content-type", "").startswith("application/json"):
        chain = [
            {
                "code": 6105,
                "message": "Invalid Content-Type header, valid values are "
                "application/json,multipart/form-data",
            }
        ]
        raise ApiError(400, 6003, "Invalid request headers", chain)


def _json_body(raw: bytes, method: str) -> Any:
    if method not in ("POST", "PUT", "PATCH"):
        return None
    try:
        return json.loads(raw or b"null")
    except ValueError:
        raise ApiError(400, 6007, "Malformed JSON in request body") from None


def _parse_body(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode("utf-8", "replace")


def _bearer(headers: dict[str, str]) -> str:
    value = headers.get("authorization", "")
    return value[len("Bearer ") :] if value.startswith("Bearer ") else ""


def _int_param(query: dict[str, list[str]], key: str, default: int, *, minimum: int) -> int:
    try:
        value = int(query[key][0]) if key in query else default
    except ValueError:
        raise ApiError(400, 1001, f"Invalid {key} parameter") from None
    if value < minimum:
        raise ApiError(400, 1001, f"Invalid {key} parameter")
    return value


def _no_route(path: str) -> ApiError:
    chain = [{"code": 7000, "message": "No route for that URI"}]
    message = f"Could not route to {path}, perhaps your object identifier is invalid?"
    return ApiError(400, 7003, message, chain)


def _injected(status: int, retry_after: float | None) -> tuple[int, dict[str, Any], dict[str, str]]:
    if status == 429:
        error = {"code": 971, "message": "Please wait and consider throttling your request speed"}
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        return 429, _envelope(None, errors=[error]), headers
    error = {"code": 10013, "message": "An unknown error has occurred"}
    return status, _envelope(None, errors=[error]), {}


def _envelope(
    result: Any,
    *,
    errors: list[dict[str, Any]] | None = None,
    messages: list[dict[str, Any]] | None = None,
    result_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "success": not errors,
        "errors": errors or [],
        "messages": messages or [],
        "result": result,
    }
    if result_info is not None:
        body["result_info"] = result_info
    return body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this, Nagle's algorithm and the
    # client's delayed ACK hold every keep-alive answer back by about 40 ms.
    disable_nagle_algorithm = True

    def _serve(self) -> None:
        emulator: CloudflareEmulator = self.server.emulator  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = emulator.handle(self.command, self.path, headers, raw)
        if answer is None:
            self.close_connection = True
            return
        status, payload, extra = answer
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up waiting

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass
