"""Failover time: from killing the active member's haproxy to the zone's authoritative DNS
server answering the standby's address.

Runs a real `serverctl serve`, a real PowerDNS authoritative server (caches off, so it answers
what the control plane last wrote), and two members, each a real agent beside a real haproxy on
its own loopback address. Automatic failover is on with no cool-down, so trials run back to
back: kill the active haproxy (SIGKILL), time until a real DNS query answers the other
member's address, start the dead haproxy again, wait until it is a healthy standby, repeat in
the other direction. The clock is this process's own: kill and answer are both seen here.

Prints its figures last, one per line, `name=value`: trials, serverctl_median_s,
serverctl_p95_s, serverctl_max_s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.fleet import Fleet  # noqa: E402
from support.server import start_server, stop_process  # noqa: E402
from support.util import wait_until  # noqa: E402

MEMBERS = (("edge-1", "127.0.0.2"), ("edge-2", "127.0.0.3"))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def trial(fleet: Fleet) -> float:
    active_id = fleet.active_id()
    active = next(m for m in fleet.members if m.id == active_id)
    standby = next(m for m in fleet.members if m.id != active_id)
    assert fleet.answer() == [active.ip], fleet.answer()
    started = time.monotonic()
    active.haproxy.kill()
    wait_until(lambda: fleet.answer() == [standby.ip], 30, interval=0.005, what="DNS to move")
    took = time.monotonic() - started
    # The old active comes back as a healthy standby before the next trial.
    active.haproxy.start()
    wait_until(lambda: fleet.health(active) == "healthy", 15, what=f"{active.hostname} healthy")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="5 trials")
    args = parser.parse_args()
    trials = 5 if args.quick else max(10, args.trials)
    with tempfile.TemporaryDirectory(prefix="serverctl-bench-failover-") as tmp:
        root = Path(tmp)
        server = start_server(root / "cp")
        try:
            with Fleet(root / "fleet", server) as fleet:
                for hostname, ip in MEMBERS:
                    fleet.add_member(hostname, ip)
                fleet.link_dns(ttl=1)
                fleet.set_failover(automatic=True, delay_s=10, cooldown_s=0)
                times = []
                for number in range(1, trials + 1):
                    took = trial(fleet)
                    times.append(took)
                    print(f"trial {number}: {took:.3f} s", file=sys.stderr)
                events = fleet.events()
                assert len(events) == trials, f"{len(events)} failover events for {trials} trials"
        finally:
            stop_process(server.process)
    print(f"trials={trials}")
    print(f"serverctl_median_s={statistics.median(times):.3f}")
    print(f"serverctl_p95_s={percentile(times, 0.95):.3f}")
    print(f"serverctl_max_s={max(times):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
