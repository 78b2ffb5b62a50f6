"""A throwaway CA (real openssl) and a loopback stand-in for the control plane's two TLS order
endpoints, for the agent's certificate tests."""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from agent_fakes import KEY

from support.loopback import LoopbackServer

ORDER = "/api/agents/tls/order"
STATUS = "/api/agents/tls/order/status"


def openssl(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class TestCA:
    """An EC CA in `folder` that signs CSRs, copying their SANs."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, folder: Path, name: str = "Throwaway Test CA") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        openssl(
            "req", "-x509", "-config", "/dev/null", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key",
            "-subj", f"/CN={name}", "-days", "30",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-out", "ca.pem",
            cwd=folder,
        )  # fmt: skip
        self.pem = (folder / "ca.pem").read_text()
        self._count = 0
        self._lock = threading.Lock()

    def sign(self, csr: str, days: int = 90) -> str:
        """The chain (leaf, then this CA) for `csr`."""
        with self._lock:
            self._count += 1
            stem = f"leaf{self._count}"
        (self.folder / f"{stem}.csr").write_text(csr)
        openssl(
            "x509", "-req", "-in", f"{stem}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-days", str(days), "-copy_extensions", "copy", "-out", f"{stem}.pem",
            cwd=self.folder,
        )  # fmt: skip
        return (self.folder / f"{stem}.pem").read_text() + self.pem

    def self_signed_pem(self, names: list[str], days: int) -> str:
        """A combined PEM (certificate then key) of a self-signed certificate for `names`."""
        with self._lock:
            self._count += 1
            stem = f"self{self._count}"
        openssl(
            "req", "-x509", "-config", "/dev/null", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{stem}.key",
            "-subj", f"/CN={names[0]}", "-days", str(days),
            "-addext", "subjectAltName=" + ",".join(f"DNS:{n}" for n in names),
            "-out", f"{stem}.pem",
            cwd=self.folder,
        )  # fmt: skip
        return (self.folder / f"{stem}.pem").read_text() + (self.folder / f"{stem}.key").read_text()


def serial_of(pem: str, folder: Path) -> str:
    (folder / "probe.pem").write_text(pem)
    out = openssl("x509", "-in", "probe.pem", "-noout", "-serial", cwd=folder)
    return out.strip().split("=", 1)[1].upper()


class AcmeStandIn(LoopbackServer):
    """POST /api/agents/tls/order and /status as the control plane answers them.

    `outcome` is "valid" (the CSR signed by `ca` after `pending_polls` pending answers),
    "failed" (the CA's `error`), or "pending" (never done)."""

    def __init__(self, ca: TestCA) -> None:
        self.ca = ca
        self.outcome = "valid"
        self.error = (
            "urn:ietf:params:acme:error:rateLimited: too many certificates (5) already issued"
        )
        self.pending_polls = 1
        self.chain_override: str | None = None
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.orders: dict[tuple[str, int], dict[str, Any]] = {}
        plane = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 5

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                body = json.loads(raw)
                plane.requests.append((self.path, body))
                if self.headers.get("Authorization") != f"Bearer {KEY}":
                    self._send(401, {"detail": "bad key"})
                    return
                status, answer = plane.answer(self.path, body)
                self._send(status, answer)

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler)

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        key = (body["hostname"], body["job_id"])
        if path == ORDER:
            self.orders.setdefault(key, {"csr": body["csr"], "polls": 0})
            return 202, {"state": "pending"}
        if path == STATUS:
            order = self.orders.get(key)
            if order is None:
                return 404, {"detail": "no order for this job"}
            order["polls"] += 1
            if self.outcome == "pending" or order["polls"] <= self.pending_polls:
                return 200, {"state": "pending"}
            if self.outcome == "failed":
                return 200, {"state": "failed", "error": self.error}
            if "chain" not in order:
                order["chain"] = self.chain_override or self.ca.sign(order["csr"])
            return 200, {"state": "valid", "chain": order["chain"]}
        return 404, {"detail": "Not Found"}

    def csrs(self) -> list[str]:
        return [body["csr"] for path, body in self.requests if path == ORDER]
