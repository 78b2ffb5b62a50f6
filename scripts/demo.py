"""`make demo`: a whole pool on one machine, to watch failover happen.

Starts the control plane (SQLite in a temporary data directory), a PowerDNS authoritative
server with the zone demo.example, and three members, each a real agent beside a real haproxy
on its own loopback address (127.0.0.2-4). Enrols them into the pool "demo" with automatic
failover on, links the zone, and prints the URL, the login, and how to make a failover happen
and watch `dig` follow it. Ctrl-C stops everything and removes the temporary files.

It reuses the test suite's fleet harness (tests/support), which drives the same real
processes the end-to-end tests use.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.fleet import Fleet  # noqa: E402
from support.server import start_server, stop_process  # noqa: E402

MEMBERS = (("edge-1", "127.0.0.2"), ("edge-2", "127.0.0.3"), ("edge-3", "127.0.0.4"))


def main() -> int:
    parser = argparse.ArgumentParser(description="Run a ServerCTL demo pool on this machine.")
    parser.add_argument("--members", type=int, default=3, choices=(2, 3))
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with tempfile.TemporaryDirectory(prefix="serverctl-demo-") as tmp:
        root = Path(tmp)
        print("Starting the control plane ...", flush=True)
        server = start_server(root / "cp")
        try:
            with Fleet(root / "fleet", server, pool_name="demo") as fleet:
                for hostname, ip in MEMBERS[: args.members]:
                    print(f"Enrolling {hostname} (agent + haproxy on {ip}) ...", flush=True)
                    fleet.add_member(hostname, ip)
                fleet.link_dns(ttl=5)
                fleet.set_failover(automatic=True, delay_s=10, cooldown_s=30)
                explain(fleet)
                try:
                    stop.wait()
                except KeyboardInterrupt:
                    pass
                print("\nStopping agents, haproxy, PowerDNS and the control plane ...")
        finally:
            stop_process(server.process)
    print("Demo stopped; temporary files removed.")
    return 0


def explain(fleet: Fleet) -> None:
    assert fleet.pdns is not None
    server, pdns = fleet.server, fleet.pdns
    first = fleet.members[0]
    print(
        f"""
ServerCTL demo is running.

  Web UI:     {server.url}/   (user admin, password {server.admin_password})
  API token:  {server.token}
  Pool:       {fleet.pool_name}: {", ".join(f"{m.hostname} {m.ip}" for m in fleet.members)}
  DNS name:   {fleet.fqdn}, served by PowerDNS on {pdns.host}:{pdns.dns_port}

Watch the A record:
  watch -n 0.5 dig +short @{pdns.host} -p {pdns.dns_port} {fleet.fqdn}

Make a failover happen: kill the active member's haproxy
  kill -9 $(cat {first.haproxy.pidfile})
The record moves to the next ready standby within a second; see the Overview
({server.url}/pools/{fleet.pool["id"]}) and the failover event.
Bring it back as a standby:
  haproxy -D -f {first.haproxy.config} -p {first.haproxy.pidfile}
Or silence a host entirely (agent and haproxy): the record moves after the 10 s delay.

Ctrl-C stops everything.
""",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
