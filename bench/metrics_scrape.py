"""What one Prometheus scrape of `/metrics` costs, with a realistic fleet behind it.

Seeds a data directory before the server starts (support.simulated_members.seed_simulated:
members in pools of 100, through the real domain service) plus a history for every member: 30
completed jobs and 30 completed backup snapshots (a month of nightly backups). Then runs a real
`serverctl serve`, sends every member one heartbeat with a full `haproxy` block (so health is
computed from live heartbeats), and scrapes `/metrics` with a viewer token, one scrape at a
time, as Prometheus does.

Prints its figures last, one per line, `name=value`: members, jobs, snapshots, scrapes,
scrape_median_ms, scrape_p95_ms, exposition_kb, server_rss_mb, rss_growth_second_half_mb (the
first scrapes start worker threads; after that the RSS stays flat).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import httpx2 as httpx  # noqa: E402
from figures import percentile  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from serverctl.config import Settings  # noqa: E402
from serverctl.db.models import BackupSnapshot, Job  # noqa: E402
from serverctl.db.session import Database  # noqa: E402
from serverctl.db.types import utcnow  # noqa: E402
from support.server import (  # noqa: E402
    ServerProcess,
    serverctl_cli,
    start_server,
    stop_process,
)
from support.simulated_members import (  # noqa: E402
    SimulatedMember,
    heartbeat_body,
    seed_simulated,
    send_heartbeat,
)

JOB_TYPES = ("haproxy.reload", "haproxy.validate", "haproxy.backup")


def seed_history(
    data_dir: Path, members: list[SimulatedMember], jobs_each: int, snapshots_each: int
) -> tuple[int, int]:
    """Completed jobs and backup snapshots for every member, written in bulk."""
    db = Database(Settings(data_dir=data_dir))
    now = utcnow()
    try:
        with db.session() as s:
            jobs = [
                {
                    "pool_id": m.pool_id,
                    "member_id": m.member_id,
                    "type": JOB_TYPES[n % len(JOB_TYPES)],
                    "params": {},
                    "state": "completed",
                    "source": "operator",
                    "enqueued_by": "bench",
                    "timeout_s": 60,
                    "created_at": now - timedelta(hours=n),
                    "finished_at": now - timedelta(hours=n),
                }
                for m in members
                for n in range(jobs_each)
            ]
            s.execute(insert(Job), jobs)
            snapshots = [
                {
                    "pool_id": m.pool_id,
                    "member_id": m.member_id,
                    "hostname": m.hostname,
                    "kind": "haproxy",
                    "state": "completed",
                    "store": "local",
                    "location": {},
                    "key": f"{m.hostname}/{n}.tar.gz",
                    "source": "schedule",
                    "enqueued_by": "bench",
                    "created_at": now - timedelta(days=n),
                    "completed_at": now - timedelta(days=n),
                }
                for m in members
                for n in range(snapshots_each)
            ]
            s.execute(insert(BackupSnapshot), snapshots)
        return len(jobs), len(snapshots)
    finally:
        db.dispose()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Scrapes:
    timings: list[float] = field(default_factory=list)
    size: int = 0
    rss_half_mb: float = 0.0
    rss_end_mb: float = 0.0


def time_scrapes(server: ServerProcess, token: str, count: int) -> Scrapes:
    """`count` scrapes one after another, after ten to warm up (the first ones start worker
    threads and fill SQLAlchemy's statement cache)."""
    result = Scrapes()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, timeout=30, headers=headers) as client:
        for _ in range(10):
            client.get("/metrics").raise_for_status()
        for number in range(count):
            if number == count // 2:
                result.rss_half_mb = rss_mb(server.process.pid)
            if number % 100 == 0:
                print(f"{number} scrapes, RSS {rss_mb(server.process.pid):.1f} MB", file=sys.stderr)
            started = time.perf_counter()
            answer = client.get("/metrics")
            result.timings.append(time.perf_counter() - started)
            answer.raise_for_status()
            result.size = len(answer.content)
    result.rss_end_mb = rss_mb(server.process.pid)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--members", type=int, default=1000, help="enrolled members (1000)")
    parser.add_argument("--scrapes", type=int, default=300, help="scrapes to time (300)")
    parser.add_argument("--quick", action="store_true", help="60 scrapes")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as folder:
        tmp = Path(folder)
        data_dir = tmp / "cp-data"
        members = seed_simulated(data_dir, args.members)
        job_count, snapshot_count = seed_history(data_dir, members, 30, 30)
        print(f"seeded {len(members)} members", file=sys.stderr)
        server = start_server(tmp / "cp", data_dir=data_dir)
        try:
            made = serverctl_cli(
                "tokens", "create", "--name", "prom", "--role", "viewer", data_dir=data_dir
            )
            with httpx.Client(base_url=server.url, timeout=30) as client:
                for member in members:
                    send_heartbeat(client, member, heartbeat_body(member)).raise_for_status()
            run = time_scrapes(
                server, made.stdout.strip().splitlines()[-1], 60 if args.quick else args.scrapes
            )
        finally:
            stop_process(server.process)

    print(f"members={len(members)}")
    print(f"jobs={job_count}")
    print(f"snapshots={snapshot_count}")
    print(f"scrapes={len(run.timings)}")
    print(f"scrape_median_ms={statistics.median(run.timings) * 1000:.1f}")
    print(f"scrape_p95_ms={percentile(run.timings, 0.95) * 1000:.1f}")
    print(f"exposition_kb={run.size / 1024:.1f}")
    print(f"server_rss_mb={run.rss_end_mb:.1f}")
    print(f"rss_growth_second_half_mb={run.rss_end_mb - run.rss_half_mb:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
