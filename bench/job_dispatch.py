"""Job dispatch latency: from enqueue to the agent starting the job, and to its result.

Runs a real `serverctl serve` and three real agents (zipapp, heartbeat every second), each with
its own real haproxy and its own loopback address, then queues `haproxy.validate` jobs in
rounds: one job per agent per round, each at a random point of the heartbeat cycle. The start
time is the control plane's own claim time (`started_at`), so no clock is compared across
processes.

Prints its figures last, one per line, `name=value`: jobs, agents, complete_median_s,
dispatch_median_s, dispatch_p95_s.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from figures import percentile  # noqa: E402

from support.agent import Agent, download_zipapp  # noqa: E402
from support.haproxy import HAProxy  # noqa: E402
from support.server import ServerProcess, start_server, stop_process  # noqa: E402
from support.util import free_port, wait_until  # noqa: E402

AGENT_IPS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def one_job(server: ServerProcess, member_url: str, out: list[tuple[float, float]]) -> None:
    """Queue one job at a random moment, wait for it, and record (dispatch, result) seconds."""
    time.sleep(random.uniform(0.0, 1.0))
    with server.api() as api:
        job_id = api.post(f"{member_url}/jobs", json={"type": "haproxy.validate"}).json()["job_id"]

        def finished() -> dict[str, Any] | None:
            job: dict[str, Any] = api.get(f"/api/jobs/{job_id}").json()
            return job if job["state"] not in ("pending", "running") else None

        job = wait_until(finished, 30, interval=0.02, what=f"job {job_id}")
    assert isinstance(job, dict) and job["state"] == "completed", job
    created = datetime.fromisoformat(job["created_at"])
    started = datetime.fromisoformat(job["started_at"])
    ended = datetime.fromisoformat(job["finished_at"])
    out.append(((started - created).total_seconds(), (ended - created).total_seconds()))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=60, help="at least this many jobs (60)")
    parser.add_argument("--quick", action="store_true", help="21 jobs")
    args = parser.parse_args()
    rounds = -(-(21 if args.quick else args.jobs) // len(AGENT_IPS))

    with tempfile.TemporaryDirectory(prefix="bench-dispatch-") as folder:
        tmp = Path(folder)
        server = start_server(tmp / "cp")
        fleet: list[tuple[HAProxy, Agent]] = []
        try:
            with server.api() as api:
                pool = api.post("/api/pools", json={"name": "bench"}).json()
                pyz = download_zipapp(server.url, tmp / "balctl.pyz")
                members = []
                for number, ip in enumerate(AGENT_IPS, start=1):
                    root = tmp / f"host-{number}"
                    haproxy = HAProxy(f"edge-{number}", root, f"{ip}:{free_port(ip)}")
                    haproxy.start()
                    member = api.post(
                        f"/api/pools/{pool['id']}/members",
                        json={"hostname": f"edge-{number}", "allowed_ips": [ip]},
                    ).json()
                    agent = Agent(pyz, root, env={"BALCTL_HAPROXY_PIDFILE": str(haproxy.pidfile)})
                    fleet.append((haproxy, agent))
                    done = agent.enrol(
                        server.url, member["secret"], f"edge-{number}", "--source-ip", ip
                    )
                    if done.returncode != 0:
                        raise SystemExit(f"enrolment failed: {done.stderr}")
                    agent.start()
                    members.append(f"/api/pools/{pool['id']}/members/{member['id']}")
                for url in members:
                    wait_until(
                        lambda url=url: api.get(url).json()["health"]["state"] == "healthy",
                        10,
                        what="a healthy member",
                    )
            figures: list[tuple[float, float]] = []
            for number in range(rounds):
                threads = [
                    threading.Thread(target=one_job, args=(server, url, figures)) for url in members
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(60)
                print(f"round {number + 1}/{rounds}: {len(figures)} jobs", file=sys.stderr)
        finally:
            for haproxy, agent in fleet:
                agent.stop()
                haproxy.kill()
            stop_process(server.process)

    dispatch = [d for d, _ in figures]
    print(f"jobs={len(figures)}")
    print(f"agents={len(AGENT_IPS)}")
    print(f"complete_median_s={statistics.median(c for _, c in figures):.3f}")
    print(f"dispatch_median_s={statistics.median(dispatch):.3f}")
    print(f"dispatch_p95_s={percentile(dispatch, 0.95):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
