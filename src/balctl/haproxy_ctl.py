"""Checking and reloading HAProxy: `haproxy -c` first, always; then a reload; then proof.

Two ways to reload (ARCHITECTURE.md, "Agent"):
- pidfile mode (BALCTL_HAPROXY_PIDFILE is set, or systemd is not running: containers, tests):
  the agent starts `haproxy -D -p <pidfile> -f cfg [-f conf.d] -sf <old pids>` itself, with its
  own environment, so `"${VAR}"` in the configuration resolves as it did before. The new process
  binds, then tells the old ones to finish their connections and exit (APIS.md 5.6);
- systemd mode: `systemctl reload haproxy`.
Afterwards the admin socket must answer `show info` within a few seconds, from the new process:
in pidfile mode its `Pid` is the one in the pidfile; under systemd it differs from the pid that
answered before the reload.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import List, NamedTuple, Optional, Tuple

from balctl import proc
from balctl.errors import RuntimeApiError
from balctl.haproxy_cfg import config_args
from balctl.haproxy_stats import parse_info
from balctl.paths import HostPaths
from balctl.runtime_api import candidates, first_answer

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 60.0
START_TIMEOUT_S = 60.0
SYSTEMCTL_TIMEOUT_S = 90.0
VERIFY_WINDOW_S = 5.0
_VERIFY_PAUSE_S = 0.2
_FALLBACK_BINARIES = ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")


class Step(NamedTuple):
    """What a check or a reload came to: ok, one line for the summary, the commands' output."""

    ok: bool
    summary: str
    output: str = ""
    # Reload only: a new HAProxy took over (so a rollback must reload again), and its pid.
    took_over: bool = False
    pid: Optional[int] = None
    # Reload only: the admin socket proved the new process (None: there is no socket to ask).
    verified: Optional[bool] = None


def haproxy_binary() -> Optional[str]:
    # systemd services have /usr/sbin on PATH, but an agent started by hand might not.
    found = shutil.which("haproxy")
    if found:
        return found
    return next((p for p in _FALLBACK_BINARIES if os.access(p, os.X_OK)), None)


def first_alert(output: str) -> str:
    """The first fatal `[ALERT]` line, whitespace squeezed; else the first `[ALERT]`; else the
    last line. An alert HAProxy "continues" after (a `pidfile` given twice) is not the reason."""
    lines = [" ".join(line.split()) for line in output.splitlines() if line.strip()]
    alerts = [line for line in lines if "[ALERT]" in line]
    fatal = [line for line in alerts if not line.endswith("Continuing.")]
    if fatal or alerts:
        return (fatal or alerts)[0]
    return lines[-1] if lines else ""


def _transcript(result: proc.CommandResult) -> str:
    return f"$ {' '.join(result.argv)}\n{result.output}"


def validate(paths: HostPaths, deadline: proc.Deadline) -> Step:
    """`haproxy -c` on haproxy.cfg (and conf.d): ok iff it exits 0."""
    binary = haproxy_binary()
    if binary is None:
        return Step(False, "haproxy is not installed (run the haproxy.install job first)")
    if not paths.haproxy_cfg.is_file():
        return Step(False, f"there is no HAProxy configuration at {paths.haproxy_cfg}")
    result = proc.run([binary, "-c", *config_args(paths)], deadline.cap(CHECK_TIMEOUT_S))
    if result.ok:
        return Step(True, "configuration is valid", _transcript(result))
    reason = first_alert(result.output) if result.returncode is not None else result.describe()
    return Step(
        False, f"configuration is invalid: {reason or result.describe()}", _transcript(result)
    )


# -- processes ---------------------------------------------------------------------------------


def live_pids(pidfile: Path) -> List[int]:
    """The live pids a pidfile lists (one per line; HAProxy may write several)."""
    try:
        words = pidfile.read_text(encoding="ascii", errors="replace").split()
    except OSError:
        return []
    return [int(word) for word in words if word.isdigit() and proc.process_alive(int(word))]


def pidfile_mode(paths: HostPaths, configured: Optional[str]) -> Optional[Path]:
    """The pidfile to reload through, or None when systemd manages HAProxy."""
    if configured:
        return Path(configured)
    if paths.systemd_running() and shutil.which("systemctl") is not None:
        return None
    return paths.haproxy_pidfile


# -- reload ------------------------------------------------------------------------------------


def reload(paths: HostPaths, configured_pidfile: Optional[str], deadline: proc.Deadline) -> Step:
    """Validate, reload, verify. A refused or failed start leaves the old process serving."""
    check = validate(paths, deadline)
    if not check.ok:
        return Step(False, f"refusing to reload: {check.summary}", check.output)
    pidfile = pidfile_mode(paths, configured_pidfile)
    previous: Optional[int] = None
    if pidfile is None:
        # systemd's new worker must prove itself by a pid that differs from the old one's.
        previous = _answering_pid(paths)
        started = _reload_systemd(deadline)
    else:
        started = _restart_pidfile(paths, pidfile, deadline)
    output = check.output + started.output
    if not started.ok:
        return Step(False, started.summary, output)
    verified, how = _verify(paths, started.pid, previous)
    summary = f"{started.summary}; {how}"
    return Step(verified is not False, summary, output, True, started.pid, verified)


