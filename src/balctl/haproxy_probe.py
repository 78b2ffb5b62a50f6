"""The heartbeat's `haproxy` block: is HAProxy running on this host?

It does only the one check that applies: a pidfile when the operator named one (containers,
tests, hosts without systemd), else systemd's view of the `haproxy` unit where systemd runs,
else nothing ("not monitored", which the control plane never fails over on). Each heartbeat
runs it once; between heartbeats haproxy_watch.py watches the process it found, and runs it
again only when that process is gone.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Tuple

from balctl.paths import HostPaths
from balctl.proc import process_alive

logger = logging.getLogger(__name__)

SYSTEMCTL_TIMEOUT_S = 5.0
# `systemctl is-active` prints the unit's ActiveState. A unit that is reloading still serves
# (the old workers carry on until the new ones are up), so it counts as active: a reload whose
# `haproxy -c` takes seconds must not look like a dead HAProxy.
SYSTEMD_SERVING_STATES = ("active", "reloading")


class Reading(NamedTuple):
    """One full check: the heartbeat's `haproxy` block, and the process it looked at."""

    block: Dict[str, Any]
    # The pidfile's first pid (alive or not), or systemd's MainPID; None when there is none.
    pid: Optional[int] = None
    # True when checking again forks nothing (pidfile mode): worth doing every probe tick.
    cheap: bool = False


def first_pid(pidfile: Path) -> Optional[int]:
    """The first pid `pidfile` names; None when it is missing, empty, garbage or not positive."""
    try:
        text = pidfile.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    first = text.split()[0] if text else ""
    if not first.isdigit() or int(first) <= 0:
        return None
    return int(first)


def pid_alive(pidfile: Path) -> bool:
    """True when `pidfile` names a live process; False when it is missing or garbage."""
    pid = first_pid(pidfile)
    return pid is not None and process_alive(pid)


def systemd_state(unit: str = "haproxy") -> Tuple[str, Optional[int]]:
    """(ActiveState, MainPID) from one `systemctl show`; ("", None) when systemctl fails.

    ActiveState is what `systemctl is-active` prints; MainPID (0 when there is none) is the
    process the watcher then checks between heartbeats without running systemctl again.
    """
    try:
        result = subprocess.run(
            ["systemctl", "show", unit, "--property=ActiveState", "--property=MainPID"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=SYSTEMCTL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("systemctl show %s failed: %s", unit, exc)
        return "", None
    values: Dict[str, str] = {}
    for line in result.stdout.decode("utf-8", errors="replace").splitlines():
        name, sep, value = line.partition("=")
        if sep:
            values[name.strip()] = value.strip()
    main_pid = values.get("MainPID", "")
    pid = int(main_pid) if main_pid.isdigit() and int(main_pid) > 0 else None
    return values.get("ActiveState", ""), pid


def read(paths: HostPaths, pidfile: Optional[str] = None) -> Reading:
    """The full check. `pidfile` is BALCTL_HAPROXY_PIDFILE: a real path, not under root."""
    if pidfile:
        pid = first_pid(Path(pidfile))
        active = pid is not None and process_alive(pid)
        block = {"monitored": True, "active": active, "source": "pidfile"}
        return Reading(block, pid, cheap=True)
    if paths.systemd_running() and shutil.which("systemctl") is not None:
        state, pid = systemd_state()
        active = state in SYSTEMD_SERVING_STATES
        return Reading({"monitored": True, "active": active, "source": "systemd"}, pid)
    return Reading({"monitored": False, "source": "none"})


def probe(paths: HostPaths, pidfile: Optional[str] = None) -> Dict[str, Any]:
    """The `haproxy` block alone."""
    return read(paths, pidfile).block
