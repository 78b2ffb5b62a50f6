"""A small real fleet on one machine: a control plane, a PowerDNS authoritative server, and
members that each run a real agent beside a real haproxy on their own loopback address.

No pytest here: the end-to-end tests, bench/failover.py and `make demo` all build on it.

    with Fleet(root, server) as fleet:
        fleet.add_member("edge-1", "127.0.0.2")
        fleet.add_member("edge-2", "127.0.0.3")
        fleet.link_dns()
        fleet.members[0].haproxy.kill()
        fleet.wait_for_answer("127.0.0.3")
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx2 as httpx

from support.agent import Agent, download_zipapp
from support.haproxy import HAProxy
from support.powerdns import PowerDNS
from support.server import ServerProcess
from support.tls import write_site_cert
from support.util import free_port, wait_until

# The agent's heartbeat cadence, stats enrichment and HAProxy probe in the fleet.
AGENT_ENV = {"BALCTL_STATS_INTERVAL_S": "5", "BALCTL_PROBE_INTERVAL_S": "0.1"}


@dataclass
class FleetMember:
    hostname: str
    ip: str
    id: int
    secret: str
    haproxy: HAProxy
    agent: Agent

    def start(self) -> None:
        if not self.haproxy.alive():
            self.haproxy.start()
        if self.agent.process is None or self.agent.process.poll() is not None:
            self.agent.start()

    def stop(self) -> None:
        self.agent.stop()
        self.haproxy.kill()


@dataclass
class Fleet:
    root: Path
    server: ServerProcess
    pool_name: str = "edge"
    zone: str = "demo.example"
    label: str = "lb"
    members: list[FleetMember] = field(default_factory=list)
    pdns: PowerDNS | None = None
    api: httpx.Client | None = None
    pool: dict[str, Any] = field(default_factory=dict)
    provider: dict[str, Any] = field(default_factory=dict)
    _pyz: Path | None = None
    # Hosts live under a short path: haproxy refuses admin socket paths over 97 characters,
    # which deep pytest temporary directories exceed.
    _hosts: Path | None = None

    def __enter__(self) -> Self:
        self.root.mkdir(parents=True, exist_ok=True)
        self._hosts = Path(tempfile.mkdtemp(prefix="fleet-"))
        self.pdns = self._dns_server()
        self.pdns.start()
        self.api = self.server.api()
        self.pool = self.call("POST", "/api/pools", {"name": self.pool_name, "template": "haproxy"})
        self._pyz = download_zipapp(
            self.server.url, self.root / "balctl.pyz", verify=self.server.verify
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for member in self.members:
            member.stop()
        if self.pdns is not None:
            self.pdns.stop()
        if self.api is not None:
            self.api.close()
        if self._hosts is not None:
            shutil.rmtree(self._hosts, ignore_errors=True)

    # -- where things run: loopback here; support.netns_fleet puts them in namespaces ----------

    def _dns_server(self) -> PowerDNS:
        return PowerDNS(self.root / "pdns", zone=self.zone)

    def _host_launcher(self, hostname: str, ip: str) -> list[str]:
        """The argv prefix that runs a member's processes on its host: none on loopback."""
        return []

    def _port(self, ip: str) -> int:
        return free_port(ip)

    def _enrol_options(self, ip: str) -> list[str]:
        return ["--source-ip", ip]

    # -- building -------------------------------------------------------------------------------

    def call(self, method: str, path: str, body: Any = None, expect: int | None = None) -> Any:
        assert self.api is not None
        answer = self.api.request(method, path, json=body)
        if expect is not None:
            assert answer.status_code == expect, (answer.status_code, answer.text)
        elif answer.status_code >= 400:
            raise AssertionError(f"{method} {path}: {answer.status_code} {answer.text}")
        return answer.json() if answer.content else None

    @property
    def pool_url(self) -> str:
        return f"/api/pools/{self.pool['id']}"

    def add_member(
        self,
        hostname: str,
        ip: str,
        env: dict[str, str] | None = None,
        *,
        portable: bool = False,
        tls: bool = False,
        bare: bool = False,
    ) -> FleetMember:
        """Enrol a member: its own haproxy on `ip`, and its agent heartbeating from `ip`.

        `portable`: the haproxy configuration names paths and addresses through the environment
        (support.haproxy.ROOT_VAR), so a backup of it can be restored onto another member.
        `tls`: an extra TLS frontend serving etc/haproxy/certs/site.pem (a test CA's cert).
        `bare`: a fresh host: no HAProxy configuration and none running, only the agent (its
        environment still names the member's bind address, for a portable configuration)."""
        assert self._pyz is not None
        created = self.call(
            "POST", f"{self.pool_url}/members", {"hostname": hostname, "allowed_ips": [ip]}
        )
        assert self._hosts is not None
        host_root = self._hosts / hostname
        launcher = self._host_launcher(hostname, ip)
        haproxy = HAProxy(
            hostname,
            host_root,
            f"{ip}:{self._port(ip)}",
            admin_socket=True,
            portable=portable,
            tls_bind=f"{ip}:{self._port(ip)}" if tls else None,
            launcher=launcher,
        )
        if tls and not bare:
            write_site_cert(haproxy.cert, ip)
        if not bare:
            haproxy.start()
        agent = Agent(
            self._pyz,
            host_root,
            env={
                **AGENT_ENV,
                "BALCTL_HAPROXY_PIDFILE": str(haproxy.pidfile),
                **haproxy.env(),
                **(env or {}),
            },
            launcher=launcher,
        )
        enrolled = agent.enrol(
            self.server.url, created["secret"], hostname, *self._enrol_options(ip)
        )
        assert enrolled.returncode == 0, enrolled.stderr
        agent.start()
        member = FleetMember(hostname, ip, created["id"], created["secret"], haproxy, agent)
        self.members.append(member)
        if bare:
            wait_until(
                lambda: self.member_view(member)["heartbeat"] is not None,
                15,
                what=f"{hostname}'s first heartbeat",
            )
        else:
            wait_until(lambda: self.health(member) == "healthy", 15, what=f"{hostname} healthy")
        return member

    def link_dns(self, ttl: int = 1, **extra: Any) -> dict[str, Any]:
        assert self.pdns is not None
        if not self.provider:
            self.provider = self.call(
                "POST",
                "/api/dns-providers",
                {"name": "pdns", "kind": "powerdns", "config": self.pdns.powerdns_config()},
            )
        body = {
            "provider_id": self.provider["id"],
            "zone": self.zone,
            "label": self.label,
            "ttl": ttl,
            **extra,
        }
        linked: dict[str, Any] = self.call("PUT", f"{self.pool_url}/dns", body)
        return linked

    def set_failover(self, **settings: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self.call("PUT", f"{self.pool_url}/failover", settings)
        return answer

    # -- reading --------------------------------------------------------------------------------

    @property
    def fqdn(self) -> str:
        return f"{self.label}.{self.zone}"

    def answer(self) -> list[str]:
        """The A record as the authoritative server answers it now (a real DNS query)."""
        assert self.pdns is not None
        return sorted(self.pdns.query_a(self.fqdn))

    def wait_for_answer(self, ip: str, timeout: float = 15) -> float:
        """Seconds until the authoritative server answers `ip` for the pool's name."""
        started = time.monotonic()
        wait_until(
            lambda: self.answer() == [ip], timeout, interval=0.02, what=f"DNS to answer {ip}"
        )
        return time.monotonic() - started

    def member_view(self, member: FleetMember) -> dict[str, Any]:
        view: dict[str, Any] = self.call("GET", f"{self.pool_url}/members/{member.id}")
        return view

    def health(self, member: FleetMember) -> str:
        return str(self.member_view(member)["health"]["state"])

    def active_id(self) -> int | None:
        return self.call("GET", self.pool_url)["active_member_id"]  # type: ignore[no-any-return]

    def events(self) -> list[dict[str, Any]]:
        return list(self.call("GET", f"{self.pool_url}/events")["items"])
