"""Job dispatch latency: from enqueue to the agent starting the job, and to its result.

Runs a real `serverctl serve`, a real agent zipapp heartbeating every second and a real haproxy,
all on loopback, then queues `haproxy.validate` jobs one after another. The start time is the
control plane's own claim time (`started_at`), so no clock is compared across processes.

Prints its figures last, one per line, `name=value`: dispatch_median_s, dispatch_p95_s,
complete_median_s, trials.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.agent import Agent, download_zipapp  # noqa: E402
from support.haproxy import HAProxy  # noqa: E402
from support.server import start_server, stop_process  # noqa: E402
from support.util import free_port, wait_until  # noqa: E402

MEMBER_IP = "127.0.0.2"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="10 trials")
    args = parser.parse_args()
    trials = 10 if args.quick else args.trials

    with tempfile.TemporaryDirectory(prefix="bench-dispatch-") as folder:
        tmp = Path(folder)
        server = start_server(tmp / "cp")
        haproxy = HAProxy("edge-1", tmp / "host", f"{MEMBER_IP}:{free_port(MEMBER_IP)}")
        haproxy.start()
        agent = None
        try:
            with server.api() as api:
                pool = api.post("/api/pools", json={"name": "bench"}).json()
                member = api.post(
                    f"/api/pools/{pool['id']}/members",
                    json={"hostname": "edge-1", "allowed_ips": [MEMBER_IP]},
                ).json()
                pyz = download_zipapp(server.url, tmp / "balctl.pyz")
                agent = Agent(
                    pyz, tmp / "host", env={"BALCTL_HAPROXY_PIDFILE": str(haproxy.pidfile)}
                )
                enrolled = agent.enrol(
                    server.url, member["secret"], "edge-1", "--source-ip", MEMBER_IP
                )
                if enrolled.returncode != 0:
                    raise SystemExit(f"enrolment failed: {enrolled.stderr}")
                agent.start()
                url = f"/api/pools/{pool['id']}/members/{member['id']}"
                wait_until(
                    lambda: api.get(url).json()["health"]["state"] == "healthy",
                    10,
                    what="a healthy member",
                )
                dispatch, complete = [], []
                for trial in range(trials):
                    # Land at a random point of the heartbeat cycle, as real operators do.
                    time.sleep(random.uniform(0.0, 1.0))
                    job_id = api.post(f"{url}/jobs", json={"type": "haproxy.validate"}).json()[
                        "job_id"
                    ]

                    def finished(job_id: int = job_id) -> dict | None:
                        job = api.get(f"/api/jobs/{job_id}").json()
                        return job if job["state"] not in ("pending", "running") else None

                    job = wait_until(finished, 30, interval=0.02, what=f"job {job_id}")
                    assert isinstance(job, dict) and job["state"] == "completed", job
                    created = datetime.fromisoformat(job["created_at"])
                    started = datetime.fromisoformat(job["started_at"])
                    ended = datetime.fromisoformat(job["finished_at"])
                    dispatch.append((started - created).total_seconds())
                    complete.append((ended - created).total_seconds())
                    print(
                        f"trial {trial + 1}: dispatch {dispatch[-1]:.3f} s, "
                        f"result {complete[-1]:.3f} s",
                        file=sys.stderr,
                    )
        finally:
            if agent is not None:
                agent.stop()
            haproxy.kill()
            stop_process(server.process)

    print(f"trials={trials}")
    print(f"complete_median_s={statistics.median(complete):.3f}")
    print(f"dispatch_median_s={statistics.median(dispatch):.3f}")
    print(f"dispatch_p95_s={percentile(dispatch, 0.95):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
