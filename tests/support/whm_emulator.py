"""A WHM API 1 emulator (the DNS zone calls) for the cPanel provider's contract tests.

Written from cPanel's public API documentation (api.docs.cpanel.net: listzones,
parse_dns_zone, mass_edit_dns_zone; see shared/reference/APIS.md, section 2): a real HTTPS
server on 127.0.0.1 with a certificate the test makes. It keeps zones as numbered lines in
memory (comments, `$TTL`, SOA, records), checks the `Authorization: whm user:token` header
(a wrong one gets HTTP 403), requires `api.version=1` and each call's parameters, checks the
SOA serial of every edit and the shape of every record (TTL included: the real server would
quietly use 86400 without one), bumps the serial on each change, and answers with the
`{"metadata": {...}, "data": ...}` envelope, HTTP 200 even on failure.

Tests can make the next N requests fail with 429 (and Retry-After) or a 5xx, simulate another
editor changing the zone just before the next edit, and read every request in `requests`.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from support.loopback import LoopbackServer

USERNAME = "root"
TOKEN = "WHMTESTTOKEN0123456789ABCDEFGHIJ"
FIRST_SERIAL = 2024010101
RECORD_FIELDS = {"dname": str, "ttl": int, "record_type": str, "data": list}


class Refused(Exception):
    """A WHM API 1 failure: HTTP 200 with metadata.result 0 and this reason."""


@dataclass
class SeenRequest:
    function: str
    params: dict[str, list[str]]
    authorization: str


@dataclass
class Line:
    kind: str  # "record", "comment" or "control"
    text: str = ""
    name: str = ""  # absolute, without the trailing dot
    rtype: str = ""
    ttl: int = 0
    data: tuple[str, ...] = ()


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.context = context

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The handshake runs here, in the request's own thread, not in the accept loop; a
        # client that rejects the certificate only ends its own thread.
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up mid-request is not the test's business


class WhmEmulator(LoopbackServer):
    """Serves WHM API 1 over HTTPS between `with` and its end."""

    def __init__(
        self, certfile: Path, keyfile: Path, *, zones: tuple[str, ...] = ("example.com",)
    ) -> None:
        self.username = USERNAME
        self.token = TOKEN
        self.zones: dict[str, list[Line]] = {zone: _new_zone(zone) for zone in zones}
        self.serials: dict[str, int] = dict.fromkeys(zones, FIRST_SERIAL)
        self.requests: list[SeenRequest] = []
        self.denied: set[str] = set()
        self._failures: list[tuple[int, float | None]] = []
        self._interference = 0
        self.lock = threading.Lock()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certfile, keyfile)
        self.server = _TLSServer(_Handler, context)
        self.server.emulator = self  # type: ignore[attr-defined]
        self.host = "127.0.0.1"
        self.port = int(self.server.server_address[1])
        super().__init__(server=self.server)

    # -- test controls --------------------------------------------------------------------------

    def fail_next(self, count: int, status: int = 429, retry_after: float | None = 30) -> None:
        """Answer the next `count` requests with `status` (429 carries Retry-After)."""
        self._failures.extend([(status, retry_after)] * count)

    def interfere(self, times: int = 1) -> None:
        """Before each of the next `times` edits, change the zone as another editor would,
        so the edit names a serial that is no longer current."""
        self._interference += times

    def deny(self, function: str) -> None:
        """Refuse `function` to the token's user, as WHM does for a missing privilege."""
        self.denied.add(function)

    def add_record(self, zone: str, name: str, rtype: str, ttl: int, *data: str) -> None:
        with self.lock:
            self.zones[zone].append(Line("record", name=name, rtype=rtype, ttl=ttl, data=data))
            self.serials[zone] += 1

    def records(self, zone: str, name: str, rtype: str) -> list[Line]:
        with self.lock:
            return [
                r
                for r in self.zones[zone]
                if r.kind == "record" and (r.name, r.rtype) == (name, rtype)
            ]

    def edits(self) -> list[SeenRequest]:
        return [r for r in self.requests if r.function == "mass_edit_dns_zone"]

    # -- request handling -----------------------------------------------------------------------

    def handle(self, target: str, authorization: str) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(target)
        params = parse_qs(parts.query, keep_blank_values=True)
        function = parts.path.removeprefix("/json-api/")
        with self.lock:
            self.requests.append(SeenRequest(function, params, authorization))
            if self._failures:
                return _injected(*self._failures.pop(0))
            if authorization != f"whm {self.username}:{self.token}":
                return 403, _access_denied(), {}
            try:
                data = self._call(function, params)
            except Refused as exc:
                return 200, _envelope(function, None, str(exc)), {}
        return 200, _envelope(function, data), {}

    def _call(self, function: str, params: dict[str, list[str]]) -> Any:
        if not _api1(params):
            raise Refused("This emulator speaks WHM API 1 only: send api.version=1.")
        if function in self.denied:
            raise Refused(f"Access denied: the user “{self.username}” may not call “{function}”.")
        calls = {
            "listzones": self._listzones,
            "parse_dns_zone": self._parse_dns_zone,
            "mass_edit_dns_zone": self._mass_edit_dns_zone,
        }
        if function not in calls:
            raise Refused(f"Unknown app (“{function}”) requested for this version (1) of the API.")
        return calls[function](params)

    def _listzones(self, params: dict[str, list[str]]) -> Any:
        return {"zone": [{"domain": z, "zonefile": f"{z}.db"} for z in sorted(self.zones)]}

    def _parse_dns_zone(self, params: dict[str, list[str]]) -> Any:
        zone = self._zone(params)
        return {
            "payload": [
                _payload(i, line, zone, self.serials[zone])
                for i, line in enumerate(self.zones[zone])
            ]
        }

    def _mass_edit_dns_zone(self, params: dict[str, list[str]]) -> Any:
        zone = self._zone(params)
        serial = _one(params, "serial")
        if not serial.isdigit():
            raise Refused("The “serial” parameter must be a nonnegative integer.")
        if self._interference:
            self._interference -= 1
            self.serials[zone] += 1
        if int(serial) != self.serials[zone]:
            raise Refused(
                f"The given serial number ({serial}) does not match the DNS zone’s serial "
                f"number ({self.serials[zone]}). Refresh your view of the DNS zone, then resubmit."
            )
        lines = self.zones[zone]
        adds = [_record_item(zone, raw, edit=False) for raw in _many(params, "add")]
        edits = [_record_item(zone, raw, edit=True) for raw in _many(params, "edit")]
        removes = [_line_index(raw) for raw in _many(params, "remove")]
        if not (adds or edits or removes):
            raise Refused("Give at least one “add”, “edit”, or “remove”.")
        for index, line in edits:
            _record_at(lines, index)
            lines[index] = line
        for index in sorted(set(removes), reverse=True):
            _record_at(lines, index)
            del lines[index]
        lines.extend(line for _, line in adds)
        self.serials[zone] += 1
        return {"new_serial": self.serials[zone]}

    def _zone(self, params: dict[str, list[str]]) -> str:
        zone = _one(params, "zone").lower()
        if zone not in self.zones:
            raise Refused(f"You do not control a DNS zone named “{zone}”.")
        return zone


