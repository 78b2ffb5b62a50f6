"""agent.update (and `balctl --update`): replace the running zipapp with the control plane's.

The download follows the agent's transport rules (https with the configured CA, plain http only
to loopback) and must come from the configured control plane's own origin. The file must have
the SHA-256 the job names, and must run (`--version`) on this host's Python before it replaces
the current one, atomically: a bad download never leaves the host without a working agent.
The restart happens after the job's completion was delivered (see JobRunner).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional
from urllib.parse import urlsplit

from balctl import proc
from balctl.config import AgentConfig
from balctl.errors import AgentError, JobError, ParamError
from balctl.files import fsync_dir
from balctl.jobs import params as p
from balctl.jobs.model import JobContext, Outcome
from balctl.restart import running_pyz
from balctl.transport import ControlPlaneClient

logger = logging.getLogger(__name__)

MAX_PYZ_BYTES = 32 * 1024 * 1024
SMOKE_TIMEOUT_S = 30.0
PYZ_PATH = "/agent/balctl.pyz"
SHA_PATH = "/agent/balctl.pyz.sha256"

# The SHA-256 of the zipapp this process started from, noted by `run` at start: an update to
# the same file needs no restart.
_running_sha: Optional[str] = None


def sha256_file(path: Path) -> Optional[str]:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def note_running(pyz: Path) -> None:
    global _running_sha
    _running_sha = sha256_file(pyz) if pyz.suffix == ".pyz" else None


def install_pyz(target: Path, data: bytes, sha256: str) -> str:
    """Check and install `data` as `target`; the new agent's version line ("balctl 0.2.0")."""
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise JobError(
            f"the downloaded zipapp has SHA-256 {actual}, not {sha256}; kept the current agent"
        )
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".pyz", dir=str(target.parent))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), 0o644)
        smoke = proc.run([sys.executable, tmp, "--version"], SMOKE_TIMEOUT_S)
        version = smoke.output.strip()
        if not smoke.ok or not version.startswith("balctl "):
            raise JobError(
                f"the downloaded zipapp does not run on this host ({smoke.describe()}: "
                f"{' '.join(version.split())[:200]}); kept the current agent"
            )
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)
    return version


def _client(cfg: AgentConfig) -> ControlPlaneClient:
    return ControlPlaneClient(cfg.server, cfg.key, ca_file=cfg.ca_file, source_ip=cfg.source_ip)


def check(params: Any) -> Dict[str, Any]:
    given = p.only(p.as_object(params), ("url", "sha256"))
    url = p.string(given, "url", p.MAX_URL)
    if urlsplit(url).scheme not in ("https", "http"):
        raise ParamError("url must be an http(s) URL")
    return {"url": url, "sha256": p.sha256(given, "sha256")}


def run_job(params: Dict[str, Any], ctx: JobContext) -> Outcome:
    url, sha = params["url"], params["sha256"]
    if _running_sha == sha:
        return Outcome(
            True, f"balctl already runs this zipapp ({sha[:12]})", "", {"changed": False}
        )
    target = running_pyz(ctx.paths)
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        with _client(ctx.cfg) as client:
            if not client.same_origin(url):
                return Outcome(
                    False,
                    f"refusing to download from {url[:200]}: not the control plane's origin "
                    f"{client.origin}",
                )
            data = client.download(path, MAX_PYZ_BYTES)
        version = install_pyz(target, data, sha)
    except AgentError as exc:
        return Outcome(False, str(exc))
    except OSError as exc:
        return Outcome(False, f"cannot install the new zipapp as {target}: {exc}")
    ctx.request_restart()
    result = {"changed": True, "version": version.split()[-1], "path": str(target)}
    return Outcome(True, f"installed {version} ({sha[:12]}) as {target}; restarting", "", result)


def update_from_server(cfg: AgentConfig, target: Path) -> Optional[str]:
    """`balctl --update`: the new version line, or None when `target` is already current."""
    with _client(cfg) as client:
        listed = client.download(client.url_path(SHA_PATH), 4096).decode("ascii", "replace")
        sha = (listed.split() or [""])[0].lower()
        if len(sha) != 64 or not all(c in "0123456789abcdef" for c in sha):
            raise JobError(f"{client.origin}{SHA_PATH} does not hold a SHA-256: {listed[:80]!r}")
        if sha256_file(target) == sha:
            return None
        data = client.download(client.url_path(PYZ_PATH), MAX_PYZ_BYTES)
    return install_pyz(target, data, sha)
