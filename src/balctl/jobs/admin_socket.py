"""haproxy.admin_socket.enable / .disable: ServerCTL's admin socket in haproxy.cfg's `global`.

Enable adds two lines to the global section, disable removes exactly those two (any other
`stats socket` line is the operator's and stays). Both are idempotent: when there is nothing to
change, nothing is written and nothing reloads. A change is written atomically (keeping the
file's mode and owner, with a backup beside it), then HAProxy reloads (validate first; see
haproxy_ctl.reload). If the reload is refused or fails, the previous file comes back, and when a
new HAProxy had already taken over, it is reloaded again with that previous file.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Tuple

from balctl import haproxy_ctl
from balctl.files import backup_path, replace_file
from balctl.haproxy_cfg import section_keyword
from balctl.jobs.model import JobContext, Outcome
from balctl.paths import HostPaths
from balctl.proc import Deadline

TIMEOUT_LINE = "stats timeout 2m"
INDENT = "    "
# The path is written into haproxy.cfg unquoted: keep it to characters HAProxy reads literally.
_PLAIN_PATH = re.compile(r"^/[A-Za-z0-9._/-]+$")
# A rollback must be able to reload even when the job's own time is used up.
ROLLBACK_BUDGET_S = 120.0


def socket_line(paths: HostPaths) -> str:
    return f"stats socket {paths.admin_socket} mode 600 level admin expose-fd listeners"


def _same(line: str, wanted: str) -> bool:
    return " ".join(line.split()) == wanted


def _global_ranges(lines: List[str]) -> List[Tuple[int, int]]:
    """[start, end) line ranges of every global section, header line included."""
    ranges: List[Tuple[int, int]] = []
    start = None
    for index, line in enumerate(lines):
        keyword = section_keyword(line)
        if keyword is None:
            continue
        if start is not None:
            ranges.append((start, index))
            start = None
        if keyword == "global":
            start = index
    if start is not None:
        ranges.append((start, len(lines)))
    return ranges


def _has(lines: List[str], ranges: List[Tuple[int, int]], wanted: str) -> bool:
    return any(_same(lines[i], wanted) for start, end in ranges for i in range(start, end))


def is_enabled(text: str, paths: HostPaths) -> bool:
    """Does haproxy.cfg's global section hold ServerCTL's admin socket line?"""
    lines = text.splitlines()
    return _has(lines, _global_ranges(lines), socket_line(paths))


def add_lines(text: str, paths: HostPaths) -> Tuple[str, bool]:
    """(new text, changed): the two lines at the end of the first global section."""
    lines = text.splitlines(keepends=True)
    ranges = _global_ranges(lines)
    missing = [w for w in (socket_line(paths), TIMEOUT_LINE) if not _has(lines, ranges, w)]
    if not missing:
        return text, False
    added = [f"{INDENT}{wanted}\n" for wanted in missing]
    if not ranges:
        return "global\n" + "".join(added) + "\n" + text, True
    start, end = ranges[0]
    # After the section's last line with content, so a blank separator line stays below it.
    at = start + 1
    for index in range(start + 1, end):
        stripped = lines[index].strip()
        if stripped and not stripped.startswith("#"):
            at = index + 1
    if not lines[at - 1].endswith("\n"):
        lines[at - 1] += "\n"
    return "".join(lines[:at] + added + lines[at:]), True


def remove_lines(text: str, paths: HostPaths) -> Tuple[str, bool]:
    """(new text, changed): exactly ServerCTL's two lines removed from the global sections."""
    lines = text.splitlines(keepends=True)
    wanted = (socket_line(paths), TIMEOUT_LINE)
    drop = {
        index
        for start, end in _global_ranges(lines)
        for index in range(start, end)
        if any(_same(lines[index], w) for w in wanted)
    }
    if not drop:
        return text, False
    return "".join(line for index, line in enumerate(lines) if index not in drop), True


def enable(_: Dict[str, Any], ctx: JobContext) -> Outcome:
    return _apply(ctx, True)


def disable(_: Dict[str, Any], ctx: JobContext) -> Outcome:
    return _apply(ctx, False)


def _apply(ctx: JobContext, enabling: bool) -> Outcome:
    paths, cfg = ctx.paths, ctx.paths.haproxy_cfg
    word = "enabled" if enabling else "disabled"
    if not _PLAIN_PATH.match(str(paths.admin_socket)):
        return Outcome(False, f"cannot write the socket path {paths.admin_socket} unquoted")
    try:
        before = cfg.read_bytes()
        text = before.decode("utf-8")
    except FileNotFoundError:
        return Outcome(False, f"there is no HAProxy configuration at {cfg} (install HAProxy first)")
    except (OSError, UnicodeDecodeError) as exc:
        return Outcome(False, f"cannot read {cfg}: {exc}")
    after, changed = add_lines(text, paths) if enabling else remove_lines(text, paths)
    if not changed:
        return Outcome(True, f"admin socket already {word}", "", {"changed": False})
    try:
        if enabling:
            paths.admin_socket.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        mode = cfg.stat().st_mode & 0o7777
        replace_file(backup_path(cfg), before, default_mode=mode)
        replace_file(cfg, after.encode("utf-8"))
    except OSError as exc:
        # Nothing is half-done: replace_file either swapped the whole file or left it alone.
        return Outcome(False, f"cannot change {cfg}: {exc}", "", {"changed": False})
    step = haproxy_ctl.reload(paths, ctx.cfg.haproxy_pidfile, ctx.deadline)
    if step.ok:
        where = f" at {paths.admin_socket}" if enabling else ""
        return Outcome(
            True, f"admin socket {word}{where}; {step.summary}", step.output, {"changed": True}
        )
    replace_file(cfg, before)
    undo = "restored the previous haproxy.cfg"
    output = step.output
    if step.took_over:
        back = haproxy_ctl.reload(paths, ctx.cfg.haproxy_pidfile, Deadline(ROLLBACK_BUDGET_S))
        output += "\n# rollback\n" + back.output
        undo += " and reloaded it" if back.ok else f", but reloading it failed too: {back.summary}"
    return Outcome(False, f"{step.summary}; {undo}", output, {"changed": False})
