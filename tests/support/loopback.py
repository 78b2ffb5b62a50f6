"""A real HTTP server on 127.0.0.1, served from a thread, for fakes of the agent's peers."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class LoopbackServer:
    """Serves `handler` on a free loopback port between `with` and its end; or `server`, one
    built by the caller (a TLS server, say) and already bound to loopback."""

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler] | None = None,
        server: ThreadingHTTPServer | None = None,
    ) -> None:
        if server is None:
            assert handler is not None, "give a handler or a server"
            server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server = server
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
