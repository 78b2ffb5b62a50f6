"""Moving a snapshot's archive: upload (PUT) or download (GET), streamed, bounded and hashed.

A job's `upload` / `download` block (docs/backups.md) carries either
- `url`: a presigned URL of the store (S3), called directly: https with the system's CAs, plain
  http only to a loopback host (the same rule as transport.py); or
- `path`: a one-time path on the control plane, called with the agent's own settings (server
  URL, CA file, source address) and credentials (bearer secret, X-Balctl-Hostname).

The presigned query string and the one-time path's token are credentials: an error message or
a log line names only scheme://host/path (the token replaced by "<token>").
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import ssl
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO, Dict, List, Mapping, NamedTuple, Optional
from urllib.parse import urlsplit

from balctl import __version__
from balctl.config import AgentConfig
from balctl.errors import ConfigError, JobError, ParamError
from balctl.jobs import params as p
from balctl.proc import Deadline
from balctl.transport import (
    decode_body,
    describe_detail,
    is_loopback_host,
    parse_server_url,
    tls_context,
)

CHUNK = 64 * 1024
MAX_HEADERS = 16
# One socket operation (connect, one read or write) may wait this long; the job's deadline
# bounds the whole transfer.
IO_TIMEOUT_S = 60.0
_ERROR_BODY = 64 * 1024
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")
# Set by the agent itself, never by the job.
_RESERVED = frozenset(
    {"authorization", "x-balctl-hostname", "host", "content-length", "transfer-encoding"}
)
_XML_FIELD = re.compile(r"<(Code|Message)>([^<]{0,300})</\1>")


class TransferError(JobError):
    """The archive could not be moved; the message names the place without its credentials."""


# The default of TransferSpec.headers: one shared value, so it must be read-only.
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class TransferSpec(NamedTuple):
    method: str
    url: Optional[str] = None
    path: Optional[str] = None
    headers: Mapping[str, str] = _NO_HEADERS


class Moved(NamedTuple):
    size: int
    sha256: str
    where: str


def check_spec(raw: Any, method: str, key: str) -> TransferSpec:
    """Strict check of an `upload` (PUT) or `download` (GET) block; ParamError names the field."""
    if not isinstance(raw, dict):
        raise ParamError(f"{key} must be a JSON object")
    unknown = sorted(set(raw) - {"method", "url", "path", "headers"})
    if unknown:
        raise ParamError(f"{key} has unknown field(s) {', '.join(unknown)}")
    if raw.get("method") != method:
        raise ParamError(f"{key}.method must be {method!r}")
    if ("url" in raw) == ("path" in raw):
        raise ParamError(f"{key} must carry either url or path, not both or neither")
    headers = _check_headers(raw.get("headers", {}), key)
    if "url" in raw:
        url = p.string(raw, "url", p.MAX_URL)
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ParamError(f"{key}.url must be an absolute http(s) URL")
        if parts.username or parts.password or parts.fragment:
            raise ParamError(f"{key}.url must not carry user:password@ or a #fragment")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ParamError(
                f"{key}.url {describe_url(url)} uses plain http to a non-loopback host; "
                "only https is allowed there"
            )
        return TransferSpec(method, url=url, headers=headers)
    path = p.string(raw, "path", p.MAX_URL)
    if not path.startswith("/") or path.startswith("//") or any(c in path for c in "?#\\ "):
        raise ParamError(f"{key}.path must be an absolute path on the control plane")
    if ".." in path.split("/"):
        raise ParamError(f"{key}.path must not have '..' parts")
    return TransferSpec(method, path=path, headers=headers)


def _check_headers(raw: Any, key: str) -> Dict[str, str]:
    if not isinstance(raw, dict) or len(raw) > MAX_HEADERS:
        raise ParamError(f"{key}.headers must be an object of at most {MAX_HEADERS} headers")
    headers: Dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ParamError(f"{key}.headers has an invalid header name {str(name)[:64]!r}")
        if name.lower() in _RESERVED:
            raise ParamError(f"{key}.headers may not set {name}: the agent sets it")
        if not isinstance(value, str) or len(value) > 1024 or any(ord(c) < 0x20 for c in value):
            raise ParamError(f"{key}.headers[{name}] must be one line of text")
        headers[name] = value
    return headers


def describe_url(url: str) -> str:
    """scheme://host/path: never the query string, which holds a presigned URL's signature."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _redact_path(path: str) -> str:
    """A one-time path without its last segment (the token)."""
    head, _, _ = path.rpartition("/")
    return f"{head}/<token>"


class _Target:
    __slots__ = ("conn", "request_path", "headers", "where")

    def __init__(
        self,
        conn: http.client.HTTPConnection,
        request_path: str,
        headers: Dict[str, str],
        where: str,
    ) -> None:
        self.conn = conn
        self.request_path = request_path
        self.headers = headers
        self.where = where


