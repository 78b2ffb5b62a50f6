"""Hosts in network namespaces on one bridge: a small LAN a test or a benchmark makes and removes.

    with Lan("scp", "198.51.100") as lan:
        cp = lan.add_host("cp", 10)          # 198.51.100.10 in namespace scp-cp
        edge = lan.add_host("edge1", 11)
        edge.popen(["haproxy", ...])
        edge.link_down()                      # the host drops off the LAN (a partition)

The bridge sits in the root namespace with the LAN's `.1` address, so the test process itself
reaches every host. Only documentation ranges are used (192.0.2/24, 198.51.100/24,
203.0.113/24), and nothing routes off the LAN. Needs root and iproute2.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import Any, Self

DOCUMENTATION_PREFIXES = ("192.0.2", "198.51.100", "203.0.113")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15, check=check)


@dataclass
class NetHost:
    name: str
    namespace: str
    address: str
    # The root-side end of the host's veth pair, on the bridge.
    outer_link: str

    def command(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *argv]

    def run(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 30)
        return subprocess.run(self.command(argv), check=kwargs.pop("check", False), **kwargs)

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(self.command(argv), **kwargs)

    def add_address(self, address: str) -> None:
        """A second address on the host's LAN link (an extra IP the host answers on)."""
        self.run(["ip", "addr", "add", f"{address}/24", "dev", "eth0"], check=True)

    def link_down(self) -> None:
        """Cut the host off the LAN, as a pulled cable or a failed switch port would."""
        _ip("link", "set", self.outer_link, "down")

    def link_up(self) -> None:
        _ip("link", "set", self.outer_link, "up")


@dataclass
class Lan:
    # Short: interface names are limited to 15 characters (`<prefix>br`, `<prefix><n>`).
    prefix: str
    # The first three octets of a documentation /24.
    network: str = "198.51.100"
    hosts: list[NetHost] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.network not in DOCUMENTATION_PREFIXES:
            raise ValueError(f"{self.network} is not a documentation range")
        if len(self.prefix) > 8:
            raise ValueError("keep the prefix to 8 characters (interface names are short)")

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the LAN (where the test process talks from)."""
        return f"{self.network}.1"

    def __enter__(self) -> Self:
        remove_stale(self.prefix)
        if in_use(self.network):
            # A second route into a /24 this machine already uses would hijack its traffic.
            raise RuntimeError(f"{self.network}.0/24 is already on an interface here")
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_host(self, name: str, last_octet: int) -> NetHost:
        namespace = f"{self.prefix}-{name}"
        outer = f"{self.prefix}{len(self.hosts)}"
        address = f"{self.network}.{last_octet}"
        _ip("netns", "add", namespace)
        _ip("link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        _ip("link", "set", outer, "master", self.bridge)
        _ip("link", "set", outer, "up")
        host = NetHost(name, namespace, address, outer)
        host.run(["ip", "link", "set", "lo", "up"], check=True)
        host.run(["ip", "addr", "add", f"{address}/24", "dev", "eth0"], check=True)
        host.run(["ip", "link", "set", "eth0", "up"], check=True)
        self.hosts.append(host)
        return host

    def close(self) -> None:
        for host in self.hosts:
            # Processes still inside keep a namespace alive only as long as they run.
            _ip("netns", "pids", host.namespace, check=False)
            _ip("netns", "del", host.namespace, check=False)
        self.hosts.clear()
        _ip("link", "del", self.bridge, check=False)


def in_use(network: str) -> bool:
    """Whether an interface in the root namespace already has an address in the /24."""
    listed = _ip("-4", "-o", "addr", "show", check=False).stdout
    return f" {network}." in listed


def remove_stale(prefix: str) -> None:
    """Namespaces and the bridge a killed run of the same prefix left behind."""
    listed = _ip("netns", "list", check=False).stdout.split("\n")
    for line in listed:
        name = line.split(" ", 1)[0]
        if name.startswith(f"{prefix}-"):
            # Processes a killed run left inside would outlive the namespace's name.
            for pid in _ip("netns", "pids", name, check=False).stdout.split():
                subprocess.run(["kill", "-9", pid], capture_output=True, check=False)
            _ip("netns", "del", name, check=False)
    _ip("link", "del", f"{prefix}br", check=False)


def kill_namespace_processes(host: NetHost) -> None:
    """SIGKILL whatever still runs inside the host's namespace (before removing it)."""
    pids = _ip("netns", "pids", host.namespace, check=False).stdout.split()
    for pid in pids:
        subprocess.run(["kill", "-9", pid], capture_output=True, check=False)
