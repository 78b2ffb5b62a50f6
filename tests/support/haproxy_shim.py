"""A `haproxy` command for an agent's PATH: it runs the real haproxy, logs every call, and can
hold one call at a chosen point, so a test can kill the agent exactly there.

Points: `check` (before a `haproxy -c` runs), `after-check` (after it ran, before its exit status
reaches the agent), `before-start` and `after-start` (around a start or reload, `haproxy -D ...`).
A hold is taken by the first call that reaches its point; the held call touches
`held-<point>` in the control folder and waits. If the agent dies meanwhile the call notices
(its parent changes) and exits at once without running anything more: a killed agent's command
does not carry on behind its back. `slow_checks(s)` makes every `haproxy -c` take `s` seconds
longer: a job that lasts a while.

    shim = HaproxyShim(tmp / "shim")
    agent = Agent(pyz, root, env={**shim.env(), ...})
    shim.hold("before-start", 30)
    ... queue a reload ...
    shim.wait_held("before-start")
    agent.process.kill()
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path

from support.haproxy import HAPROXY
from support.util import wait_until

POINTS = ("check", "after-check", "before-start", "after-start")
# The shell's sleep step, and so how quickly a held call notices its agent died.
_STEP_S = 0.05

_SCRIPT = """#!/bin/sh
# A haproxy stand-in for fault injection (tests/support/haproxy_shim.py).
control='{control}'
real='{real}'
kind=start
for arg in "$@"; do
    case "$arg" in -c) kind=check ;; -v|-vv|-vvv) kind=version ;; esac
done
printf '%s %s %s\\n' "$kind" "$$" "$*" >> "$control/calls"
parent=$(cut -d' ' -f4 /proc/$$/stat)
marker=

wait_steps() {{  # $1 steps of {step}s; exit when the parent (the agent) is gone
    n=$1
    while [ "$n" -gt 0 ]; do
        if [ "$(cut -d' ' -f4 /proc/$$/stat)" != "$parent" ]; then
            [ -n "$marker" ] && rm -f "$marker"
            exit 137
        fi
        sleep {step}
        n=$((n - 1))
    done
}}

hold() {{  # $1: the point; one call takes a hold, by renaming its file
    taken="$control/taken-$1.$$"
    mv "$control/hold-$1" "$taken" 2>/dev/null || return 0
    marker="$control/held-$1"
    : > "$marker"
    wait_steps "$(cat "$taken")"
    rm -f "$marker"
    marker=
}}

if [ "$kind" = check ]; then
    hold check
    [ -f "$control/slow-check" ] && wait_steps "$(cat "$control/slow-check")"
    "$real" "$@"
    status=$?
    hold after-check
    exit $status
fi
if [ "$kind" = start ]; then
    hold before-start
    "$real" "$@"
    status=$?
    hold after-start
    exit $status
fi
exec "$real" "$@"
"""


class HaproxyShim:
    def __init__(self, folder: Path, real: str = HAPROXY) -> None:
        self.folder = folder
        self.bin = folder / "bin"
        self.control = folder / "control"
        self.bin.mkdir(parents=True, exist_ok=True)
        self.control.mkdir(parents=True, exist_ok=True)
        script = self.bin / "haproxy"
        script.write_text(_SCRIPT.format(control=self.control, real=real, step=_STEP_S))
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)

    def env(self) -> dict[str, str]:
        """The agent's PATH with the shim first (the agent finds haproxy through PATH)."""
        return {"PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"}

    # -- faults ---------------------------------------------------------------------------------

    def hold(self, point: str, seconds: float) -> None:
        """The next call reaching `point` waits `seconds` (or until its agent dies)."""
        assert point in POINTS, point
        self.release(point)
        (self.control / f"hold-{point}").write_text(str(max(1, round(seconds / _STEP_S))))

    def release(self, point: str) -> None:
        """Forget a hold nobody took yet."""
        (self.control / f"hold-{point}").unlink(missing_ok=True)

    def held(self, point: str) -> bool:
        return (self.control / f"held-{point}").exists()

    def wait_held(self, point: str, timeout: float = 30) -> None:
        wait_until(
            lambda: self.held(point), timeout, interval=0.01, what=f"haproxy held at {point}"
        )

    def slow_checks(self, seconds: float) -> None:
        """Every `haproxy -c` from now on takes `seconds` longer (0: back to normal)."""
        slow = self.control / "slow-check"
        if seconds <= 0:
            slow.unlink(missing_ok=True)
        else:
            slow.write_text(str(max(1, round(seconds / _STEP_S))))

    def reset(self) -> None:
        for path in self.control.iterdir():
            if path.name != "calls":
                path.unlink(missing_ok=True)

    # -- what happened --------------------------------------------------------------------------

    def calls(self, kind: str | None = None) -> list[str]:
        """Every call so far as "<kind> <pid> <args>", oldest first; `kind`: check, start or
        version only."""
        try:
            lines = (self.control / "calls").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [line for line in lines if kind is None or line.split(" ", 1)[0] == kind]

    def starts(self) -> int:
        """How many times haproxy was started or reloaded through the agent."""
        return len(self.calls("start"))

    def settle(self, timeout: float = 10) -> None:
        """Wait until no held call is left (an orphaned one exits within a step)."""
        deadline = time.monotonic() + timeout
        while any(p.name.startswith("held-") for p in self.control.iterdir()):
            if time.monotonic() > deadline:
                raise AssertionError("a held haproxy call did not end")
            time.sleep(_STEP_S)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