def _target(cfg: AgentConfig, spec: TransferSpec, timeout: float) -> _Target:
    headers = {"User-Agent": f"balctl/{__version__}", **spec.headers}
    if spec.url is not None:
        parts = urlsplit(spec.url)
        host = parts.hostname or ""
        request_path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(
                host,
                parts.port or 443,
                timeout=timeout,
                context=ssl.create_default_context(),
                blocksize=CHUNK,
            )
        else:
            conn = http.client.HTTPConnection(
                host, parts.port or 80, timeout=timeout, blocksize=CHUNK
            )
        return _Target(conn, request_path, headers, describe_url(spec.url))
    assert spec.path is not None
    try:
        server = parse_server_url(cfg.server)
    except ConfigError as exc:
        raise TransferError(str(exc)) from exc
    origin = f"{server.scheme}://{server.netloc}"
    request_path = server.path.rstrip("/") + spec.path
    source = (cfg.source_ip, 0) if cfg.source_ip else None
    if server.scheme == "https":
        conn = http.client.HTTPSConnection(
            server.hostname or "",
            server.port or 443,
            timeout=timeout,
            source_address=source,
            context=tls_context(cfg.ca_file),
            blocksize=CHUNK,
        )
    else:
        conn = http.client.HTTPConnection(
            server.hostname or "",
            server.port or 80,
            timeout=timeout,
            source_address=source,
            blocksize=CHUNK,
        )
    headers["Authorization"] = f"Bearer {cfg.key}"
    headers["X-Balctl-Hostname"] = cfg.hostname
    return _Target(conn, request_path, headers, origin + _redact_path(request_path))


def _timeout(deadline: Deadline) -> float:
    left = deadline.remaining()
    if left <= 0:
        raise TransferError("the job's time limit was reached before the transfer")
    return max(1.0, min(IO_TIMEOUT_S, left))


class _HashingReader:
    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data


def upload(
    cfg: AgentConfig, spec: TransferSpec, source: Path, max_bytes: int, deadline: Deadline
) -> Moved:
    """PUT the file `source`; its size and SHA-256 as sent. TransferError when refused."""
    size = source.stat().st_size
    if size > max_bytes:
        raise TransferError(
            f"the archive is {size} bytes, more than the {max_bytes} allowed for this snapshot"
        )
    target = _target(cfg, spec, _timeout(deadline))
    headers = {**target.headers, "Content-Length": str(size)}
    headers.setdefault("Content-Type", "application/gzip")
    try:
        with open(source, "rb") as handle:
            reader = _HashingReader(handle)
            try:
                target.conn.request(spec.method, target.request_path, reader, headers)
                with target.conn.getresponse() as response:
                    status, body = response.status, response.read(_ERROR_BODY)
            except (OSError, http.client.HTTPException) as exc:
                raise TransferError(f"cannot upload to {target.where}: {_reason(exc)}") from None
    finally:
        target.conn.close()
    if status not in (200, 201, 204):
        raise TransferError(f"upload to {target.where} answered {status}: {_describe_body(body)}")
    if reader.size != size:
        raise TransferError(f"the archive changed while it was uploaded to {target.where}")
    return Moved(size, reader.digest.hexdigest(), target.where)


def download(
    cfg: AgentConfig, spec: TransferSpec, dest: Path, max_bytes: int, deadline: Deadline
) -> Moved:
    """GET into the new file `dest` (at most `max_bytes`); its size and SHA-256."""
    target = _target(cfg, spec, _timeout(deadline))
    digest = hashlib.sha256()
    size = 0
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    opened: List[http.client.HTTPResponse] = []
    try:
        target.conn.request(spec.method, target.request_path, headers=target.headers)
        response = target.conn.getresponse()
        opened.append(response)
        if response.status != 200:
            body = response.read(_ERROR_BODY)
            raise TransferError(
                f"download from {target.where} answered {response.status}: {_describe_body(body)}"
            )
        declared = response.getheader("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise TransferError(
                f"{target.where} sends {declared} bytes, more than the snapshot's {max_bytes}"
            )
        with os.fdopen(os.open(dest, flags, 0o600), "wb") as out:
            while True:
                if deadline.expired:
                    raise TransferError(f"the download from {target.where} ran out of time")
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_bytes:
                    raise TransferError(
                        f"{target.where} sent more than the snapshot's {max_bytes} bytes"
                    )
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except (OSError, http.client.HTTPException) as exc:
        raise TransferError(f"cannot download from {target.where}: {_reason(exc)}") from None
    finally:
        for response in opened:
            response.close()
        target.conn.close()
    return Moved(size, digest.hexdigest(), target.where)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"{exc.verify_message or exc} (the certificate is not trusted)"
    text = str(exc) or type(exc).__name__
    # Never echo a URL back: some errors quote the request line.
    return re.sub(r"\?\S*", "?<query>", text)[:300]


def _describe_body(body: bytes) -> str:
    """The store's or control plane's reason, without anything it may echo of the request."""
    text = body.decode("utf-8", errors="replace")
    fields = dict(_XML_FIELD.findall(text))
    if fields:
        return ": ".join(v for v in (fields.get("Code"), fields.get("Message")) if v)
    return re.sub(r"\?\S*", "?<query>", describe_detail(decode_body(body)))
