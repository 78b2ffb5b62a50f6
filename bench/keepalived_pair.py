"""Two hosts sharing a virtual IP with keepalived: the peer that bench/failover.py measures
ServerCTL against.

Each host is a network namespace on a bridge LAN (tests/support/netns.py) in 203.0.113.0/24,
with its own haproxy (bound to 0.0.0.0:80 in its namespace, answering "served by <host>") and
its own keepalived (Debian's package), VRRP only. The configuration is the textbook one:
`advert_int 1`, both hosts `state BACKUP` with `nopreempt` (so trials can alternate direction,
as ServerCTL's do), and a `track_script` that checks *this namespace's* haproxy every second
(`interval 1`, `fall 2`, `rise 1`) by opening a TCP connection to the host's own address.
A script never runs `pidof haproxy`: the PID namespace is shared, so that would see the other
host's haproxy too. A TCP check also fails at once on a killed haproxy, where `kill -0` would
still succeed on its zombie until init reaps it.

The test process sits on the bridge (the LAN's .1) and reaches the VIP (.100) like any client
on the LAN, through ARP, so the gratuitous ARPs of a new master are part of what is measured.

    with KeepalivedPair(root) as pair:
        took = pair.haproxy_trial()    # kill the master's haproxy: seconds until the VIP
        took = pair.hard_trial()       # answers from the backup; the hard case kills keepalived
                                       # (SIGKILL) with it: VRRP adverts simply stop
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

from support.haproxy import HAPROXY, HAProxy
from support.netns import Lan, NetHost
from support.util import wait_until

KEEPALIVED = "/usr/sbin/keepalived"
PREFIX = "kab"
# Documentation /24s the pair may use, in order of preference; the first that no interface of
# this machine holds yet is taken (two bridges on one /24 would steal each other's routes).
NETWORKS = ("203.0.113", "198.51.100", "192.0.2")
VIP_OCTET = 100
HTTP_PORT = 80
# How often the client polls the VIP, and how long one try may take.
POLL_INTERVAL_S = 0.05
POLL_TIMEOUT_S = 0.2

CONFIG = """\
global_defs {{
    router_id {name}
    enable_script_security
    script_user root
}}

vrrp_script chk_haproxy {{
    script "/bin/bash -c 'exec 3<>/dev/tcp/{address}/{port}'"
    interval 1
    timeout 1
    fall 2
    rise 1
}}

vrrp_instance VI_1 {{
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id 51
    priority {priority}
    advert_int 1
    virtual_ipaddress {{
        {vip}/32 dev eth0
    }}
    track_script {{
        chk_haproxy
    }}
}}
"""

STATE_LINE = re.compile(r"\(VI_1\) Entering (MASTER|BACKUP|FAULT) STATE")


def http_body(address: str, port: int = HTTP_PORT, timeout: float = POLL_TIMEOUT_S) -> str | None:
    """The last line of the body a GET / answers, or None when nothing answers in time."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    except OSError:
        return None
    text = b"".join(chunks).decode(errors="replace").strip()
    return text.rsplit("\n", 1)[-1].strip() if text else None


