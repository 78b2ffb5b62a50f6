"""Uploads and downloads of archives against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from agent_backup_tree import sha
from agent_fakes import KEY

from balctl.config import AgentConfig
from balctl.errors import ParamError
from balctl.proc import Deadline
from balctl.transfer import TransferError, TransferSpec, check_spec, download, upload
from support.loopback import LoopbackServer

SECRET_QUERY = "X-Amz-Signature=deadbeefcafe"


class Store(LoopbackServer):
    """Keeps what is PUT, serves what it has; `answer` forces a status and body."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.answer: tuple[int, bytes] | None = None
        self.lie_length = False
        store = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                store.seen.append(("PUT", self.path, self._headers()))
                store.objects[self.path.split("?")[0]] = body
                self._reply(*(store.answer or (200, b"")))

            def do_GET(self) -> None:
                store.seen.append(("GET", self.path, self._headers()))
                data = store.objects.get(self.path.split("?")[0])
                if store.answer or data is None:
                    self._reply(*(store.answer or (404, b'{"detail": "no such object"}')))
                    return
                self.send_response(200)
                if not store.lie_length:
                    self.send_header("Content-Length", str(len(data)))
                else:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def _headers(self) -> dict[str, str]:
                return {k.lower(): v for k, v in self.headers.items()}

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler)


@pytest.fixture
def store() -> Iterator[Store]:
    with Store() as running:
        yield running


def _cfg(store: Store) -> AgentConfig:
    return AgentConfig(server=store.url + "/base", key=KEY, hostname="edge-1")


def _url_spec(store: Store, method: str, key: str = "/bucket/a.tar.gz") -> TransferSpec:
    raw: dict[str, Any] = {"method": method, "url": f"{store.url}{key}?{SECRET_QUERY}"}
    if method == "PUT":
        raw["headers"] = {"Content-Type": "application/gzip"}
    return check_spec(raw, method, "upload" if method == "PUT" else "download")


