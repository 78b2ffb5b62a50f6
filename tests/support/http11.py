"""A minimal HTTP/1.1 keep-alive client on asyncio streams, for load generators.

It sends a POST with a body and reads a response framed by Content-Length (what uvicorn sends
for every JSON answer), on one connection reused request after request, and reconnects after
an error or a `Connection: close`. Nothing more: no redirects, no chunked bodies, no cookies.
At about a tenth of httpx's CPU per request it lets one Python process load a server with
thousands of requests a second, which httpx cannot on a small machine.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit


class HttpError(Exception):
    """The connection failed or the answer was not well-formed HTTP/1.1."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


class Http11Connection:
    def __init__(
        self, url: str, *, timeout_s: float = 10.0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or parts.hostname is None:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self.ssl = ssl_context or ssl.create_default_context()
        self.authority = parts.netloc
        self.timeout_s = timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        """POST `body` to `path`; raises HttpError on any connection or framing error."""
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.authority}"]
        lines += [f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        try:
            return await asyncio.wait_for(self._exchange(request), self.timeout_s)
        except (OSError, EOFError, asyncio.IncompleteReadError, ValueError) as exc:
            await self.close()
            raise HttpError(f"{type(exc).__name__}: {exc}") from exc
        except TimeoutError as exc:
            await self.close()
            raise HttpError(f"no answer within {self.timeout_s:g} s") from exc

    async def _exchange(self, request: bytes) -> Answer:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.ssl
            )
        assert self._reader is not None
        self._writer.write(request)
        await self._writer.drain()
        status_line = await self._reader.readline()
        if not status_line.startswith(b"HTTP/1.1 "):
            raise ValueError(f"not an HTTP/1.1 answer: {status_line[:80]!r}")
        status = int(status_line.split(b" ", 2)[1])
        length, close = None, False
        while (line := await self._reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length is None:
            raise ValueError("an answer without Content-Length")
        body = await self._reader.readexactly(length)
        if close:
            await self.close()
        return Answer(status, body)

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass
