"""The job runner, loaded when the control plane hands out the first job.

Most of an agent's life is heartbeats; jobs come now and then, and many agents never get one.
The job catalogue imports everything the jobs need (archives, transfers, restores, installs,
the log reader), about 1.5 MB of memory that an idle agent would carry for nothing, and an
idle worker thread wakes twice a second. So the heartbeat loop talks to this stand-in: it
answers "no jobs in hand" until the first job arrives, then imports the runner, opens the
runner's own connection to the control plane and starts its worker thread, for good.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, List, Optional

from balctl.config import AgentConfig
from balctl.paths import HostPaths
from balctl.transport import ControlPlaneClient

if TYPE_CHECKING:  # imported on the first job, not at start-up (see the module docstring)
    from balctl.jobs.runner import JobRunner

logger = logging.getLogger(__name__)


class DeferredJobRunner:
    """`offer` and `running` as the heartbeat loop calls them; the runner behind starts on the
    first offer. `close` waits for a running job (up to a grace time) and closes the runner's
    connection."""

    def __init__(
        self,
        cfg: AgentConfig,
        paths: HostPaths,
        connect: Callable[[], ControlPlaneClient],
        stop: threading.Event,
        on_restart: Optional[Callable[[], None]] = None,
    ) -> None:
        self.cfg = cfg
        self.paths = paths
        self.connect = connect
        self.stop = stop
        self.on_restart = on_restart
        self.runner: Optional[JobRunner] = None
        self.thread: Optional[threading.Thread] = None
        self._client: Optional[ControlPlaneClient] = None
        self._lock = threading.Lock()
        self._failed = False

    def offer(self, jobs: Any) -> int:
        """Queue the jobs (JobRunner.offer), starting the runner first if it has not started;
        an empty or malformed offer starts nothing."""
        if self.runner is None and (not isinstance(jobs, list) or not jobs):
            return 0
        try:
            runner = self._started()
        except Exception:  # a broken job module must not cost the heartbeats that carry this
            if not self._failed:
                logger.exception("cannot start the job runner: jobs will not run on this host")
            self._failed = True
            return 0
        return runner.offer(jobs)

    def running(self) -> List[int]:
        """The jobs in hand (JobRunner.running); none before the first offer."""
        runner = self.runner
        return [] if runner is None else runner.running()

    def close(self, grace_s: float) -> bool:
        """Wait up to `grace_s` for the worker to stop (`stop` must be set); False when it is
        still running a job. Closes the runner's connection either way."""
        thread = self.thread
        if thread is not None:
            thread.join(grace_s)
        if self._client is not None:
            self._client.close()
        return thread is None or not thread.is_alive()

    def _started(self) -> JobRunner:
        with self._lock:
            if self.runner is None:
                from balctl.jobs.runner import JobRunner

                # The runner's own client: http.client connections are not shared by threads.
                self._client = self.connect()
                runner = JobRunner(self.cfg, self._client, self.paths, on_restart=self.on_restart)
                self.thread = threading.Thread(
                    target=runner.run, args=(self.stop,), name="jobs", daemon=True
                )
                self.thread.start()
                self.runner = runner
            return self.runner
