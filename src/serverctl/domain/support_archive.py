"""Writing a support bundle: every file redacted, checked for leaks, then packed as a tar.gz.

Files are JSON (any JSON-like value; datetimes become ISO 8601 strings) or text. Each goes
through the Redactor (serverctl.domain.redaction), then its bytes are scanned for every secret
the instance knows; one found means a bug in the redaction, and no archive is made at all.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from serverctl.domain.redaction import Redactor
from serverctl.errors import ServerCTLError

FILE_MODE = 0o644


class RedactionFailed(ServerCTLError):
    """A secret survived redaction: the bundle is withheld rather than sent with it."""

    status_code = 500


def plain(value: Any) -> Any:
    """`value` with datetimes as ISO 8601 strings, ready for json and for the Redactor."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [plain(v) for v in value]
    return value


def render(content: Any, redactor: Redactor) -> bytes:
    """One file's bytes: text redacted as text, anything else redacted as data, then JSON."""
    if isinstance(content, str):
        return redactor.text(content).encode("utf-8")
    data = redactor.data(plain(content))
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write(folder: str, files: Mapping[str, bytes], mtime: datetime) -> bytes:
    """A tar.gz of `files` (name -> bytes, already redacted) under `folder/`."""
    buffer = io.BytesIO()
    # No name or time in the gzip header; tar members carry the bundle's time.
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped:
        with tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(f"{folder}/{name}")
                info.size = len(data)
                info.mtime = int(mtime.timestamp())
                info.mode = FILE_MODE
                info.uname = info.gname = "serverctl"
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def check_leaks(files: Mapping[str, bytes], redactor: Redactor) -> None:
    found = {name: redactor.leaks(data) for name, data in files.items()}
    bad = {name: labels for name, labels in found.items() if labels}
    if bad:
        where = "; ".join(f"{name}: {', '.join(labels)}" for name, labels in sorted(bad.items()))
        # Names the files and what kind of secret, never the secret itself.
        raise RedactionFailed(
            f"the support bundle was withheld: secrets survived redaction ({where}). "
            "This is a bug in ServerCTL's redaction; please report it without the bundle"
        )
