"""haproxy.install (and `balctl --provision-haproxy`): HAProxy from the distribution's packages.

Idempotent: when `haproxy` is already on PATH nothing else runs. Otherwise apt-get (update, then
a non-interactive install) or dnf, whichever this host has.
"""

from __future__ import annotations

import shutil
from typing import Any, Dict, List, Optional

from balctl import proc
from balctl.jobs.model import JobContext, Outcome

INSTALL_TIMEOUT_S = 600.0
VERSION_TIMEOUT_S = 10.0
_APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


def installed_version(binary: str, deadline: proc.Deadline) -> Optional[str]:
    """ "2.6.12-1+deb12u4" from `haproxy -v`'s "HAProxy version 2.6.12-1+deb12u4 2023/..."."""
    result = proc.run([binary, "-v"], deadline.cap(VERSION_TIMEOUT_S))
    for line in result.output.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0].lower() == "haproxy" and words[1] == "version":
            return words[2]
    return None


def provision(deadline: proc.Deadline) -> Outcome:
    found = shutil.which("haproxy")
    if found:
        version = installed_version(found, deadline) or "version unknown"
        facts = {"changed": False, "version": version}
        return Outcome(True, f"haproxy already installed ({version})", "", facts)
    apt, dnf = shutil.which("apt-get"), shutil.which("dnf")
    if apt:
        steps = [[apt, "update"], [apt, "install", "-y", "haproxy"]]
        manager = "apt-get"
    elif dnf:
        steps = [[dnf, "install", "-y", "haproxy"]]
        manager = "dnf"
    else:
        return Outcome(
            False,
            "cannot install haproxy: neither apt-get nor dnf is on PATH; install it with this "
            "host's package manager, then run the job again",
        )
    transcript: List[str] = []
    for argv in steps:
        result = proc.run(argv, deadline.cap(INSTALL_TIMEOUT_S), proc.child_env(_APT_ENV))
        transcript.append(f"$ {' '.join(argv)}\n{result.output}")
        # A failed `apt-get update` (one broken third-party repository) need not stop the
        # install, which may well work from the lists already there.
        if not result.ok and argv[-1] != "update":
            return Outcome(
                False,
                f"{manager} could not install haproxy: {result.describe()}",
                _join(transcript),
            )
    found = shutil.which("haproxy")
    if not found:
        return Outcome(
            False,
            f"{manager} finished but haproxy is not on PATH; check the package and PATH",
            _join(transcript),
        )
    version = installed_version(found, deadline) or "version unknown"
    facts = {"changed": True, "version": version}
    return Outcome(True, f"haproxy installed with {manager} ({version})", _join(transcript), facts)


def _join(parts: List[str]) -> str:
    return "\n".join(parts)


def run_job(_: Dict[str, Any], ctx: JobContext) -> Outcome:
    return provision(ctx.deadline)
