"""agent.logs: the agent's recent log lines, for the control plane's support bundle.

The lines come from the first of these sources that has them:

1. `BALCTL_LOG_FILE`, when it is set (the file `balctl run` writes itself: logfile.py);
2. the journal, where systemd runs and `journalctl` is installed:
   `journalctl -u balctl-heartbeat.service -n LINES --no-pager -o short-iso [--since=-Nmin]`;
3. `/var/log/balctl/agent.log`, where install.sh's background mode appends the agent's output.

A source that cannot be used (no such file, no journalctl, an empty journal) is noted in the
result's `tried` and the next one is read. The current file is read from its end, and its last
rotation (`.1`) too when the current one has fewer lines than asked for.

Everything is redacted before it leaves the host (redact.py: the agent's own key, and whatever
looks like a secret), then bounded: at most `lines` lines and MAX_TEXT_BYTES, newest kept.
"""

from __future__ import annotations

import calendar
import os
import re
import shutil
import stat
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from balctl import proc
from balctl.bounds import one_line
from balctl.jobs import params as p
from balctl.jobs.model import JobContext, Outcome
from balctl.jobs.redact import redact
from balctl.paths import UNIT_NAME

DEFAULT_LINES = 500
MAX_LINES = 5000
MAX_SINCE_MINUTES = 7 * 24 * 60
MAX_TEXT_BYTES = 256 * 1024
# How much of the end of one file is read: room for MAX_LINES ordinary lines.
READ_LIMIT = 1024 * 1024
JOURNAL_TIMEOUT_S = 30.0
# "2024-05-01T10:00:00Z" (logfile.py), "2024-05-01 10:00:00,123" (the stderr log, local time).
_STAMP = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:[.,]\d+)?(Z)?")


class _Unavailable(Exception):
    """This source has nothing to read; the message says why (kept in `tried`)."""


def check(params: Any) -> Dict[str, Any]:
    given = p.known(p.as_object(params), ("lines", "since_minutes"))
    lines = DEFAULT_LINES
    if given.get("lines") is not None:
        lines = p.integer(given, "lines", 1, MAX_LINES)
    since: Optional[int] = None
    if given.get("since_minutes") is not None:
        since = p.integer(given, "since_minutes", 1, MAX_SINCE_MINUTES)
    return {"lines": lines, "since_minutes": since}


def run_job(params: Dict[str, Any], ctx: JobContext) -> Outcome:
    want: int = params["lines"]
    since: Optional[int] = params["since_minutes"]
    tried: List[str] = []
    for source, where, read in _sources(ctx):
        try:
            lines, note = read(want, since)
        except _Unavailable as exc:
            tried.append(f"{where}: {exc}")
            continue
        return _answer(ctx, source, where, lines, want, since, tried, note)
    return Outcome(
        False,
        "found no agent log to read: " + "; ".join(tried) + ". Set BALCTL_LOG_FILE in "
        "agent.env to have the agent keep its own log file",
        "",
        {"tried": tried},
    )


# Reads (lines wanted, since_minutes) -> (lines, a note on how they were chosen).
_Reader = Callable[[int, Optional[int]], Tuple[List[str], Optional[str]]]


def _sources(ctx: JobContext) -> List[Tuple[str, str, _Reader]]:
    sources: List[Tuple[str, str, _Reader]] = []
    if ctx.cfg.log_file:
        configured = Path(ctx.cfg.log_file)
        sources.append(("file", str(configured), lambda n, s: _from_file(configured, n, s)))
    sources.append(("journald", UNIT_NAME, lambda n, s: _from_journal(ctx, n, s)))
    default = ctx.paths.log_file
    if not ctx.cfg.log_file or Path(ctx.cfg.log_file) != default:
        sources.append(("file", str(default), lambda n, s: _from_file(default, n, s)))
    return sources


def _answer(
    ctx: JobContext,
    source: str,
    where: str,
    lines: List[str],
    want: int,
    since: Optional[int],
    tried: List[str],
    note: Optional[str],
) -> Outcome:
    text, redactions = redact("\n".join(lines[-want:]), [ctx.cfg.key])
    kept, truncated = _newest_within(text.splitlines(), MAX_TEXT_BYTES)
    body = "\n".join(kept) + ("\n" if kept else "")
    result: Dict[str, Any] = {
        "source": source,
        "where": where,
        "lines": len(kept),
        "requested_lines": want,
        "since_minutes": since,
        "truncated": truncated,
        "redactions": redactions,
        "text": body,
    }
    if tried:
        result["tried"] = tried
    if note:
        result["note"] = note
    summary = f"{len(kept)} log line(s) from {where}"
    if truncated:
        summary += f" (cut to the newest {MAX_TEXT_BYTES // 1024} KiB)"
    return Outcome(True, summary, body, result)


def _newest_within(lines: List[str], limit: int) -> Tuple[List[str], bool]:
    """The newest lines whose text (newlines included) fits in `limit` UTF-8 bytes."""
    size = 0
    start = len(lines)
    while start > 0:
        cost = len(lines[start - 1].encode("utf-8")) + 1
        if size + cost > limit:
            return lines[start:], True
        size += cost
        start -= 1
    return lines, False


# -- the journal ----------------------------------------------------------------------------------


def _from_journal(
    ctx: JobContext, want: int, since: Optional[int]
) -> Tuple[List[str], Optional[str]]:
    if not ctx.paths.systemd_running():
        raise _Unavailable("systemd is not running on this host")
    binary = shutil.which("journalctl")
    if binary is None:
        raise _Unavailable("journalctl is not installed")
    argv = [binary, "-u", UNIT_NAME, "-n", str(want), "--no-pager", "-o", "short-iso"]
    if since is not None:
        argv.append(f"--since=-{since}min")
    result = proc.run(argv, ctx.deadline.cap(JOURNAL_TIMEOUT_S), limit=READ_LIMIT)
    if not result.ok:
        raise _Unavailable(f"{result.describe()}: {one_line(result.output, 200)}")
    lines = result.output.splitlines()
    # journalctl's own remarks ("-- No entries --", "-- Logs begin at ...") are not log lines.
    if not any(line and not line.startswith("-- ") for line in lines):
        raise _Unavailable(f"the journal has no lines of {UNIT_NAME}")
    return lines, None


# -- a file ---------------------------------------------------------------------------------------


def _from_file(path: Path, want: int, since: Optional[int]) -> Tuple[List[str], Optional[str]]:
    lines = _tail(path, want)
    if len(lines) < want:  # the current file is short: its last rotation has older lines
        try:
            lines = _tail(Path(f"{path}.1"), want - len(lines)) + lines
        except _Unavailable:
            pass
    if since is None:
        return lines[-want:], None
    return _newer_than(lines, time.time() - since * 60)


def _tail(path: Path, want: int) -> List[str]:
    """The last `want` lines of a regular file, reading at most READ_LIMIT bytes of it."""
    try:
        # O_NONBLOCK: a FIFO at this path must not hang the job in open().
        fd = os.open(str(path), os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise _Unavailable("no such file") from None
    except OSError as exc:
        raise _Unavailable(f"cannot open it: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Unavailable("not a regular file")
        size = handle.seek(0, os.SEEK_END)
        start = max(0, size - READ_LIMIT)
        handle.seek(start)
        data = handle.read(READ_LIMIT)
    lines = data.decode("utf-8", errors="replace").splitlines()
    if start > 0 and lines:
        lines = lines[1:]  # read from the middle of a line
    return lines[-want:] if want else []


def _newer_than(lines: List[str], cutoff: float) -> Tuple[List[str], Optional[str]]:
    """The lines logged at or after `cutoff` (Unix time). A line without a time stamp (a
    traceback's) has the time of the stamped line above it; lines carrying no stamps at all
    cannot be filtered and are all kept, with a note that says so."""
    times = [_stamp(line) for line in lines]
    known = [t for t in times if t is not None]
    if not known:
        return lines, "since_minutes was not applied: these lines carry no time stamps"
    current = known[0]
    kept: List[str] = []
    for line, moment in zip(lines, times):
        current = moment if moment is not None else current
        if current >= cutoff:
            kept.append(line)
    return kept, None


def _stamp(line: str) -> Optional[float]:
    found = _STAMP.match(line)
    if found is None:
        return None
    try:
        parsed = time.strptime(f"{found.group(1)} {found.group(2)}", "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    # A trailing Z is UTC (logfile.py); without it, the host's local time (the stderr format).
    return float(calendar.timegm(parsed)) if found.group(3) else time.mktime(parsed)
