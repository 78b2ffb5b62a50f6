"""The one HTTP(S) connection from the agent to the control plane.

Built on http.client so the agent stays standard-library only. One persistent keep-alive
connection carries the heartbeats (a new TLS handshake every second would cost both ends far
more than the request itself); a connection the server closed while idle is reopened once.
"""

from __future__ import annotations

import errno
import http.client
import ipaddress
import json
import logging
import socket
import ssl
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import SplitResult, urlsplit

from balctl import __version__
from balctl.errors import ConfigError, TransportError

logger = logging.getLogger(__name__)

JsonDict = Dict[str, Any]

# Errors that mean "the idle keep-alive connection was closed under us": worth one retry on a
# fresh connection. Timeouts and refusals are not here: retrying those only doubles the wait.
_STALE_CONNECTION = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    http.client.CannotSendRequest,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)
_SNIPPET = 300


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_server_url(url: str) -> SplitResult:
    """Check the control plane's URL; plain http is allowed only to a loopback address."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"server URL {url[:200]!r} must look like https://serverctl.example.com")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"server URL {url[:200]!r} must not carry credentials, ?query or #part")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        raise ConfigError(f"server URL {url[:200]!r} has an invalid port") from None
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        # The bearer secret would cross the network in clear text.
        raise ConfigError(
            f"server URL {url[:200]!r} uses plain http to a non-loopback host; use https "
            "(with --ca-file for a private CA); plain http is only for 127.0.0.0/8, ::1, localhost"
        )
    return parts


def origin_key(url: str) -> str:
    """scheme://host:port with defaults filled in and case folded, for comparing origins."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        return ""
    scheme = parts.scheme.lower()
    default = {"https": 443, "http": 80}.get(scheme)
    return f"{scheme}://{(parts.hostname or '').lower()}:{port or default}"


def tls_context(ca_file: Optional[str]) -> ssl.SSLContext:
    """System CAs, or only the pinned `ca_file`; hostnames are always checked."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the CA file {ca_file}: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def describe_detail(body: Mapping[str, Any]) -> str:
    """The server's reason as one line: FastAPI's `detail` is a string or a list of errors."""
    detail = body.get("detail")
    if detail is None or detail == "":
        return "no reason given"
    if isinstance(detail, str):
        text = detail
    elif isinstance(detail, list):
        text = "; ".join(_describe_item(item) for item in detail[:5])
    else:
        text = json.dumps(detail)
    return " ".join(text.split())[:_SNIPPET]


def _describe_item(item: Any) -> str:
    if isinstance(item, dict) and "msg" in item:
        where = ".".join(str(part) for part in item.get("loc") or ())
        return f"{where}: {item['msg']}" if where else str(item["msg"])
    return str(item)


def decode_body(data: bytes) -> JsonDict:
    """The answer as a dict; anything that is not a JSON object becomes {"detail": snippet}."""
    text = data.decode("utf-8", errors="replace")
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        return parsed
    return {"detail": " ".join(text.split())[:_SNIPPET]}


class ControlPlaneClient:
    """POSTs JSON to the control plane with the agent's bearer secret."""

    def __init__(
        self,
        server_url: str,
        key: str,
        ca_file: Optional[str] = None,
        source_ip: Optional[str] = None,
        timeout: float = 10.0,
    ) -> None:
        parts = parse_server_url(server_url)
        self._https = parts.scheme == "https"
        self._host: str = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._base_path = parts.path.rstrip("/")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._context = tls_context(ca_file) if self._https else None
        self._source = (source_ip, 0) if source_ip else None
        self._timeout = timeout
        self._key = key
        self._conn: Optional[http.client.HTTPConnection] = None

    def __repr__(self) -> str:  # the default would be harmless too; this one is readable
        return f"ControlPlaneClient({self._origin!r})"

    def __enter__(self) -> ControlPlaneClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def origin(self) -> str:
        return self._origin

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def url_path(self, path: str) -> str:
        """`path` under the server URL's own path (a control plane mounted below /)."""
        return self._base_path + path

    def same_origin(self, url: str) -> bool:
        """Does `url` point at this control plane (scheme, host and port)?"""
        return origin_key(url) == origin_key(self._origin)

    def post_json(self, path: str, body: Mapping[str, Any]) -> Tuple[int, JsonDict]:
        """POST `body` to `path` under the server URL; (status, answer as a dict)."""
        payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
        headers = {
            "Authorization": f"Bearer {self._key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"balctl/{__version__}",
        }
        status, data = self._request("POST", self.url_path(path), payload, headers)
        return status, decode_body(data)

    def download(self, url_path: str, max_bytes: int) -> bytes:
        """GET `url_path` (already under the server's path) from this origin; the body of a 200.

        No bearer secret: downloads are public files (the agent zipapp and its checksum).
        """
        headers = {"Accept": "*/*", "User-Agent": f"balctl/{__version__}"}
        status, data = self._request("GET", url_path, None, headers, max_bytes)
        if status != 200:
            detail = describe_detail(decode_body(data))
            raise TransportError(f"{self._origin}{url_path} answered {status}: {detail}")
        return data

    def _request(
        self,
        method: str,
        url_path: str,
        payload: Optional[bytes],
        headers: Mapping[str, str],
        max_bytes: Optional[int] = None,
    ) -> Tuple[int, bytes]:
        for attempt in (1, 2):
            conn = self._connection()
            reused = conn.sock is not None
            try:
                conn.request(method, url_path, body=payload, headers=dict(headers))
                response = conn.getresponse()
                data = response.read() if max_bytes is None else response.read(max_bytes + 1)
            except _STALE_CONNECTION as exc:
                self.close()
                if reused and attempt == 1:
                    logger.debug("keep-alive connection was closed by the server; reconnecting")
                    continue
                raise self._error(exc) from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise self._error(exc) from exc
            if max_bytes is not None and len(data) > max_bytes:
                self.close()  # the rest of the body is still on the wire
                raise TransportError(
                    f"{self._origin}{url_path} is larger than the {max_bytes} bytes allowed"
                )
            return response.status, data
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host,
                    self._port,
                    timeout=self._timeout,
                    source_address=self._source,
                    context=self._context,
                )
            else:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout, source_address=self._source
                )
        return self._conn

    def _error(self, exc: BaseException) -> TransportError:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason += " (for a private CA, pin it with --ca-file)"
        elif isinstance(exc, socket.timeout):
            reason = f"no answer within {self._timeout:g} s"
        elif (
            self._source is not None
            and isinstance(exc, OSError)
            and exc.errno == errno.EADDRNOTAVAIL
        ):
            reason += f" (is {self._source[0]} an address of this host?)"
        return TransportError(f"cannot reach {self._origin}: {reason}")
