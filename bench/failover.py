"""Failover time, ServerCTL beside keepalived in one run: from killing the active haproxy to the
new address being served.

ServerCTL: a real `serverctl serve`, a real PowerDNS authoritative server (caches off, so it
answers what the control plane last wrote), and two members, each a real agent beside a real
haproxy on its own loopback address. Automatic failover is on with no cool-down and the
smallest failover delay the API accepts. A trial kills the active haproxy (SIGKILL) and times
until a real DNS query answers the other member's address; the dead haproxy is started again
and the next trial goes the other way.

keepalived: two network namespaces on a bridge (bench/keepalived_pair.py), each with its own
haproxy and keepalived (VRRP, `advert_int 1`, a `track_script` with `interval 1` and `fall 2`).
A trial kills the master's haproxy (SIGKILL) and times until the VIP answers over HTTP from
the backup (polled every 50 ms).

The two kinds of trial alternate, so both see the same machine load. Then the hard case, where
the active host falls silent: ServerCTL's active member loses its agent and its haproxy
together (SIGKILL), and only the failover delay can notice; keepalived's master loses
keepalived and haproxy together (SIGKILL), and the backup notices after 3 missed adverts.
Every clock is this process's own: the kill and the answer are both seen here.

Prints its figures last, one per line, `name=value`: serverctl_median_s, serverctl_p95_s,
keepalived_median_s, keepalived_p95_s, serverctl_vs_keepalived (median over median),
serverctl_silent_s, keepalived_hard_s (medians of the hard-case trials); trials, hard_trials,
failover_delay_s and the maxima before them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from figures import median, percentile, print_figures  # noqa: E402
from interrupts import deferred_interrupts, stop_on_sigterm  # noqa: E402
from keepalived_pair import KeepalivedPair  # noqa: E402

from support.fleet import Fleet, FleetMember  # noqa: E402
from support.server import ServerProcess, start_server, stop_process  # noqa: E402
from support.util import wait_until  # noqa: E402

MEMBERS = (("edge-1", "127.0.0.2"), ("edge-2", "127.0.0.3"))
# The smallest failover delay that PUT /api/pools/{id}/failover accepts (delay_s is 10-120 s);
# main() checks that one second less is refused, so a changed range cannot go unnoticed.
MIN_FAILOVER_DELAY_S = 10


def active_and_standby(fleet: Fleet) -> tuple[FleetMember, FleetMember]:
    active_id = fleet.active_id()
    active = next(m for m in fleet.members if m.id == active_id)
    standby = next(m for m in fleet.members if m.id != active_id)
    assert fleet.answer() == [active.ip], fleet.answer()
    return active, standby


def wait_for_dns(
    fleet: Fleet, member: FleetMember, started: float, timeout: float, interval: float = 0.005
) -> float:
    """Seconds from `started` until the authoritative server answers `member`'s address."""
    wait_until(lambda: fleet.answer() == [member.ip], timeout, interval, what="DNS to move")
    return time.monotonic() - started


def rejoin(fleet: Fleet, member: FleetMember) -> None:
    """The old active comes back (haproxy, and its agent if it was killed) as a healthy
    standby before the next trial."""
    member.start()
    wait_until(lambda: fleet.health(member) == "healthy", 20, what=f"{member.hostname} healthy")


def serverctl_trial(fleet: Fleet) -> float:
    active, standby = active_and_standby(fleet)
    started = time.monotonic()
    active.haproxy.kill()
    took = wait_for_dns(fleet, standby, started, 30)
    rejoin(fleet, active)
    return took


def serverctl_silent_trial(fleet: Fleet) -> float:
    """The active host falls silent: its agent and its haproxy die together (SIGKILL), so no
    heartbeat reports anything and the failover delay has to run out."""
    active, standby = active_and_standby(fleet)
    assert active.agent.process is not None
    started = time.monotonic()
    # The agent first: killed after haproxy, it could still report the death in a heartbeat.
    active.agent.process.kill()
    active.haproxy.kill()
    # Polled less often: the delay dominates, and queries would load the machine for seconds.
    took = wait_for_dns(fleet, standby, started, MIN_FAILOVER_DELAY_S + 30, interval=0.02)
    active.agent.process.wait(10)
    rejoin(fleet, active)
    return took


