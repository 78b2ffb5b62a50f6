"""Every host path the agent touches, in one object.

`BALCTL_ROOT` prefixes all of them, so tests (and the end-to-end fleet) can run the real agent
under a temporary directory without touching /etc or /run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, NamedTuple, Optional

ROOT_ENV = "BALCTL_ROOT"
UNIT_NAME = "balctl-heartbeat.service"


class HostPaths(NamedTuple):
    root: str
    etc_dir: Path
    agent_env: Path
    ca_pem: Path
    haproxy_dir: Path
    haproxy_run_dir: Path
    admin_socket: Path
    systemd_unit_dir: Path
    run_systemd_system: Path
    lib_dir: Path
    run_dir: Path
    log_dir: Path

    @classmethod
    def under(cls, root: str = "") -> HostPaths:
        # An absolute root keeps the paths independent of the working directory; "" is "/".
        base = os.path.abspath(root).rstrip("/") if root else ""

        def at(path: str) -> Path:
            return Path(base + path)

        return cls(
            root=base,
            etc_dir=at("/etc/balctl"),
            agent_env=at("/etc/balctl/agent.env"),
            ca_pem=at("/etc/balctl/ca.pem"),
            haproxy_dir=at("/etc/haproxy"),
            haproxy_run_dir=at("/run/haproxy"),
            admin_socket=at("/run/haproxy/admin.sock"),
            systemd_unit_dir=at("/etc/systemd/system"),
            run_systemd_system=at("/run/systemd/system"),
            lib_dir=at("/usr/local/lib/balctl"),
            run_dir=at("/run/balctl"),
            log_dir=at("/var/log/balctl"),
        )

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> HostPaths:
        env = os.environ if environ is None else environ
        return cls.under(env.get(ROOT_ENV, ""))

    @property
    def pyz(self) -> Path:
        return self.lib_dir / "balctl.pyz"

    @property
    def unit_file(self) -> Path:
        return self.systemd_unit_dir / UNIT_NAME

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "balctl.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "agent.log"

    def systemd_running(self) -> bool:
        """True when systemd is PID 1 here: the same test as sd_booted(3)."""
        return self.run_systemd_system.is_dir()

    # HAProxy's own files, as Debian lays them out; properties so they follow `haproxy_dir`.
    @property
    def haproxy_cfg(self) -> Path:
        return self.haproxy_dir / "haproxy.cfg"

    @property
    def haproxy_conf_d(self) -> Path:
        return self.haproxy_dir / "conf.d"

    @property
    def haproxy_pidfile(self) -> Path:
        """Where the agent keeps HAProxy's pid when it runs HAProxy itself (no systemd)."""
        return Path(self.root + "/run/haproxy.pid")

    # -- backups and restores ----------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        """The agent's private working files (backup archives on their way out): 0700."""
        return Path(self.root + "/var/lib/balctl")

    @property
    def restore_dir(self) -> Path:
        """Staging and journals of restores: beside the files they replace (same filesystem,
        so renames are atomic), in a folder HAProxy never loads."""
        return self.haproxy_dir / ".balctl-restore"

    def host(self, logical: str) -> Path:
        """The host path of a logical absolute path ("/etc/haproxy/haproxy.cfg")."""
        return Path(self.root + logical)

    def logical(self, host_path: str) -> Optional[str]:
        """The logical path of an absolute host path under the root; None outside it."""
        normal = os.path.normpath(host_path)
        if normal.startswith("//"):  # POSIX keeps a leading "//"; the kernel reads it as "/"
            normal = "/" + normal.lstrip("/")
        if not self.root:
            return normal if normal.startswith("/") else None
        if normal == self.root:
            return "/"
        if normal.startswith(self.root + "/"):
            return normal[len(self.root) :]
        return None
