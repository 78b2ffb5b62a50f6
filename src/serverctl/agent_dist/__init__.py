"""The agent as operators download it: the `balctl.pyz` zipapp, its SHA-256, and install.sh."""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import balctl

_ZIP_MAIN = b"from balctl.cli import main\n\nraise SystemExit(main())\n"
# A fixed timestamp makes the archive, and so its SHA-256, the same for the same sources.
_EPOCH = (2020, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class AgentBundle:
    data: bytes
    sha256: str
    version: str


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


@cache
def build_zipapp() -> AgentBundle:
    """Build the agent zipapp from the installed `balctl` package (once per process)."""
    source = Path(balctl.__file__).parent
    buffer = io.BytesIO()
    buffer.write(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(buffer, "w") as archive:
        _add(archive, "__main__.py", _ZIP_MAIN)
        for path in sorted(source.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            _add(archive, f"balctl/{path.relative_to(source).as_posix()}", path.read_bytes())
    data = buffer.getvalue()
    return AgentBundle(data, hashlib.sha256(data).hexdigest(), balctl.__version__)


@cache
def install_script() -> str:
    return resources.files(__package__).joinpath("install.sh").read_text(encoding="utf-8")


def install_command(base_url: str, secret: str, hostname: str) -> str:
    base = base_url.rstrip("/")
    return (
        f"curl -fsSL {base}/agent/install.sh | sudo bash -s -- "
        f"--server {base} --key {secret} --hostname {hostname}"
    )
