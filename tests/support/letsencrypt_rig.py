"""One member ready for the `letsencrypt` recipe, every part real: a `serverctl serve`, a
PowerDNS (the pool's DNS provider and the zone's authoritative server), a Pebble checking DNS-01
on it (its CA bundle in the ACME settings), a haproxy and the agent enrolled beside it, and a
TCP echo server to put behind the TLS bind of the operator's one-time step.

No pytest here: the REST end-to-end test and the browser test share it.

    with LetsEncryptRig(tmp_path) as rig:
        applied = rig.api.post(f"{rig.recipes}/letsencrypt/apply", json={}).json()
        job = rig.wait_job(applied["job_id"])
        bind = rig.add_tls_bind()  # the one-time step: ssl crt, validate, reload
        rig.wait_failover_cert(job["result"]["serial"])
"""

from __future__ import annotations

import contextlib
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self, cast

import httpx2 as httpx

from support.agent import Agent, download_zipapp
from support.haproxy import HAProxy
from support.pebble import Pebble
from support.powerdns import PowerDNS
from support.server import ServerProcess, start_server, stop_process
from support.util import free_port, wait_until

MEMBER_IP = "127.0.0.2"
HOSTNAME = "edge-1"
LABEL = "lb"
FQDN = "lb.demo.example"
PEM_PATH = f"/etc/haproxy/certs/{FQDN}.pem"
# The stats enrichment (which carries the `certificates` inventory) every second, not every 5:
# an installed PEM shows in the inventory at the next heartbeat.
AGENT_ENV = {"BALCTL_STATS_INTERVAL_S": "1"}
TLS_FRONTEND = """
frontend tls
    mode tcp
    bind {bind} ssl crt {pem}
    default_backend echo

backend echo
    mode tcp
    server echo {echo}
"""


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(4096):
                self.request.sendall(data)
        except OSError:
            pass  # haproxy hung up (a health check, a reload)


