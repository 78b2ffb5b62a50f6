"""The fleet of support.fleet on a LAN of network namespaces (support.netns): the control plane
and every member on a host of its own with a documentation-range address, the agents talking
HTTPS to the control plane, which serves a certificate from a CA made for the run (the agents
are enrolled with `--ca-file` and trust only it).

    with netns_fleet(tmp_path, "sctpart") as fleet:
        edge_1 = fleet.add_member("edge-1", fleet.lan_address(11))
        fleet.host(edge_1).link_down()        # the member drops off the LAN

PowerDNS runs in the root namespace on the LAN's gateway address (`.1`): a DNS server on a host
of its own, which the control plane reaches over the LAN and the test queries directly. The test
process talks to the control plane's API through the bridge as well.

No pytest here: tests and benchmarks use it alike.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from support.fleet import Fleet, FleetMember
from support.netns import Lan, NetHost, kill_namespace_processes
from support.powerdns import PowerDNS
from support.server import start_server, stop_process
from support.tls import make_ca_and_server_cert

CONTROL_PLANE_OCTET = 10
CONTROL_PLANE_PORT = 8443
# Every namespace is fresh, so fixed ports are free there (free_port() could only probe the
# root namespace's addresses).
FIRST_HAPROXY_PORT = 8080


def netns_unavailable() -> str | None:
    """Why this machine cannot build a namespace LAN (a skip reason), or None when it can."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs the suite as root)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (apt-get install iproute2)"
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        return f"`ip netns` does not work here: {listed.stderr.strip()}"
    return None


@dataclass
class NetnsFleet(Fleet):
    lan: Lan | None = None
    # The control plane's address on the LAN (the DNS server lets it use its API).
    control_plane_address: str = ""
    # The test CA the agents are enrolled to trust.
    ca_file: Path | None = None
    _ports: Iterator[int] = field(default_factory=lambda: itertools.count(FIRST_HAPROXY_PORT))

    def lan_address(self, last_octet: int) -> str:
        assert self.lan is not None
        return f"{self.lan.network}.{last_octet}"

    def host(self, member: FleetMember) -> NetHost:
        """The namespace host a member runs on."""
        assert self.lan is not None
        return next(h for h in self.lan.hosts if h.address == member.ip)

    def _dns_server(self) -> PowerDNS:
        assert self.lan is not None
        return PowerDNS(
            self.root / "pdns",
            zone=self.zone,
            host=self.lan.gateway,
            clients=(self.control_plane_address,),
        )

    def _host_launcher(self, hostname: str, ip: str) -> list[str]:
        assert self.lan is not None
        network, _, octet = ip.rpartition(".")
        assert network == self.lan.network, f"{ip} is not on the LAN {self.lan.network}.0/24"
        return self.lan.add_host(hostname, int(octet)).command([])

    def _port(self, ip: str) -> int:
        return next(self._ports)

    def _enrol_options(self, ip: str) -> list[str]:
        assert self.ca_file is not None
        return [*super()._enrol_options(ip), "--ca-file", str(self.ca_file)]


@contextmanager
def netns_fleet(
    tmp_path: Path,
    prefix: str,
    network: str = "198.51.100",
    server_env: dict[str, str] | None = None,
) -> Iterator[NetnsFleet]:
    """A LAN named `prefix`, the control plane serving HTTPS on its `.10` host, and an empty
    fleet (PowerDNS on the gateway, the pool made); everything stopped and removed after."""
    with Lan(prefix, network) as lan:
        try:
            cp = lan.add_host("cp", CONTROL_PLANE_OCTET)
            ca, cert, key = make_ca_and_server_cert(tmp_path / "tls", cp.address)
            server = start_server(
                tmp_path / "cp",
                "--tls-cert",
                str(cert),
                "--tls-key",
                str(key),
                env=server_env,
                scheme="https",
                ca_file=ca,
                host=cp.address,
                port=CONTROL_PLANE_PORT,
                launcher=cp.command([]),
            )
            try:
                with NetnsFleet(
                    tmp_path / "fleet",
                    server,
                    lan=lan,
                    control_plane_address=cp.address,
                    ca_file=ca,
                ) as fleet:
                    yield fleet
            finally:
                stop_process(server.process)
        finally:
            # Whatever is left (a haproxy an agent restarted, say) before the namespaces go.
            for host in lan.hosts:
                kill_namespace_processes(host)
