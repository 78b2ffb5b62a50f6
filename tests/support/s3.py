"""A real S3 API server on 127.0.0.1: moto in server mode, in a thread of the test process.

    with MotoS3() as s3:
        s3.create_bucket("haproxy-backups")
        s3.settings("haproxy-backups")  # the settings of an S3 store for it
        s3.secrets()                    # and its credentials
        s3.client()                     # a boto3 client of the test's own

moto stores what it is sent but checks no signature (it does only when its IAM emulation is
switched on, and never for presigned URLs). A front layer here does what S3 does instead:
every request must carry a valid AWS Signature V4 made with the server's one access key, in the
Authorization header or in a presigned URL's query (which also must not have expired).
Anonymous, tampered, expired or wrongly signed requests get S3's 403 answers.

No real AWS is involved: clients get this server's endpoint and explicit fake credentials, so
boto3 looks none up. moto keeps its buckets in the memory of the process, not of the server, so
run one MotoS3 at a time in a test process (each starts and ends empty).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import quote, unquote
from xml.sax.saxutils import escape

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer
from werkzeug.serving import BaseWSGIServer

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ACCESS_KEY_ID = "AKIASERVERCTLTEST001"
SECRET_ACCESS_KEY = "serverctl-test-secret/0123456789abcdefABCDEF"
REGION = "us-east-1"

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]+)"
)


class SigV4Gate:
    """WSGI middleware: S3's Signature V4 checks in front of moto (see the module docstring)."""

    def __init__(self, app: WSGIApp, keys: dict[str, str]) -> None:
        self.app = app
        self.keys = keys

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/moto-api"):
            return self.app(environ, start_response)  # the fixture's own controls
        refusal = self._refusal(environ)
        if refusal is None:
            return self.app(environ, start_response)
        code, message = refusal
        body = b"" if environ.get("REQUEST_METHOD") == "HEAD" else _error_xml(code, message)
        start_response(
            "403 Forbidden",
            [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))],
        )
        return [body]

    def _refusal(self, environ: Environ) -> tuple[str, str] | None:
        raw_path, _, raw_query = _raw_uri(environ).partition("?")
        query = _parse_query(raw_query)
        header = environ.get("HTTP_AUTHORIZATION")
        if header:
            match = _AUTH.match(header)
            if match is None:
                return "AccessDenied", "Unsupported Authorization header"
            credential, signed, signature = match.group("credential", "signed", "signature")
            amz_date = environ.get("HTTP_X_AMZ_DATE", "")
            payload = environ.get("HTTP_X_AMZ_CONTENT_SHA256", "")
            if not payload:
                return (
                    "InvalidRequest",
                    "Missing required header for this request: x-amz-content-sha256",
                )
        elif "X-Amz-Signature" in query:
            credential = query.get("X-Amz-Credential", "")
            signed = query.get("X-Amz-SignedHeaders", "")
            signature = query["X-Amz-Signature"]
            amz_date = query.get("X-Amz-Date", "")
            payload = "UNSIGNED-PAYLOAD"
            expired = _expired(amz_date, query.get("X-Amz-Expires", ""))
            if expired:
                return "AccessDenied", expired
        else:
            return "AccessDenied", "Access Denied"
        key_id, _, scope = credential.partition("/")
        secret = self.keys.get(key_id)
        if secret is None:
            return (
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
            )
        canonical = "\n".join(
            [
                environ.get("REQUEST_METHOD", "GET"),
                raw_path,
                _canonical_query(query),
                "".join(f"{name}:{_header(environ, name)}\n" for name in signed.split(";")),
                signed,
                payload,
            ]
        )
        expected = _signature(secret, scope, amz_date, canonical)
        if not hmac.compare_digest(expected, signature):
            return (
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you "
                "provided. Check your key and signing method.",
            )
        return None


class MotoS3:
    """moto's S3 server on a free loopback port behind the SigV4 gate; `reset` on start and
    stop, since moto keeps its buckets in the process's memory."""

    def __init__(self) -> None:
        self.access_key_id = ACCESS_KEY_ID
        self.secret_access_key = SECRET_ACCESS_KEY
        self.region = REGION
        # Port 0: the system picks a free one, with no window for another process to take it.
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint_url = ""

    def start(self) -> Self:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        # The werkzeug server moto made: its handlers call `server.app` for every request.
        wsgi = self._server._server
        assert isinstance(wsgi, BaseWSGIServer)
        wsgi.app = SigV4Gate(wsgi.app, {self.access_key_id: self.secret_access_key})
        self.reset()
        return self

    def stop(self) -> None:
        try:
            self.reset()
        finally:
            self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every bucket and object (moto's state is per process, not per server)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200

    def client(
        self, secret_access_key: str | None = None, access_key_id: str | None = None
    ) -> S3Client:
        """A boto3 client of this server (other credentials: to see them refused)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=access_key_id or self.access_key_id,
            aws_secret_access_key=secret_access_key or self.secret_access_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def settings(self, bucket: str, prefix: str = "serverctl") -> dict[str, Any]:
        return {
            "bucket": bucket,
            "prefix": prefix,
            "region": self.region,
            "endpoint_url": self.endpoint_url,
        }

    def secrets(self) -> dict[str, str]:
        return {"access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key}


@pytest.fixture
def moto_s3() -> Iterator[MotoS3]:
    """A fresh S3 server for one test, with no buckets; stopped after it."""
    with MotoS3() as server:
        yield server


# -- Signature V4, written from AWS's description (not with botocore's signer, which made the
# -- signature being checked) ------------------------------------------------------------------


def _raw_uri(environ: Environ) -> str:
    # werkzeug keeps the request target as sent: the signature covers the encoded path.
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return str(raw)
    query = environ.get("QUERY_STRING")
    return quote(environ.get("PATH_INFO", "")) + (f"?{query}" if query else "")


def _parse_query(raw: str) -> dict[str, str]:
    out = {}
    for pair in raw.split("&") if raw else []:
        name, _, value = pair.partition("=")
        out[unquote(name)] = unquote(value)
    return out


def _canonical_query(query: dict[str, str]) -> str:
    pairs = sorted(
        (quote(name, safe="-_.~"), quote(value, safe="-_.~"))
        for name, value in query.items()
        if name != "X-Amz-Signature"
    )
    return "&".join(f"{name}={value}" for name, value in pairs)


def _header(environ: Environ, name: str) -> str:
    if name == "content-type":
        value = environ.get("CONTENT_TYPE", "")
    elif name == "content-length":
        value = environ.get("CONTENT_LENGTH", "")
    else:
        value = environ.get("HTTP_" + name.upper().replace("-", "_"), "")
    return " ".join(str(value).split())


def _signature(secret: str, scope: str, amz_date: str, canonical: str) -> str:
    day, region, service, _ = (scope.split("/") + ["", "", "", ""])[:4]
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = f"AWS4{secret}".encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def _expired(amz_date: str, expires: str) -> str | None:
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        lifetime = int(expires)
    except ValueError:
        return "X-Amz-Date or X-Amz-Expires is missing or malformed"
    if datetime.now(UTC) > signed_at + timedelta(seconds=lifetime):
        return "Request has expired"
    return None


def _error_xml(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        "<RequestId>serverctl-test</RequestId></Error>"
    ).encode()