@dataclass
class KeepalivedHost:
    net: NetHost
    root: Path
    priority: int
    vip: str
    haproxy: HAProxy = field(init=False)
    process: subprocess.Popen[Any] | None = None

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.haproxy = HAProxy(
            self.net.namespace, self.root / "haproxy", f"0.0.0.0:{HTTP_PORT}", admin_socket=False
        )

    @property
    def name(self) -> str:
        return self.net.namespace

    @property
    def body(self) -> str:
        """What this host's haproxy answers (support.haproxy's configuration)."""
        return f"served by {self.name}"

    def _path(self, name: str) -> Path:
        return self.root / name

    # -- haproxy ------------------------------------------------------------------------------

    def start_haproxy(self) -> None:
        self.haproxy.write_config()
        argv = [HAPROXY, "-D", "-f", str(self.haproxy.config), "-p", str(self.haproxy.pidfile)]
        done = self.net.run(argv)
        if done.returncode != 0:
            raise RuntimeError(f"haproxy in {self.name} did not start: {done.stderr.strip()}")
        wait_until(self.haproxy.alive, 10, interval=0.02, what=f"haproxy in {self.name}")

    def kill_haproxy(self) -> None:
        self.haproxy.kill()

    # -- keepalived ---------------------------------------------------------------------------

    def start_keepalived(self) -> None:
        conf = self._path("keepalived.conf")
        conf.write_text(
            CONFIG.format(
                name=self.name,
                address=self.net.address,
                port=HTTP_PORT,
                priority=self.priority,
                vip=self.vip,
            )
        )
        log: IO[str] = self._path("keepalived.log").open("a")
        # -n: stay in the foreground (this Popen is keepalived's parent process itself, as
        # `ip netns exec` execs it); -P: VRRP only; -R: a killed VRRP child is not respawned,
        # so the hard case stays dead; distinct pidfiles, as two instances share the PID space.
        argv = [KEEPALIVED, "-n", "-l", "-D", "-P", "-R", "-f", str(conf)]
        argv += ["-p", str(self._path("keepalived.pid")), "-r", str(self._path("vrrp.pid"))]
        argv += ["-c", str(self._path("checkers.pid"))]
        self.process = self.net.popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def kill_keepalived(self) -> None:
        """SIGKILL keepalived, VRRP child first: killed the other way round, the child would get
        SIGTERM from its parent's death and resign politely (a priority 0 advert), which is
        not the silent loss measured here. Removes the VIP that a killed keepalived leaves."""
        try:
            child = int(self._path("vrrp.pid").read_text().split()[0])
            os.kill(child, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass
        if self.process is not None:
            self.process.kill()

    def silence(self) -> None:
        """The hard case: keepalived and haproxy killed together."""
        self.kill_keepalived()
        self.haproxy.kill()

    def reap_keepalived(self) -> None:
        if self.process is not None:
            self.process.wait(10)
            self.process = None
        self.net.run(["ip", "addr", "del", f"{self.vip}/32", "dev", "eth0"])

    def state(self) -> str | None:
        """keepalived's last logged VRRP state (MASTER, BACKUP or FAULT)."""
        log = self._path("keepalived.log")
        states = STATE_LINE.findall(log.read_text(errors="replace")) if log.exists() else []
        return states[-1] if states else None

    def log_size(self) -> int:
        log = self._path("keepalived.log")
        return log.stat().st_size if log.exists() else 0

    def entered(self, state: str, since: int) -> bool:
        """Whether keepalived logged entering `state` after byte `since` of its log, and
        is in it still."""
        with self._path("keepalived.log").open(errors="replace") as log:
            log.seek(since)
            states = STATE_LINE.findall(log.read())
        return bool(states) and states[-1] == state

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
        self.haproxy.kill()


@dataclass
class KeepalivedPair:
    root: Path
    lan: Lan = field(init=False)
    hosts: list[KeepalivedHost] = field(default_factory=list)

    def __enter__(self) -> Self:
        kill_stale_processes()
        self.lan = Lan(PREFIX, free_network())
        self.lan.__enter__()
        try:
            for number, (name, priority) in enumerate((("a", 110), ("b", 100)), start=11):
                net = self.lan.add_host(name, number)
                host = KeepalivedHost(net, self.root / name, priority, self.vip)
                self.hosts.append(host)
                host.start_haproxy()
                host.start_keepalived()
            # Both start as BACKUP: the election takes 3 adverts and the skew time.
            wait_until(self.master, 20, interval=0.1, what="keepalived to elect a master")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for host in self.hosts:
            host.stop()
        kill_stale_processes()
        self.lan.close()
        self.hosts.clear()

    @property
    def vip(self) -> str:
        return f"{self.lan.network}.{VIP_OCTET}"

    def serving(self) -> KeepalivedHost | None:
        """The host whose haproxy answers on the VIP now."""
        body = http_body(self.vip)
        return next((host for host in self.hosts if host.body == body), None)

    def master(self) -> KeepalivedHost | None:
        serving = self.serving()
        return serving if serving is not None and serving.state() == "MASTER" else None

    def _failover(
        self, break_master: Callable[[KeepalivedHost], None]
    ) -> tuple[KeepalivedHost, float]:
        """Break the master; return it and the seconds until the VIP answers from the backup."""
        master = self.master()
        if master is None:
            raise RuntimeError("no keepalived master serves the VIP before the trial")
        backup = next(host for host in self.hosts if host is not master)
        started = time.monotonic()
        break_master(master)
        while self.serving() is not backup:
            if time.monotonic() - started > 30:
                raise RuntimeError(f"the VIP did not move to {backup.name} within 30 s")
            time.sleep(POLL_INTERVAL_S)
        return master, time.monotonic() - started

    def haproxy_trial(self) -> float:
        """Kill the master's haproxy (SIGKILL); seconds until the VIP answers from the backup.
        The old master then gets its haproxy back and rejoins as BACKUP (nopreempt)."""
        old, took = self._failover(KeepalivedHost.kill_haproxy)
        since = old.log_size()
        old.start_haproxy()
        wait_until(lambda: old.entered("BACKUP", since), 15, what=f"{old.name} back to BACKUP")
        return took

    def hard_trial(self) -> float:
        """Kill the master's keepalived and haproxy together (SIGKILL): its adverts stop, and
        the backup takes over after 3 missed adverts plus its skew time."""
        old, took = self._failover(KeepalivedHost.silence)
        old.reap_keepalived()
        since = old.log_size()
        old.start_haproxy()
        old.start_keepalived()
        wait_until(lambda: old.entered("BACKUP", since), 15, what=f"{old.name} back as BACKUP")
        return took


def free_network() -> str:
    """The first of NETWORKS that no interface here holds (other test LANs, or this machine's
    own uplink, may sit on a documentation range too)."""
    listed = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    # Our own bridge, left by a killed run, is removed by Lan before it is made again.
    taken = {
        line.split()[3].rsplit(".", 1)[0]
        for line in listed.splitlines()
        if line.split()[1] != f"{PREFIX}br"
    }
    for network in NETWORKS:
        if network not in taken:
            return network
    raise RuntimeError(
        f"every documentation /24 ({', '.join(NETWORKS)}) is already on an interface of this "
        "machine (see `ip -4 addr`): stop the test LAN that holds one, then run again"
    )


def kill_stale_processes() -> None:
    """SIGKILL whatever still runs in this benchmark's namespaces (a run killed before its
    clean-up leaves keepalived and haproxy behind; removing a namespace does not stop them)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    for line in listed.stdout.splitlines():
        namespace = line.split(" ", 1)[0]
        if not namespace.startswith(f"{PREFIX}-"):
            continue
        pids = subprocess.run(
            ["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False
        ).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
