"""HAProxy's runtime API over its Unix admin socket: one command per connection.

The protocol (APIS.md 5.1): connect, send one line, read until HAProxy closes the connection.
There is no status code; a `set` command that worked answers an empty line, anything else is an
error message. Every call has a hard deadline (1 s by default) over connect, send and all reads,
because the heartbeat calls this and must never stall behind a hung HAProxy.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from balctl.errors import RuntimeApiError
from balctl.haproxy_cfg import Section, StatsSocket, config_files, read_sections, stats_sockets
from balctl.paths import HostPaths

DEFAULT_TIMEOUT_S = 1.0
# `show stat` of a very large configuration can run to megabytes; beyond this it is dropped.
MAX_ANSWER_BYTES = 16 * 1024 * 1024

PathLike = Union[str, Path]


def query(path: PathLike, command: str, timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """Send `command`; HAProxy's whole answer. Raises RuntimeApiError, never OSError."""
    if "\n" in command or "\r" in command:
        raise RuntimeApiError("a runtime API command is one line")
    deadline = time.monotonic() + timeout
    chunks: List[bytes] = []
    received = 0
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(command.encode("utf-8") + b"\n")
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError()
                sock.settimeout(left)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += len(chunk)
                if received > MAX_ANSWER_BYTES:
                    raise RuntimeApiError(
                        f"admin socket {path}: answer to {command!r} is over "
                        f"{MAX_ANSWER_BYTES // (1024 * 1024)} MiB"
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise RuntimeApiError(f"admin socket {path} did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise RuntimeApiError(f"admin socket {path}: {exc.strerror or exc}") from exc
    return b"".join(chunks).decode("utf-8", errors="replace")


def command(path: PathLike, line: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Run a command that answers nothing on success (`set ...`); its answer is the error."""
    answer = query(path, line, timeout).strip()
    if answer:
        raise RuntimeApiError(" ".join(answer.split()))


def candidates(paths: HostPaths, sections: Optional[Sequence[Section]] = None) -> List[Path]:
    """The admin sockets to try, best first.

    The configuration's `stats socket` lines are the truth: ServerCTL's own socket
    (`HostPaths.admin_socket`) first, then any other of level admin, then the rest. When there
    is no readable configuration, ServerCTL's socket is tried if it exists.
    """
    if sections is None:
        files = config_files(paths)
        sections = read_sections(files) if files else None
    if sections is None:
        return [paths.admin_socket] if paths.admin_socket.exists() else []
    found = stats_sockets(sections)

    def rank(item: StatsSocket) -> Tuple[int, int]:
        return (0 if item.path == paths.admin_socket else 1, 0 if item.level == "admin" else 1)

    ordered: List[Path] = []
    for item in sorted(found, key=rank):
        if item.path not in ordered:
            ordered.append(item.path)
    return ordered


def first_answer(
    sockets: Sequence[Path], line: str, timeout: float = DEFAULT_TIMEOUT_S
) -> Tuple[Path, str]:
    """(socket, answer) from the first socket that answers `line`, all within `timeout`."""
    deadline = time.monotonic() + timeout
    errors: List[str] = []
    for path in sockets:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            return path, query(path, line, left)
        except RuntimeApiError as exc:
            errors.append(str(exc))
    if not sockets:
        raise RuntimeApiError("no admin socket is configured (stats socket in haproxy.cfg)")
    raise RuntimeApiError("; ".join(errors) or f"no admin socket answered within {timeout:g} s")
