"""The heartbeat's `haproxy` block: is HAProxy running on this host?

Called about once a second, so it does only the one check that applies: a pidfile when the
operator named one (containers, tests, hosts without systemd), else `systemctl is-active haproxy`
where systemd runs, else nothing ("not monitored", which the control plane never fails over on).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, Optional

from balctl.paths import HostPaths
from balctl.proc import process_alive

logger = logging.getLogger(__name__)

SYSTEMCTL_TIMEOUT_S = 5.0


def pid_alive(pidfile: Path) -> bool:
    """True when `pidfile` names a live process; False when it is missing or garbage."""
    try:
        text = pidfile.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return False
    first = text.split()[0] if text else ""
    if not first.isdigit():
        return False
    return process_alive(int(first))


def systemd_active(unit: str = "haproxy") -> bool:
    """`systemctl is-active <unit>` prints exactly "active" when the unit is up."""
    try:
        result = subprocess.run(
            ["systemctl", "is-active", unit],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=SYSTEMCTL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("systemctl is-active %s failed: %s", unit, exc)
        return False
    return result.stdout.decode("utf-8", errors="replace").strip() == "active"


def probe(paths: HostPaths, pidfile: Optional[str] = None) -> Dict[str, Any]:
    """The `haproxy` block. `pidfile` is BALCTL_HAPROXY_PIDFILE: a real path, not under root."""
    if pidfile:
        return {"monitored": True, "active": pid_alive(Path(pidfile)), "source": "pidfile"}
    if paths.systemd_running() and shutil.which("systemctl") is not None:
        return {"monitored": True, "active": systemd_active(), "source": "systemd"}
    return {"monitored": False, "source": "none"}
