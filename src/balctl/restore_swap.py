"""Swapping a staged snapshot into place under a journal, so a crash leaves the old set or the
new one, never a mix.

The work folder of a restore is <root>/etc/haproxy/.balctl-restore/<job id>/ (same filesystem as
most targets, so renames are atomic; HAProxy never loads it): `archive.tar.gz`, `staging/`,
`kept/` (the previous files) and `journal.json`. The journal is written (atomically, fsynced)
before any target changes, and names every change: its target, whether it existed, where the
old file is kept, which folders were created. Then, per change:

- replace: os.link(target, kept/N) (the same inode, not a copy; a copy only across
  filesystems), then os.replace(staged, target): the target always exists, old or new;
- add: folders made as recorded, then os.replace(staged, target);
- remove (within /etc/haproxy, a file the snapshot does not have): os.rename(target, kept/N).

Rolling back needs nothing else than the journal and what is on disk: a kept file that exists
goes back over its target (the same inode as before: contents, mode, owner and times exactly as
they were), an added target is unlinked, created folders are removed when empty. The journal's
`phase` says how far the restore got: "swapping", "checking" (`haproxy -c`), "reloading",
"committed". `recover()` runs when the agent starts: an unfinished restore is rolled back (and
HAProxy reloaded when the phase was "reloading", as a new process may have taken over), a
committed one is cleaned up.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from balctl import haproxy_ctl
from balctl.config import AgentConfig
from balctl.files import fsync_dir, replace_file
from balctl.paths import HostPaths
from balctl.proc import Deadline

logger = logging.getLogger(__name__)

JOURNAL = "journal.json"
PAUSE_ENV = "BALCTL_RESTORE_STEP_PAUSE_S"
SWAPPING, CHECKING, RELOADING, COMMITTED = "swapping", "checking", "reloading", "committed"
PHASES = (SWAPPING, CHECKING, RELOADING, COMMITTED)
ADD, CHANGE, REMOVE = "add", "change", "remove"
# A rollback must be able to reload even when the job's own time is used up.
ROLLBACK_BUDGET_S = 120.0


class SwapError(Exception):
    """A change could not be made; the swap is to be rolled back."""


class Change:
    __slots__ = ("target", "action", "existed", "kept", "staged", "created_dirs")

    def __init__(
        self,
        target: str,  # logical path
        action: str,  # add / change / remove
        existed: bool,
        kept: Optional[str] = None,  # relative to the work folder
        staged: Optional[str] = None,  # relative to the work folder
        created_dirs: Optional[List[str]] = None,  # logical, outermost first
    ) -> None:
        self.target = target
        self.action = action
        self.existed = existed
        self.kept = kept
        self.staged = staged
        self.created_dirs: List[str] = [] if created_dirs is None else created_dirs

    def as_dict(self) -> Dict[str, Any]:
        """The journal's record of this change: `Change(**record)` reads it back."""
        return {
            "target": self.target,
            "action": self.action,
            "existed": self.existed,
            "kept": self.kept,
            "staged": self.staged,
            "created_dirs": list(self.created_dirs),
        }


def step_pause(environ: Optional[Dict[str, str]] = None) -> float:
    """BALCTL_RESTORE_STEP_PAUSE_S: seconds to sleep after each file placed (drills, tests)."""
    raw = (os.environ if environ is None else environ).get(PAUSE_ENV, "").strip()
    try:
        value = float(raw) if raw else 0.0
    except ValueError:
        value = 0.0
    return value if 0.0 <= value <= 3600.0 else 0.0


class Swap:
    def __init__(self, paths: HostPaths, work: Path, job_id: int, changes: List[Change]) -> None:
        self.paths = paths
        self.work = work
        self.job_id = job_id
        self.changes = changes
        self.phase = SWAPPING

    # -- the journal ---------------------------------------------------------------------------

    @property
    def journal(self) -> Path:
        return self.work / JOURNAL

    def write_journal(self, phase: str) -> None:
        self.phase = phase
        body = {
            "job_id": self.job_id,
            "phase": phase,
            "written_at": int(time.time()),
            "changes": [change.as_dict() for change in self.changes],
        }
        data = json.dumps(body, indent=1, sort_keys=True).encode("utf-8")
        replace_file(self.journal, data, default_mode=0o600)

    @classmethod
    def load(cls, paths: HostPaths, work: Path) -> Swap:
        body = json.loads((work / JOURNAL).read_text(encoding="utf-8"))
        changes = [Change(**item) for item in body["changes"]]
        swap = cls(paths, work, int(body.get("job_id", 0)), changes)
        swap.phase = str(body["phase"])
        if swap.phase not in PHASES:
            raise ValueError(f"unknown phase {swap.phase!r}")
        return swap

    # -- forward -------------------------------------------------------------------------------

    def apply(self, pause_s: float = 0.0) -> None:
        """Make every change (the journal must be written first). SwapError on failure."""
        (self.work / "kept").mkdir(mode=0o700, exist_ok=True)
        for change in self.changes:
            try:
                self._apply(change)
            except OSError as exc:
                raise SwapError(f"cannot place {change.target}: {exc}") from exc
            if pause_s:
                time.sleep(pause_s)

    def _apply(self, change: Change) -> None:
        target = self.paths.host(change.target)
        if change.action == REMOVE:
            assert change.kept is not None
            _move(target, self.work / change.kept)
            fsync_dir(target.parent)
            return
        for folder in change.created_dirs:
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.paths.host(folder), 0o755)
        if change.existed:
            assert change.kept is not None
            _keep(target, self.work / change.kept)
        assert change.staged is not None
        _place(self.work / change.staged, target)
        fsync_dir(target.parent)

    # -- back ----------------------------------------------------------------------------------

    def rollback(self) -> List[str]:
        """Put every previous file back; what was done, in words. Raises OSError when a file
        cannot be put back (the journal stays, for the next attempt)."""
        done: List[str] = []
        for change in reversed(self.changes):
            what = self._undo(change)
            if what:
                done.append(what)
        return done

    def _undo(self, change: Change) -> Optional[str]:
        target = self.paths.host(change.target)
        kept = self.work / change.kept if change.kept else None
        what: Optional[str] = None
        if change.action == REMOVE:
            assert kept is not None
            if _lexists(kept) and not _lexists(target):
                _move(kept, target)
                what = f"put back {change.target}"
        elif change.existed:
            assert kept is not None
            if _lexists(kept):
                if _lexists(target) and _same(kept, target):
                    kept.unlink()  # the crash came before the new file replaced it
                else:
                    _place(kept, target)
                    what = f"put back {change.target}"
        elif _lexists(target):
            target.unlink()
            what = f"removed {change.target}"
        for folder in reversed(change.created_dirs):
            with contextlib.suppress(OSError):
                os.rmdir(self.paths.host(folder))
        if what:
            fsync_dir(target.parent)
        return what

    def clean(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def _lexists(path: Path) -> bool:
    return os.path.lexists(path)


def _same(a: Path, b: Path) -> bool:
    return os.path.samestat(os.lstat(a), os.lstat(b))


def _keep(target: Path, kept: Path) -> None:
    """The old file, kept as it is: a hard link (same inode), or a copy across filesystems."""
    with contextlib.suppress(FileNotFoundError):
        kept.unlink()  # a leftover of an attempt that did not get as far as the link
    try:
        os.link(target, kept, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        _copy(target, kept)
    # The kept link must be on disk before the target is replaced: after a power cut, a
    # replaced target without its kept old file could not be rolled back.
    fsync_dir(kept.parent)


def _place(source: Path, target: Path) -> None:
    """Rename `source` over `target`; across filesystems, copy next to it and rename."""
    try:
        os.replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = target.with_name(f".{target.name}.balctl-restore")
        _copy(source, tmp)
        os.replace(tmp, target)
        source.unlink()


def _move(source: Path, target: Path) -> None:
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy(source, target)
        source.unlink()


def _copy(source: Path, dest: Path) -> None:
    """A copy with mode, owner and times, complete before it appears under `dest`."""
    tmp = dest.with_name(dest.name + ".part")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    st = os.lstat(source)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(source), tmp)
    else:
        shutil.copy2(source, tmp, follow_symlinks=False)
    if os.geteuid() == 0:
        os.chown(tmp, st.st_uid, st.st_gid, follow_symlinks=False)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    os.replace(tmp, dest)


# -- at agent start ----------------------------------------------------------------------------


def recover(paths: HostPaths, cfg: Optional[AgentConfig]) -> List[str]:
    """Finish what restores left behind (see the module's docstring); what was done, in words,
    each also logged. Called before the heartbeat and job loops start."""
    report: List[str] = []
    try:
        folders = sorted(p for p in paths.restore_dir.iterdir() if p.is_dir())
    except OSError:
        return report
    for work in folders:
        report.extend(recover_one(paths, cfg, work))
    return report


def recover_one(paths: HostPaths, cfg: Optional[AgentConfig], work: Path) -> List[str]:
    said: List[str] = []

    def say(message: str, level: int = logging.WARNING) -> None:
        logger.log(level, "%s", message)
        said.append(message)

    if not (work / JOURNAL).exists():
        # The restore stopped before it touched any target: only its downloads and staging.
        shutil.rmtree(work, ignore_errors=True)
        say(f"removed the unfinished restore's staging {work} (no file had been replaced)")
        return said
    try:
        swap = Swap.load(paths, work)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        say(
            f"cannot read the restore journal {work / JOURNAL}: {exc}; left as it is", logging.ERROR
        )
        return said
    if swap.phase == COMMITTED:
        swap.clean()
        say(f"restore of job {swap.job_id} had committed; removed its work folder", logging.INFO)
        return said
    try:
        undone = swap.rollback()
    except OSError as exc:
        say(
            f"rolling back the interrupted restore of job {swap.job_id} failed: {exc}; "
            f"the journal stays in {work} for the next start",
            logging.ERROR,
        )
        return said
    say(
        f"rolled back the restore of job {swap.job_id}, interrupted while {swap.phase}: "
        f"{len(undone)} file(s) put back as they were"
    )
    if swap.phase == RELOADING:
        pidfile = cfg.haproxy_pidfile if cfg is not None else None
        step = haproxy_ctl.reload(paths, pidfile, Deadline(ROLLBACK_BUDGET_S))
        level = logging.WARNING if step.ok else logging.ERROR
        say(f"reloaded HAProxy with the previous files: {step.summary}", level)
    swap.clean()
    return said