def set_min_failover_delay(fleet: Fleet) -> int:
    too_short = {"delay_s": MIN_FAILOVER_DELAY_S - 1}
    assert fleet.api is not None
    refused = fleet.api.put(f"{fleet.pool_url}/failover", json=too_short)
    if refused.status_code < 400:
        raise SystemExit(
            f"the API accepted a failover delay of {MIN_FAILOVER_DELAY_S - 1} s: "
            "update MIN_FAILOVER_DELAY_S in bench/failover.py to the new minimum"
        )
    settings = fleet.set_failover(automatic=True, delay_s=MIN_FAILOVER_DELAY_S, cooldown_s=0)
    return int(settings["delay_s"])


def run(
    fleet: Fleet, pair: KeepalivedPair, trials: int, hard_trials: int
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"serverctl": [], "keepalived": [], "silent": [], "hard": []}
    for number in range(1, trials + 1):
        times["serverctl"].append(serverctl_trial(fleet))
        times["keepalived"].append(pair.haproxy_trial())
        print(
            f"trial {number}: serverctl {times['serverctl'][-1]:.3f} s, "
            f"keepalived {times['keepalived'][-1]:.3f} s",
            file=sys.stderr,
        )
    for number in range(1, hard_trials + 1):
        times["silent"].append(serverctl_silent_trial(fleet))
        times["hard"].append(pair.hard_trial())
        print(
            f"hard trial {number}: serverctl (silent host) {times['silent'][-1]:.3f} s, "
            f"keepalived (VRRP loss) {times['hard'][-1]:.3f} s",
            file=sys.stderr,
        )
    events = fleet.events()
    assert len(events) == trials + hard_trials, f"{len(events)} failover events"
    return times


@contextmanager
def serverctl_pool(root: Path, server: ServerProcess) -> Iterator[tuple[Fleet, int]]:
    """The ServerCTL side, ready for trials: two healthy members, DNS linked, automatic
    failover with the smallest delay. Yields the fleet and that delay."""
    fleet = Fleet(root, server)
    try:
        with deferred_interrupts():
            fleet.__enter__()
            for hostname, ip in MEMBERS:
                fleet.add_member(hostname, ip)
            fleet.link_dns(ttl=1)
            delay = set_min_failover_delay(fleet)
        yield fleet, delay
    finally:
        fleet.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12, help="trials of each (at least 10)")
    parser.add_argument("--hard-trials", type=int, default=3, help="silent-host trials of each")
    parser.add_argument("--quick", action="store_true", help="5 trials of each, 1 hard trial")
    args = parser.parse_args()
    trials = 5 if args.quick else max(10, args.trials)
    hard_trials = 1 if args.quick else max(1, args.hard_trials)
    stop_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        root = Path(tmp)
        server: ServerProcess | None = None
        try:
            with deferred_interrupts():
                server = start_server(root / "cp")
            with (
                KeepalivedPair(root / "keepalived") as pair,
                serverctl_pool(root / "fleet", server) as (fleet, delay),
            ):
                times = run(fleet, pair, trials, hard_trials)
        finally:
            if server is not None:
                stop_process(server.process)
    serverctl, keepalived = times["serverctl"], times["keepalived"]
    print_figures(
        {
            "trials": trials,
            "hard_trials": hard_trials,
            "failover_delay_s": delay,
            "serverctl_max_s": max(serverctl),
            "keepalived_max_s": max(keepalived),
            "serverctl_silent_max_s": max(times["silent"]),
            "keepalived_hard_max_s": max(times["hard"]),
            "serverctl_median_s": median(serverctl),
            "serverctl_p95_s": percentile(serverctl, 0.95),
            "keepalived_median_s": median(keepalived),
            "keepalived_p95_s": percentile(keepalived, 0.95),
            "serverctl_vs_keepalived": median(serverctl) / median(keepalived),
            "serverctl_silent_s": median(times["silent"]),
            "keepalived_hard_s": median(times["hard"]),
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
