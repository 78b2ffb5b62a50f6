"""The agent's own log file, `BALCTL_LOG_FILE`: written by `balctl run`, read by `agent.logs`.

Where the agent's lines usually end up, `agent.logs` already finds them: the journal under
systemd, and /var/log/balctl/agent.log in install.sh's background mode (which appends the
agent's stderr there). `BALCTL_LOG_FILE` is for the other hosts (an agent started by a
supervisor that keeps no output, a container without journald): `run` then also writes every
line to that file itself, with UTC timestamps, rotated at LOG_FILE_MAX_BYTES with
LOG_FILE_BACKUPS older copies beside it (`agent.log.1`, `agent.log.2`), so it stays bounded.
The file is created 0640: log lines carry no secrets, but they are nobody else's business.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import time
from typing import IO, Any, Optional

LOG_FILE_MAX_BYTES = 5 * 1024 * 1024
LOG_FILE_BACKUPS = 2
FILE_MODE = 0o640
# ISO 8601 in UTC: agent.logs can filter by age without guessing the host's time zone.
LINE_FORMAT = "%(asctime)s balctl[%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def _utc(seconds: Optional[float]) -> time.struct_time:
    return time.gmtime(seconds)


class UtcFormatter(logging.Formatter):
    def __init__(self, fmt: str, datefmt: str) -> None:
        super().__init__(fmt, datefmt)
        self.converter = _utc


class _PrivateRotatingHandler(logging.handlers.RotatingFileHandler):
    """A rotating handler whose files are created FILE_MODE, whatever the umask says."""

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        stream: IO[str] = os.fdopen(fd, "a", encoding=self.encoding or "utf-8", errors="replace")
        return stream


def attach(logger: logging.Logger, path: str) -> Optional[logging.Handler]:
    """Also log to `path` (rotating); None, with a warning, when the file cannot be opened:
    the agent keeps running on stderr alone rather than stop over its log file."""
    for handler in logger.handlers:
        if getattr(handler, "_balctl_file", None) == path:
            return handler
    try:
        os.makedirs(os.path.dirname(path) or "/", mode=0o750, exist_ok=True)
        handler = _PrivateRotatingHandler(
            path, maxBytes=LOG_FILE_MAX_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
        )
    except OSError as exc:
        logger.warning("cannot write the log file %s: %s; logging to stderr only", path, exc)
        return None
    formatter = UtcFormatter(LINE_FORMAT, DATE_FORMAT)
    handler.setFormatter(formatter)
    handler._balctl_file = path  # type: ignore[attr-defined]
    logger.addHandler(handler)
    return handler
