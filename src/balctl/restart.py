"""Restarting the agent onto a new zipapp.

Under systemd the agent exits with RESTART_EXIT_CODE and `Restart=always` starts the new file.
Without systemd it replaces itself in place with os.execv: same pid (so /run/balctl/balctl.pid
stays right), same environment, same arguments. `balctl --update` asks a running agent to do
this: `systemctl try-restart` under systemd, else SIGHUP to the pid in /run/balctl/balctl.pid.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Mapping, Optional, Sequence

from balctl import proc
from balctl.paths import UNIT_NAME, HostPaths
from balctl.proc import process_alive

logger = logging.getLogger(__name__)

RESTART_EXIT_CODE = 75  # EX_TEMPFAIL: "try again", which is what systemd will do
SYSTEMCTL_TIMEOUT_S = 60.0


def under_systemd(environ: Optional[Mapping[str, str]] = None) -> bool:
    """True when systemd started this process as a service (it sets INVOCATION_ID)."""
    env = os.environ if environ is None else environ
    return bool(env.get("INVOCATION_ID"))


def running_pyz(paths: HostPaths) -> Path:
    """The zipapp this process runs from; the installed one when run from a source tree."""
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0.endswith(".pyz"):
        return Path(os.path.abspath(argv0))
    return paths.pyz


def restart_self(pyz: Path, run_args: Sequence[str]) -> int:
    """Exit code for systemd to restart us, or never return (execv)."""
    if under_systemd():
        logger.info("exiting with %d so that systemd starts the new agent", RESTART_EXIT_CODE)
        return RESTART_EXIT_CODE
    # From a source tree with no zipapp installed yet, start the way we were started.
    target = [str(pyz)] if pyz.is_file() else ["-m", "balctl"]
    argv = [sys.executable, *target, *run_args]
    logger.info("restarting as %s", " ".join(argv))
    # execv discards buffers: what was logged must reach the log file first.
    for handler in logging.getLogger("balctl").handlers:
        with contextlib.suppress(OSError, ValueError):
            handler.flush()
    os.execv(sys.executable, argv)


def restart_running_agent(paths: HostPaths) -> str:
    """Ask the agent that runs on this host to restart; what was done, as one sentence."""
    if paths.systemd_running() and shutil.which("systemctl"):
        result = proc.run(["systemctl", "try-restart", UNIT_NAME], SYSTEMCTL_TIMEOUT_S)
        if result.ok:
            return f"restarted {UNIT_NAME} (if it was running)"
        return f"could not restart {UNIT_NAME}: {result.describe()}"
    pid = _agent_pid(paths.pidfile)
    if pid is None:
        return "no running agent found in background mode; start it (balctl.pyz run)"
    os.kill(pid, signal.SIGHUP)
    return f"asked the running agent (pid {pid}) to restart"


def _agent_pid(pidfile: Path) -> Optional[int]:
    try:
        text = pidfile.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    if not text.isdigit() or not process_alive(int(text)) or int(text) == os.getpid():
        return None
    # Only a process that really is the agent: the pid may have been reused since.
    try:
        with open(f"/proc/{text}/cmdline", "rb") as handle:
            cmdline = handle.read()
    except OSError:
        return None
    return int(text) if b"balctl" in cmdline else None