# -- helpers ------------------------------------------------------------------------------------


def _api1(params: dict[str, list[str]]) -> bool:
    return params.get("api.version") == ["1"]


def _new_zone(zone: str) -> list[Line]:
    return [
        Line("comment", text="; cPanel first:11.118.0.0 (update_time):1700000000"),
        Line("comment", text=f"; Zone file for {zone}"),
        Line("control", text="$TTL 14400"),
        Line(
            "record",
            name=zone,
            rtype="SOA",
            ttl=86400,
            data=(
                f"ns1.{zone}.",
                f"hostmaster.{zone}.",
                "SERIAL",
                "3600",
                "1800",
                "1209600",
                "86400",
            ),
        ),
        Line("record", name=zone, rtype="NS", ttl=86400, data=(f"ns1.{zone}.",)),
        Line("record", name=zone, rtype="NS", ttl=86400, data=(f"ns2.{zone}.",)),
        Line("record", name=zone, rtype="A", ttl=14400, data=("203.0.113.1",)),
        Line("record", name=f"www.{zone}", rtype="CNAME", ttl=14400, data=(f"{zone}.",)),
    ]


def _payload(index: int, line: Line, zone: str, serial: int) -> dict[str, Any]:
    if line.kind != "record":
        return {"line_index": index, "type": line.kind, "text_b64": _b64(line.text)}
    data = [str(serial) if d == "SERIAL" else d for d in line.data]
    # As cPanel writes its zone files: the apex absolute, other owners relative to the zone.
    dname = f"{zone}." if line.name == zone else line.name.removesuffix("." + zone)
    return {
        "line_index": index,
        "type": "record",
        "record_type": line.rtype,
        "ttl": line.ttl,
        "dname_b64": _b64(dname),
        "data_b64": [_b64(d) for d in data],
    }


