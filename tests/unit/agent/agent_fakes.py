"""A loopback control plane and test data shared by the agent's unit tests."""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from support.loopback import LoopbackServer

KEY = "k" * 40 + "SECRET42"


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=lambda: {"ok": True, "jobs": []})
    raw: bytes | None = None  # sent as is, as text/plain, instead of JSON
    drop_after: bool = False  # close the connection after answering, without saying so


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    json: Any
    client_port: int


class FakeControlPlane(LoopbackServer):
    """A real HTTP/1.1 server on 127.0.0.1 that records requests and answers from `replies`."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.replies: list[Reply] = []
        self.default = Reply()
        plane = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the agent expects
            timeout = 5

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                plane.requests.append(
                    Seen(
                        "POST",
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        json.loads(raw) if raw else None,
                        self.client_address[1],
                    )
                )
                reply = plane.replies.pop(0) if plane.replies else plane.default
                data = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
                kind = "text/plain" if reply.raw is not None else "application/json"
                self.send_response(reply.status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                if reply.drop_after:
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler)


SRC = Path(__file__).resolve().parents[3] / "src" / "balctl"


def build_pyz(version_suffix: str = "") -> bytes:
    """The agent zipapp from this source tree, as the control plane builds it."""
    buffer = io.BytesIO()
    buffer.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("__main__.py", "from balctl.cli import main\n\nraise SystemExit(main())\n")
        for path in sorted(SRC.rglob("*.py")):
            text = path.read_text()
            if version_suffix and path == SRC / "__init__.py":
                new = rf'__version__ = "\1{version_suffix}"'
                text = re.sub(r'__version__ = "([^"]+)"', new, text)
            archive.writestr(f"balctl/{path.relative_to(SRC).as_posix()}", text)
    return buffer.getvalue()


class FileServer(LoopbackServer):
    """A loopback HTTP server for GET downloads: `files` maps a path to its bytes."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.seen: list[tuple[str, dict[str, str]]] = []
        served = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                served.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                data = served.files.get(self.path)
                status = 200 if data is not None else 404
                data = data if data is not None else b'{"detail": "Not Found"}'
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler)