def _restart_pidfile(paths: HostPaths, pidfile: Path, deadline: proc.Deadline) -> Step:
    binary = haproxy_binary() or "haproxy"
    old = live_pids(pidfile)
    argv = [binary, "-D", "-p", str(pidfile), *config_args(paths)]
    if old:
        argv += ["-sf", *(str(pid) for pid in old)]  # last: the pid list ends at the next option
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    sockets = candidates(paths)
    _make_socket_dirs(sockets)
    kept = _keep_sockets(sockets)
    result = proc.run(argv, deadline.cap(START_TIMEOUT_S))
    _settle_sockets(kept, restore=not result.ok)
    output = _transcript(result)
    if not result.ok:
        why = (first_alert(result.output) if result.returncode is not None else "") or (
            result.describe()
        )
        note = f"; the old process ({', '.join(map(str, old))}) keeps running" if old else ""
        return Step(False, f"haproxy did not start: {why}{note}", output)
    new = [pid for pid in live_pids(pidfile) if pid not in old]
    if not new:
        return Step(False, f"haproxy started but {pidfile} names no new live process", output)
    if old:
        summary = f"haproxy reloaded (pid {new[0]} replaced {', '.join(map(str, old))})"
    else:
        summary = f"haproxy started (pid {new[0]})"
    return Step(True, summary, output, True, new[0])


def _make_socket_dirs(sockets: List[Path]) -> None:
    """The folders of the configured admin sockets. On a fresh host (a configuration just
    restored, HAProxy never started by its package's unit) /run/haproxy does not exist yet,
    and HAProxy will not create it: it exits, unable to bind the socket."""
    for path in sockets:
        try:
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as exc:
            logger.warning("cannot create %s for the admin socket: %s", path.parent, exc)


def _keep_sockets(sockets: List[Path]) -> List[Tuple[Path, Path]]:
    """Hard-link the admin sockets a new process is about to replace.

    A new HAProxy binds its Unix stats sockets (a new file at the same path) while it parses the
    configuration, before its listeners. When a listener then fails (a busy port), it exits, and
    the path is left to a dead socket: the old process, still serving, is unreachable there
    (verified with 2.6.12). The link keeps the old socket's file, to put it back.
    """
    kept: List[Tuple[Path, Path]] = []
    for path in sockets:
        backup = path.with_name(f"{path.name}.balctl-keep")
        try:
            with contextlib.suppress(FileNotFoundError):
                backup.unlink()
            os.link(path, backup)
        except OSError:
            continue  # nothing there yet, or a filesystem without hard links
        kept.append((path, backup))
    return kept


def _settle_sockets(kept: List[Tuple[Path, Path]], restore: bool) -> None:
    for path, backup in kept:
        try:
            if restore:
                os.replace(backup, path)
            else:
                backup.unlink()
        except OSError as exc:
            logger.warning("cannot %s %s: %s", "restore" if restore else "remove", backup, exc)


def _reload_systemd(deadline: proc.Deadline) -> Step:
    result = proc.run(["systemctl", "reload", "haproxy"], deadline.cap(SYSTEMCTL_TIMEOUT_S))
    output = _transcript(result)
    if not result.ok:
        reason = first_alert(result.output) if result.returncode is not None else ""
        return Step(
            False, f"systemctl reload haproxy failed: {reason or result.describe()}", output
        )
    return Step(True, "haproxy reloaded by systemd", output, took_over=True)


def _answering_pid(paths: HostPaths) -> Optional[int]:
    try:
        _, text = first_answer(candidates(paths), "show info")
        return int(parse_info(text)["Pid"])
    except (RuntimeApiError, ValueError):
        return None


def _verify(
    paths: HostPaths, expected: Optional[int], previous: Optional[int]
) -> Tuple[Optional[bool], str]:
    """(True, how) when the new process answers on the admin socket; (None, why) when there is
    no admin socket to ask; (False, what went wrong) after VERIFY_WINDOW_S."""
    sockets = candidates(paths)
    if not sockets:
        return None, "not verified: no admin socket is configured (stats socket in haproxy.cfg)"
    end = time.monotonic() + VERIFY_WINDOW_S
    while True:
        try:
            path, text = first_answer(sockets, "show info")
            pid = int(parse_info(text)["Pid"])
            if expected is not None and pid != expected:
                problem = (
                    f"the admin socket {path} answers for pid {pid}, not the new pid {expected}"
                )
            elif previous is not None and pid == previous:
                problem = f"the admin socket {path} still answers for the old pid {pid}"
            else:
                return True, f"admin socket {path} answers (pid {pid})"
        except (RuntimeApiError, ValueError) as exc:
            problem = f"the admin socket does not answer: {exc}"
        if time.monotonic() >= end:
            return False, f"but {problem} after {VERIFY_WINDOW_S:g} s"
        time.sleep(_VERIFY_PAUSE_S)