def _record_item(zone: str, raw: str, *, edit: bool) -> tuple[int, Line]:
    try:
        item = json.loads(raw)
    except ValueError:
        raise Refused(f"The “{'edit' if edit else 'add'}” parameter is not valid JSON.") from None
    if not isinstance(item, dict):
        raise Refused("Each record must be a JSON object.")
    fields = {**RECORD_FIELDS, "line_index": int} if edit else RECORD_FIELDS
    for key, kind in fields.items():
        value = item.get(key)
        if value is None:
            raise Refused(f"The record is missing the “{key}” field.")
        if not isinstance(value, kind) or isinstance(value, bool):
            raise Refused(f"The record’s “{key}” field must be of type {kind.__name__}.")
    rtype = item["record_type"].upper()
    data = item["data"]
    if not data or not all(isinstance(d, str) for d in data):
        raise Refused("The record’s “data” must be a nonempty list of strings.")
    _check_data(rtype, data)
    if not 0 <= item["ttl"] <= 2147483647:
        raise Refused("The record’s “ttl” is out of range.")
    name = _owner(item["dname"], zone)
    return int(item.get("line_index", -1)), Line(
        "record", name=name, rtype=rtype, ttl=item["ttl"], data=tuple(data)
    )


def _check_data(rtype: str, data: list[str]) -> None:
    if rtype not in {"A", "AAAA", "CNAME", "TXT", "MX", "NS", "SRV", "CAA"}:
        raise Refused(f"This emulator does not handle “{rtype}” records.")
    if rtype == "A":
        try:
            ipaddress.IPv4Address(data[0])
        except ValueError:
            raise Refused(f"“{data[0]}” is not a valid IPv4 address.") from None
    if rtype == "TXT" and any(len(d.encode()) > 255 for d in data):
        raise Refused("Each TXT character-string must be at most 255 bytes long.")


def _owner(dname: str, zone: str) -> str:
    name = dname.lower()
    if name in ("@", f"{zone}."):
        return zone
    if name.endswith("."):
        name = name[:-1]
        if not name.endswith("." + zone):
            raise Refused(f"“{dname}” is not in the zone “{zone}”.")
        return name
    return f"{name}.{zone}"


def _record_at(lines: list[Line], index: int) -> None:
    if not 0 <= index < len(lines) or lines[index].kind != "record":
        raise Refused(f"The zone has no record at line index {index}.")


def _line_index(raw: str) -> int:
    if not re.fullmatch(r"\d+", raw):
        raise Refused(f"“{raw}” is not a line index.")
    return int(raw)


def _one(params: dict[str, list[str]], key: str) -> str:
    values = params.get(key)
    if not values or not values[0]:
        raise Refused(f"Missing required parameter “{key}”.")
    return values[0]


def _many(params: dict[str, list[str]], key: str) -> list[str]:
    """Every value of `key`, given repeated or as `key-1`, `key-2`, ..."""
    found = list(params.get(key, []))
    for name in sorted(params):
        if re.fullmatch(rf"{key}-\d+", name):
            found.extend(params[name])
    return found


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _envelope(function: str, data: Any, failure: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "command": function,
            "version": 1,
            "result": 0 if failure else 1,
            "reason": failure or "OK",
        },
        "data": data,
    }


def _access_denied() -> dict[str, Any]:
    # The body seen from real servers for a refused token (the API 1 form is undocumented).
    return {
        "cpanelresult": {
            "apiversion": "2",
            "error": "Access denied",
            "data": {"reason": "Access denied", "result": "0"},
            "type": "text",
        }
    }


def _injected(status: int, retry_after: float | None) -> tuple[int, Any, dict[str, str]]:
    headers = (
        {"Retry-After": f"{retry_after:g}"} if status == 429 and retry_after is not None else {}
    )
    return status, {"error": f"emulated HTTP {status}"}, headers


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this, Nagle's algorithm and the
    # client's delayed ACK hold every keep-alive answer back by about 40 ms.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        emulator: WhmEmulator = self.server.emulator  # type: ignore[attr-defined]
        status, payload, extra = emulator.handle(self.path, self.headers.get("Authorization", ""))
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass
