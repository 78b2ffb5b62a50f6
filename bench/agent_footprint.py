"""Agent footprint: the agent's memory (RSS) and CPU share at one heartbeat a second over HTTPS,
with HAProxy stats enrichment on every beat, beside a bare interpreter.

Runs a real `serverctl serve` over HTTPS (a test CA made for the run, pinned by the agent with
--ca-file, as an operator would), a real haproxy with an admin socket, and the real agent
zipapp enrolled as that haproxy's member. BALCTL_STATS_INTERVAL_S=1 makes the agent query the
admin socket (`show info`, `show stat`, `show servers state`) on every heartbeat instead of
every 5 s by default: the heaviest enrichment setting. HAProxy is probed between beats at the
default cadence (BALCTL_PROBE_INTERVAL_S, 0.2 s). The baseline is the same interpreter importing
what any HTTPS client needs (ssl, http.client) and then idling.

After a warm-up, both processes are read from /proc over the window: VmRSS every second (the
figure is the highest seen) and utime+stime at both ends (the agent process itself: it is
started directly, not through a shell). Heartbeats, and those that carried HAProxy stats, are
counted from the control plane's view of the member, so the counts prove the agent beat and
enriched all along.

Prints its figures last, one per line, `name=value`: duration_s, heartbeats,
enriched_heartbeats (those that carried HAProxy stats), stats_interval_s, bare_rss_mb, rss_mb,
rss_ratio_vs_bare, cpu_percent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from figures import print_figures  # noqa: E402
from interrupts import deferred_interrupts, stop_on_sigterm  # noqa: E402

from support.agent import Agent, download_zipapp  # noqa: E402
from support.haproxy import HAProxy  # noqa: E402
from support.server import ServerProcess, start_server, stop_process  # noqa: E402
from support.tls import make_ca_and_server_cert  # noqa: E402
from support.util import free_port, wait_until  # noqa: E402

MEMBER_IP = "127.0.0.2"
STATS_INTERVAL_S = 1
# Imports only, then idle: what an HTTPS client costs before doing anything.
BARE = "import http.client, signal, ssl\nsignal.pause()\n"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}: has it exited?")


def cpu_s(pid: int) -> float:
    """utime + stime of the process itself (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Member:
    """The member's view on the control plane, read over the operator API."""

    def __init__(self, server: ServerProcess, url: str) -> None:
        self.api = server.api()
        self.url = url

    def view(self) -> dict[str, Any]:
        view: dict[str, Any] = self.api.get(self.url).json()
        return view

    def last_heartbeat(self) -> str | None:
        heartbeat = self.view()["heartbeat"]
        return None if heartbeat is None else str(heartbeat["at"])

    def last_stats(self) -> str | None:
        """When the control plane last got HAProxy stats from the agent (enrichment)."""
        status: dict[str, Any] = self.api.get(f"{self.url}/status").json()
        return None if status["stats_at"] is None else str(status["stats_at"])


@contextmanager
def enrolled_agent(tmp: Path, server: ServerProcess, ca: Path) -> Iterator[tuple[Agent, Member]]:
    """A real haproxy with an admin socket and a real agent enrolled over HTTPS beside it."""
    haproxy = HAProxy("edge-1", tmp / "host", f"{MEMBER_IP}:{free_port(MEMBER_IP)}")
    agent: Agent | None = None
    member: Member | None = None
    try:
        with deferred_interrupts():
            with server.api() as api:
                pool = api.post("/api/pools", json={"name": "edge", "template": "haproxy"}).json()
                created = api.post(
                    f"/api/pools/{pool['id']}/members",
                    json={"hostname": "edge-1", "allowed_ips": [MEMBER_IP]},
                ).json()
            member = Member(server, f"/api/pools/{pool['id']}/members/{created['id']}")
            pyz = download_zipapp(server.url, tmp / "balctl.pyz", verify=server.verify)
            haproxy.start()
            env = {
                "BALCTL_HAPROXY_PIDFILE": str(haproxy.pidfile),
                "BALCTL_STATS_INTERVAL_S": str(STATS_INTERVAL_S),
            }
            agent = Agent(pyz, haproxy.root, env=env)
            args = ("--source-ip", MEMBER_IP, "--ca-file", str(ca))
            enrolled = agent.enrol(server.url, created["secret"], "edge-1", *args)
            if enrolled.returncode != 0:
                raise SystemExit(f"enrolment over HTTPS failed: {enrolled.stderr.strip()}")
            agent.start()
        wait_until(member.last_stats, 30, interval=0.2, what="a heartbeat with HAProxy stats")
        yield agent, member
    finally:
        if agent is not None:
            agent.stop()
        if member is not None:
            member.api.close()
        haproxy.kill()


def measure(agent_pid: int, bare_pid: int, member: Member, window_s: float) -> dict[str, Any]:
    """Read both processes over `window_s`; count the heartbeats the control plane saw."""
    rss = {agent_pid: 0.0, bare_pid: 0.0}
    beats: set[str] = set()
    enriched: set[str] = set()
    cpu_before = cpu_s(agent_pid)
    started = time.monotonic()
    next_sample = started
    while (now := time.monotonic()) - started < window_s:
        if now >= next_sample:
            for pid in rss:
                rss[pid] = max(rss[pid], rss_mb(pid))
            next_sample += 1.0
        beats.add(str(member.last_heartbeat()))
        enriched.add(str(member.last_stats()))
        time.sleep(0.25)
    duration = time.monotonic() - started
    cpu_used = cpu_s(agent_pid) - cpu_before
    return {
        "duration_s": round(duration, 1),
        # The first of each seen may predate the window.
        "heartbeats": len(beats) - 1,
        "enriched_heartbeats": len(enriched) - 1,
        "stats_interval_s": STATS_INTERVAL_S,
        "bare_rss_mb": rss[bare_pid],
        "rss_mb": rss[agent_pid],
        "rss_ratio_vs_bare": rss[agent_pid] / rss[bare_pid],
        "cpu_percent": 100 * cpu_used / duration,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured (60)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds first (10)")
    parser.add_argument("--quick", action="store_true", help="a 20 s window, 5 s warm-up")
    args = parser.parse_args()
    window, warmup = (20.0, 5.0) if args.quick else (args.window, args.warmup)
    stop_on_sigterm()
    # Short: haproxy refuses admin socket paths over 97 characters.
    tmp = Path(tempfile.mkdtemp(dir="/tmp", prefix="af"))
    server: ServerProcess | None = None
    bare: subprocess.Popen[str] | None = None
    try:
        ca, cert, key = make_ca_and_server_cert(tmp / "tls")
        tls = ("--tls-cert", str(cert), "--tls-key", str(key))
        with deferred_interrupts():
            server = start_server(tmp / "cp", *tls, scheme="https", ca_file=ca)
        with enrolled_agent(tmp, server, ca) as (agent, member):
            with deferred_interrupts():
                bare = subprocess.Popen([sys.executable, "-c", BARE], text=True)
            assert agent.process is not None
            print(f"warming up for {warmup:g} s, then measuring {window:g} s", file=sys.stderr)
            time.sleep(warmup)
            figures = measure(agent.process.pid, bare.pid, member, window)
            if agent.process.poll() is not None:
                raise SystemExit(f"the agent exited during the run:\n{agent.log()}")
    finally:
        if bare is not None:
            stop_process(bare)
        if server is not None:
            stop_process(server.process)
        shutil.rmtree(tmp, ignore_errors=True)
    print_figures(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
