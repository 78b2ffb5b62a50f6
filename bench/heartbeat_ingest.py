"""Heartbeat ingest: how many heartbeats a second one control plane takes, and how fast.

Seeds N members (default 5,000) into a fresh SQLite data directory, starts a real
`serverctl serve`, and drives it with wrk (one thread, 64 connections) through
`heartbeat_ingest.lua`, which rotates through every member's secret and realistic body (the
`haproxy` block with `info`, a `show stat` summary and the topology, as the agent sends with
stats enrichment on). In the same run, `/healthz` (a constant answer that touches no
database) is measured the same way before and after, and the ratio of the two rates is given.

After a warm-up (every member's first heartbeat is a change the flusher writes), the order is:
/healthz for half the duration, heartbeats for the duration, /healthz for half the duration.
The server's RSS is read from /proc at the end of the heartbeat run. Errors are wrk's socket
errors (connect, read, write, timeout) plus answers with a status of 400 or more.

Prints its figures last, one per line, `name=value`: members, duration_s, healthz_per_s,
healthz_errors, server_cpu_share (of one core, during the heartbeat run),
server_cpu_us_per_heartbeat, then heartbeats_per_s, p50_ms, p99_ms, errors, ratio_vs_healthz,
server_rss_mb.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.server import ServerProcess, start_server, stop_process  # noqa: E402
from support.simulated_members import (  # noqa: E402
    SimulatedMember,
    heartbeat_body,
    seed_simulated,
)

LUA_SCRIPT = Path(__file__).with_suffix(".lua")
CONNECTIONS = 64


@dataclass(frozen=True)
class WrkRun:
    requests: int
    duration_s: float
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def per_s(self) -> float:
        return self.requests / self.duration_s


def wrk(url: str, duration_s: float, *script_args: str) -> WrkRun:
    """One wrk run (one thread, 64 connections); its figures from the script's done()."""
    done = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{max(1, round(duration_s))}s",
            "--timeout",
            "2s",
            "-s",
            str(LUA_SCRIPT),
            url,
            "--",
            *script_args,
        ],
        capture_output=True,
        text=True,
        timeout=duration_s + 120,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("FIGURES ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    f = json.loads(lines[-1].removeprefix("FIGURES "))
    return WrkRun(
        requests=f["requests"],
        duration_s=f["duration_us"] / 1e6,
        errors=sum(f[k] for k in ("connect", "read", "write", "status", "timeout")),
        p50_ms=f["p50_us"] / 1000,
        p99_ms=f["p99_us"] / 1000,
    )


def write_requests(members: list[SimulatedMember], path: Path) -> None:
    """One line per member for the Lua script: the secret, a tab, the JSON body."""
    with path.open("w") as out:
        for member in members:
            out.write(f"{member.secret}\t{heartbeat_body(member).decode()}\n")


def cpu_s(pid: int) -> float:
    """CPU time (user + system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS for process {pid}: has the server exited?")


def check_heard(server: ServerProcess, members: list[SimulatedMember]) -> None:
    """A sample of members (first, middle, last) must be healthy: the heartbeats really landed."""
    with server.api() as api:
        for member in (members[0], members[len(members) // 2], members[-1]):
            url = f"/api/pools/{member.pool_id}/members/{member.member_id}"
            state = api.get(url).json()["health"]["state"]
            if state != "healthy":
                raise SystemExit(f"member {member.hostname} is {state} after the run")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--members", type=int, default=5000, help="enrolled members (5000)")
    parser.add_argument("--duration", type=float, default=30.0, help="heartbeat run, s (30)")
    parser.add_argument("--quick", action="store_true", help="a 15 s heartbeat run")
    args = parser.parse_args()
    duration = 15.0 if args.quick else args.duration
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: run scripts/install-bench-packages.sh")

    tmp = Path(tempfile.mkdtemp(dir="/tmp", prefix="hbi"))
    try:
        started = time.monotonic()
        members = seed_simulated(tmp / "data", args.members, prefix="bench")
        seeded_s = time.monotonic() - started
        print(f"seeded {len(members)} members in {seeded_s:.1f} s", file=sys.stderr)
        requests_file = tmp / "heartbeats.txt"
        write_requests(members, requests_file)
        server = start_server(tmp / "cp", data_dir=tmp / "data")
        try:
            # Every member's first heartbeat is a change; let the flusher write those first.
            wrk(server.url, 3, "heartbeat", str(requests_file))
            time.sleep(2)
            before = wrk(server.url, duration / 2, "healthz")
            cpu_before = cpu_s(server.process.pid)
            beats = wrk(server.url, duration, "heartbeat", str(requests_file))
            cpu = cpu_s(server.process.pid) - cpu_before
            rss = rss_mb(server.process.pid)
            after = wrk(server.url, duration / 2, "healthz")
            check_heard(server, members)
        finally:
            stop_process(server.process)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    healthz_per_s = (before.requests + after.requests) / (before.duration_s + after.duration_s)
    print(f"members={len(members)}")
    print(f"duration_s={beats.duration_s:.1f}")
    print(f"healthz_per_s={healthz_per_s:.0f}")
    print(f"healthz_errors={before.errors + after.errors}")
    # How much of a core the server got, and what a heartbeat cost it (background loops
    # included): on a busy machine, the figure that says what the same code does on a quiet one.
    print(f"server_cpu_share={cpu / beats.duration_s:.2f}")
    print(f"server_cpu_us_per_heartbeat={cpu / max(1, beats.requests) * 1e6:.0f}")
    print(f"heartbeats_per_s={beats.per_s:.0f}")
    print(f"p50_ms={beats.p50_ms:.2f}")
    print(f"p99_ms={beats.p99_ms:.2f}")
    print(f"errors={beats.errors}")
    print(f"ratio_vs_healthz={beats.per_s / healthz_per_s:.2f}")
    print(f"server_rss_mb={rss:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
