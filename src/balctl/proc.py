"""Running commands: argv lists (never a shell), a timeout each, output captured and bounded.

Output goes to a temporary file rather than a pipe: `haproxy -D` leaves a daemon behind, and a
daemon that inherited a pipe would keep the reader waiting until the timeout. Each command runs
in its own session, so a timeout kills everything it started (apt-get's helpers too).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
import time
from typing import IO, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

from balctl.bounds import OUTPUT_LIMIT, bound_bytes

logger = logging.getLogger(__name__)

# Never handed to a child: HAProxy, apt-get and friends have no use for the agent's secret,
# and a child's environment is readable in /proc by anyone with the same uid.
_WITHHELD = ("BALCTL_KEY",)


class Deadline:
    """A job's time budget: each command gets at most what is left of it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def cap(self, seconds: float) -> float:
        return min(seconds, self.remaining())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0


class CommandResult(NamedTuple):
    argv: Tuple[str, ...]
    returncode: Optional[int]  # None: it could not start, or it was killed at its timeout
    output: str  # stdout and stderr interleaved, at most OUTPUT_LIMIT bytes (the tail)
    error: Optional[str] = None  # why it has no return code

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        """One phrase for a summary: 'exit 1', or why it did not finish."""
        if self.error:
            return self.error
        return f"{os.path.basename(self.argv[0])} exited with {self.returncode}"


def child_env(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The agent's own environment (so "${VAR}" in HAProxy configs resolves the same), minus
    the secret."""
    env = {name: value for name, value in os.environ.items() if name not in _WITHHELD}
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str],
    timeout: float,
    env: Optional[Mapping[str, str]] = None,
    limit: int = OUTPUT_LIMIT,
) -> CommandResult:
    """Run `argv` to completion or `timeout`; never raises for the command's own failures."""
    args = tuple(argv)
    if timeout <= 0:
        return CommandResult(args, None, "", "the job's time limit was reached before it ran")
    logger.debug("running %s (timeout %g s)", " ".join(args), timeout)
    with tempfile.TemporaryFile() as out:
        try:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else child_env(),
                start_new_session=True,
            )
        except OSError as exc:
            return CommandResult(args, None, "", f"cannot run {args[0]}: {exc.strerror or exc}")
        error = None
        try:
            returncode: Optional[int] = process.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_session(process)
            returncode = None
            error = f"{os.path.basename(args[0])} did not finish within {timeout:g} s"
        return CommandResult(args, returncode, _tail(out, limit), error)


def _kill_session(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        process.kill()
    process.wait()


def _tail(out: IO[bytes], limit: int) -> str:
    size = out.seek(0, os.SEEK_END)
    # Read a little more than the limit: bound_bytes needs room to cut at a character boundary.
    start = max(0, size - limit - 8)
    out.seek(start)
    return bound_bytes(out.read(), limit, skipped=start)


def process_alive(pid: int) -> bool:
    """True for a live process; False for a dead one or a zombie (a zombie is not serving)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, it just belongs to another user
    except (OSError, OverflowError):
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            state = handle.read().rpartition(")")[2].split()[:1]
    except OSError:
        return True  # no /proc here: trust kill(0)
    return state != ["Z"]


def process_start(pid: int) -> Optional[str]:
    """Who `pid` is, without forking: its start time (field 22 of /proc/<pid>/stat), which
    differs when the kernel hands a dead process's pid to a new one; None for a dead process or
    a zombie. Where /proc cannot tell, "" for any live pid (kill(0) alone decides)."""
    if pid <= 0:
        return None
    try:
        # os.open/os.read rather than open(): this runs several times a second.
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
        try:
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
    except OSError:
        # A vanished entry is a dead process; without /proc at all, ask kill(0).
        if os.path.isdir("/proc/self"):
            return None
        return "" if process_alive(pid) else None
    fields = data.rpartition(b")")[2].split()
    if not fields or fields[0] in (b"Z", b"X"):
        return None
    return fields[19].decode("ascii", "replace") if len(fields) > 19 else ""