class LetsEncryptRig:
    """The world of the recipe under `root`: `api` is an admin's client, `member_url` the
    member's API path, `pem` the failover PEM on the host, `echo` the backend's host:port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._stack = contextlib.ExitStack()
        self.pdns: PowerDNS
        self.pebble: Pebble
        self.server: ServerProcess
        self.api: httpx.Client
        self.haproxy: HAProxy
        self.agent: Agent
        self.pool: dict[str, Any]
        self.member: dict[str, Any]
        self.echo: str

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    # -- where things are -----------------------------------------------------------------------

    @property
    def pool_url(self) -> str:
        return f"/api/pools/{self.pool['id']}"

    @property
    def member_url(self) -> str:
        return f"{self.pool_url}/members/{self.member['id']}"

    @property
    def recipes(self) -> str:
        return f"{self.member_url}/recipes"

    @property
    def pem(self) -> Path:
        return self.root / "host" / PEM_PATH.lstrip("/")

    # -- set-up ---------------------------------------------------------------------------------

    def _start(self) -> None:
        stack = self._stack
        self.echo = stack.enter_context(_echo_server())
        self.pdns = stack.enter_context(PowerDNS(self.root / "pdns"))
        self.pebble = stack.enter_context(Pebble(self.root / "pebble", self.pdns.nameserver))
        self.server = start_server(self.root / "cp")
        stack.callback(stop_process, self.server.process)
        self.api = self.server.api()
        stack.callback(self.api.close)
        host = self.root / "host"
        self.haproxy = HAProxy(HOSTNAME, host, f"{MEMBER_IP}:{free_port(MEMBER_IP)}")
        self.haproxy.start()
        stack.callback(self.haproxy.kill)

        self._expect(
            200,
            "PUT",
            "/api/settings/acme",
            {
                "directory_url": self.pebble.directory_url,
                "email": "ops@demo.example",
                "ca_bundle": self.pebble.ca_bundle_pem,
            },
        )
        provider = self.add_provider("pdns", self.pdns.powerdns_config())
        self.pool = self._expect(201, "POST", "/api/pools", {"name": "edge"})
        self.member = self._expect(
            201,
            "POST",
            f"{self.pool_url}/members",
            {"hostname": HOSTNAME, "allowed_ips": [MEMBER_IP]},
        )
        self.link_dns(provider["id"])

        pyz = download_zipapp(self.server.url, self.root / "balctl.pyz")
        env = {"BALCTL_HAPROXY_PIDFILE": str(self.haproxy.pidfile), **AGENT_ENV}
        self.agent = Agent(pyz, host, env=env)
        enrolled = self.agent.enrol(
            self.server.url, self.member["secret"], HOSTNAME, "--source-ip", MEMBER_IP
        )
        assert enrolled.returncode == 0, enrolled.stderr
        self.agent.start()
        stack.callback(self.agent.stop)
        wait_until(
            lambda: self.api.get(self.member_url).json()["health"]["state"] == "healthy",
            15,
            what="healthy",
        )

    def _expect(self, status: int, method: str, path: str, body: Any = None) -> Any:
        answer = self.api.request(method, path, json=body)
        assert answer.status_code == status, f"{method} {path}: {answer.text}"
        return answer.json()

    def add_provider(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        body = {"name": name, "kind": "powerdns", "config": config}
        return cast(dict[str, Any], self._expect(201, "POST", "/api/dns-providers", body))

    def link_dns(self, provider_id: int) -> dict[str, Any]:
        """The pool's DNS link: the provider, the zone, the failover label (`lb`)."""
        body = {"provider_id": provider_id, "zone": self.pdns.zone, "label": LABEL, "ttl": 60}
        return cast(dict[str, Any], self._expect(200, "PUT", f"{self.pool_url}/dns", body))

    # -- jobs -----------------------------------------------------------------------------------

    def queue(self, job_type: str, params: dict[str, Any] | None = None) -> int:
        body: dict[str, Any] = {"type": job_type}
        if params is not None:
            body["params"] = params
        return int(self._expect(202, "POST", f"{self.member_url}/jobs", body)["job_id"])

    def wait_job(self, job_id: int, timeout: float = 120) -> dict[str, Any]:
        """The job once it has ended; on a timeout, the agent's and serverctl's logs."""

        def done() -> dict[str, Any] | None:
            job: dict[str, Any] = self.api.get(f"/api/jobs/{job_id}").json()
            return job if job["state"] not in ("pending", "running") else None

        try:
            job = wait_until(done, timeout, interval=0.5, what=f"job {job_id} to finish")
            return cast(dict[str, Any], job)
        except AssertionError:
            raise AssertionError(
                f"{self.agent.log()[-3000:]}\n--- serverctl\n{self.server.log()[-3000:]}"
            ) from None

    def recipe(self) -> dict[str, Any]:
        """The `letsencrypt` recipe as the recipes API shows it for the member."""
        items = self.api.get(self.recipes).json()["items"]
        return cast(dict[str, Any], next(r for r in items if r["id"] == "letsencrypt"))

    def add_tls_bind(self) -> str:
        """The operator's one-time step: a TLS bind with `ssl crt <pem>` in front of the echo
        server, validated and reloaded through jobs. Returns the bind's host:port."""
        bind = f"{MEMBER_IP}:{free_port(MEMBER_IP)}"
        with self.haproxy.config.open("a") as config:
            config.write(TLS_FRONTEND.format(bind=bind, pem=self.pem, echo=self.echo))
        for step in ("haproxy.validate", "haproxy.reload"):
            job = self.wait_job(self.queue(step))
            assert job["state"] == "completed", job
        return bind

    # -- the inventory --------------------------------------------------------------------------

    def certificates(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._expect(200, "GET", f"{self.pool_url}/certificates"))

    def wait_failover_cert(self, serial: str, timeout: float = 30, **expect: Any) -> dict[str, Any]:
        """The member's failover certificate in `GET /api/pools/{id}/certificates` once the
        agent reports the one with `serial` (hex, as a job's result gives it) and the `expect`
        fields (e.g. referenced=True)."""

        def reported() -> dict[str, Any] | None:
            for cert in self.certificates()["items"]:
                if (
                    cert["failover_cert"]
                    and cert["serial"] is not None
                    and int(cert["serial"], 16) == int(serial, 16)
                    and all(cert.get(k) == v for k, v in expect.items())
                ):
                    return cast(dict[str, Any], cert)
            return None

        cert = wait_until(reported, timeout, interval=0.3, what=f"certificate {serial} reported")
        return cast(dict[str, Any], cert)


@contextlib.contextmanager
def _echo_server() -> Iterator[str]:
    """A plain TCP echo server: the backend behind the TLS bind (TCP mode, so a reload leaves
    an open connection alone, as with any long-lived client)."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