def test_upload_to_a_url_streams_the_file_with_its_headers(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "a.tar.gz"
    source.write_bytes(b"\x1f\x8b" + b"z" * 200_000)
    moved = upload(_cfg(store), _url_spec(store, "PUT"), source, 10**6, Deadline(30))
    assert moved.size == 200_002 and moved.sha256 == sha(source.read_bytes())
    assert moved.where == f"{store.url}/bucket/a.tar.gz"
    assert store.objects["/bucket/a.tar.gz"] == source.read_bytes()
    method, path, headers = store.seen[0]
    assert path == f"/bucket/a.tar.gz?{SECRET_QUERY}"
    assert headers["content-type"] == "application/gzip"
    assert "authorization" not in headers  # the store never sees the agent's secret


def test_upload_through_the_control_plane_sends_the_agent_credentials(
    store: Store, tmp_path: Path
) -> None:
    source = tmp_path / "a.tar.gz"
    source.write_bytes(b"archive")
    spec = check_spec(
        {"method": "PUT", "path": "/api/agents/backups/transfer/tok123"}, "PUT", "upload"
    )
    moved = upload(_cfg(store), spec, source, 100, Deadline(30))
    _, path, headers = store.seen[0]
    assert path == "/base/api/agents/backups/transfer/tok123"
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["x-balctl-hostname"] == "edge-1"
    assert "tok123" not in moved.where
    assert moved.where == f"{store.url}/base/api/agents/backups/transfer/<token>"


def test_a_refused_upload_names_the_store_reason_but_never_the_signature(
    store: Store, tmp_path: Path
) -> None:
    source = tmp_path / "a.tar.gz"
    source.write_bytes(b"archive")
    store.answer = (
        403,
        b"<Error><Code>SignatureDoesNotMatch</Code><Message>Bad signature</Message>"
        b"<SignatureProvided>deadbeefcafe</SignatureProvided></Error>",
    )
    with pytest.raises(TransferError) as caught:
        upload(_cfg(store), _url_spec(store, "PUT"), source, 100, Deadline(30))
    message = str(caught.value)
    assert message == (
        f"upload to {store.url}/bucket/a.tar.gz answered 403: SignatureDoesNotMatch: Bad signature"
    )
    assert "deadbeef" not in message


def test_an_archive_over_the_bound_is_not_sent(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "a.tar.gz"
    source.write_bytes(b"x" * 101)
    with pytest.raises(TransferError, match="101 bytes, more than the 100 allowed"):
        upload(_cfg(store), _url_spec(store, "PUT"), source, 100, Deadline(30))
    assert store.seen == []


def test_download_streams_into_a_new_file_and_hashes_it(store: Store, tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    store.objects["/bucket/a.tar.gz"] = data
    dest = tmp_path / "got.tar.gz"
    moved = download(_cfg(store), _url_spec(store, "GET"), dest, len(data), Deadline(30))
    assert dest.read_bytes() == data
    assert (moved.size, moved.sha256) == (len(data), sha(data))
    with pytest.raises(TransferError, match="File exists"):
        download(_cfg(store), _url_spec(store, "GET"), dest, len(data), Deadline(30))


@pytest.mark.parametrize("lie", [False, True])
def test_download_past_the_bound_is_refused(store: Store, tmp_path: Path, lie: bool) -> None:
    store.objects["/bucket/a.tar.gz"] = b"x" * 1000
    store.lie_length = lie  # no Content-Length: the bound is kept while reading
    with pytest.raises(TransferError, match="more than the snapshot's 999") as caught:
        download(_cfg(store), _url_spec(store, "GET"), tmp_path / "x", 999, Deadline(30))
    assert SECRET_QUERY not in str(caught.value)


def test_download_errors_say_where_without_the_query(store: Store, tmp_path: Path) -> None:
    with pytest.raises(TransferError) as caught:
        download(_cfg(store), _url_spec(store, "GET"), tmp_path / "x", 10, Deadline(30))
    assert str(caught.value) == (
        f"download from {store.url}/bucket/a.tar.gz answered 404: no such object"
    )
    spec = check_spec({"method": "GET", "url": f"http://127.0.0.1:9/k?{SECRET_QUERY}"}, "GET", "d")
    with pytest.raises(TransferError, match=r"^cannot download from http://127.0.0.1:9/k: ") as e:
        download(_cfg(store), spec, tmp_path / "y", 10, Deadline(30))
    assert SECRET_QUERY not in str(e.value)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"method": "GET", "url": "https://s3.example/k"}, "upload.method must be 'PUT'"),
        ({"method": "PUT"}, "either url or path"),
        ({"method": "PUT", "url": "https://a/k", "path": "/p"}, "either url or path"),
        ({"method": "PUT", "url": "http://s3.example.com/k?sig"}, "plain http to a non-loopback"),
        ({"method": "PUT", "url": "ftp://a/k"}, "absolute http"),
        ({"method": "PUT", "url": "https://u:p@a/k"}, "user:password"),
        ({"method": "PUT", "path": "relative"}, "absolute path on the control plane"),
        ({"method": "PUT", "path": "//evil.example/x"}, "absolute path on the control plane"),
        ({"method": "PUT", "path": "/a/../b"}, "'..' parts"),
        ({"method": "PUT", "path": "/a", "extra": 1}, "unknown field"),
        ({"method": "PUT", "path": "/a", "headers": {"Authorization": "x"}}, "may not set"),
        ({"method": "PUT", "path": "/a", "headers": {"X-A": "1\r\nX-B: 2"}}, "one line"),
        ({"method": "PUT", "path": "/a", "headers": []}, "must be an object"),
        ("nope", "must be a JSON object"),
    ],
)
def test_transfer_blocks_are_checked_strictly(raw: Any, match: str) -> None:
    with pytest.raises(ParamError, match=match):
        check_spec(raw, "PUT", "upload")
