"""Keys, CSRs and certificates through the host's `openssl` binary (fixed argv, no shell).

The agent stays standard-library only, and Python's `ssl` module cannot make keys or CSRs, so
the host's `openssl` (Debian's `openssl` package, 3.0 on Debian 12) does the cryptography. The
private key is written by openssl itself into a 0700 work folder (pre-created 0600, so no umask
can widen it), is read back only to be installed, and never appears in an argv, a log line or a
job's output.

Certificates are read with `openssl x509 -noout -subject -issuer -enddate -serial -ext
subjectAltName -nameopt RFC2253` rather than `ssl._ssl._test_decode_cert`: that one is private
API (it may change or vanish in any Python release, and the agent runs on 3.9 to 3.13), while
these options are stable since OpenSSL 1.1.1. The expiry is parsed from the default date format
(`-dateopt` is newer than some 3.0 builds).

Names: DNS names only, lowercase RFC 1123 hostnames of at least two labels, at most 253
characters; no wildcards (the certificate file is named after the first name, and DNS-01 for a
wildcard needs the control plane to set two values on one record: not supported yet).
"""

from __future__ import annotations

import calendar
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

from balctl import proc
from balctl.errors import JobError
from balctl.paths import HostPaths

OPENSSL_MISSING = "openssl is not installed on this host: install the openssl package"
_FALLBACK_BINARIES = ("/usr/bin/openssl", "/usr/local/bin/openssl")
COMMAND_TIMEOUT_S = 30.0
MAX_NAME = 253
# X.509's upper bound for a commonName (RFC 5280 ub-common-name): longer names go in the SANs only.
MAX_CN = 64
MAX_CHAIN_BYTES = 256 * 1024
MAX_CHAIN_CERTS = 10

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_PEM_CERT = re.compile(
    r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END CERTIFICATE-----"
)
_PEM_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----")
_MONTHS = {
    name: index
    for index, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
# "Feb 22 13:37:50 2027 GMT" (the day is space-padded)
_DATE = re.compile(r"^([A-Z][a-z]{2}) +(\d{1,2}) (\d{2}):(\d{2}):(\d{2}) (\d{4}) GMT$")


class CertError(JobError):
    """openssl is missing, failed, or a certificate is not what it should be."""


class CertInfo(NamedTuple):
    subject: str
    sans: List[str]  # DNS names, in the certificate's order
    issuer: str
    not_after: int  # unix seconds
    serial: str  # uppercase hexadecimal, as openssl prints it

    def to_dict(self) -> Dict[str, Any]:
        return {
            "subject": self.subject,
            "sans": list(self.sans),
            "issuer": self.issuer,
            "not_after": self.not_after,
            "serial": self.serial,
        }


class KeyAndCsr(NamedTuple):
    key_path: Path  # 0600 in a 0700 folder; the caller removes the folder
    csr_pem: str


def dns_name_problem(value: Any) -> Optional[str]:
    """Why `value` is not a name this agent puts in a CSR; None when it is fine."""
    if not isinstance(value, str):
        return "must be a string"
    shown = repr(value[:80])
    if not value or len(value) > MAX_NAME:
        return f"{shown} must be 1-{MAX_NAME} characters"
    if value.startswith("*."):
        return f"{shown}: wildcard names are not supported"
    if value != value.lower():
        return f"{shown} must be lowercase"
    labels = value.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        return (
            f"{shown} is not a DNS name: use lowercase letters, digits and hyphens in at least "
            "two dot-separated labels of 1-63 characters, with no trailing dot"
        )
    if labels[-1].isdigit():
        return f"{shown} looks like an IP address, not a DNS name"
    return None


def openssl_binary() -> Optional[str]:
    found = shutil.which("openssl")
    if found:
        return found
    return next((p for p in _FALLBACK_BINARIES if os.access(p, os.X_OK)), None)


def _openssl() -> str:
    binary = openssl_binary()
    if binary is None:
        raise CertError(OPENSSL_MISSING)
    return binary


def _run(argv: Sequence[str], deadline: proc.Deadline, what: str) -> str:
    result = proc.run(argv, deadline.cap(COMMAND_TIMEOUT_S))
    if not result.ok:
        detail = " ".join(result.output.split())[:300]
        raise CertError(f"openssl could not {what}: {result.describe()}: {detail}".rstrip(": "))
    return result.output


# -- the work folder and the key -----------------------------------------------------------------


def work_root(paths: HostPaths) -> Path:
    return paths.lib_dir / "tls-work"


def make_work_dir(paths: HostPaths, label: str) -> Path:
    """A fresh 0700 folder for one job's key and CSR (mkdtemp makes it 0700)."""
    root = work_root(paths)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root, 0o700)  # an existing folder may have been made wider by hand
    return Path(tempfile.mkdtemp(prefix=f"{label}.", dir=str(root)))


def remove_work_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def make_key_and_csr(work_dir: Path, names: Sequence[str], deadline: proc.Deadline) -> KeyAndCsr:
    """An EC P-256 key and a CSR for `names` (the first as CN when it fits, all as SANs)."""
    for name in names:
        problem = dns_name_problem(name)
        if problem is not None:  # the names reach argv: check them here too, not only in params
            raise CertError(f"name {problem}")
    if not names:
        raise CertError("a CSR needs at least one name")
    binary = _openssl()
    key_path = work_dir / "key.pem"
    csr_path = work_dir / "request.csr"
    # Created 0600 before openssl opens it: whatever openssl's own mode, the key is never wider.
    os.close(os.open(str(key_path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    subject = f"/CN={names[0]}" if len(names[0]) <= MAX_CN else "/"
    argv = [
        binary,
        "req",
        "-new",
        "-config",
        os.devnull,  # the host's openssl.cnf must not add extensions or a subject of its own
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        str(key_path),
        "-subj",
        subject,
        "-addext",
        "subjectAltName=" + ",".join(f"DNS:{name}" for name in names),
        "-out",
        str(csr_path),
    ]
    _run(argv, deadline, "make the key and the CSR")
    os.chmod(key_path, 0o600)
    try:
        csr = csr_path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise CertError(f"openssl wrote no readable CSR: {exc}") from exc
    if "-----BEGIN CERTIFICATE REQUEST-----" not in csr:
        raise CertError("openssl wrote no PEM CSR")
    return KeyAndCsr(key_path, csr)


def public_key_of_key(key_path: Path, deadline: proc.Deadline) -> str:
    output = _run(
        [_openssl(), "pkey", "-in", str(key_path), "-pubout"], deadline, "read the public key"
    )
    return _only_pem(output, "PUBLIC KEY")


def public_key_of_cert(cert_path: Path, deadline: proc.Deadline) -> str:
    argv = [_openssl(), "x509", "-in", str(cert_path), "-pubkey", "-noout"]
    return _only_pem(_run(argv, deadline, "read the certificate's public key"), "PUBLIC KEY")


def _only_pem(output: str, label: str) -> str:
    match = re.search(rf"-----BEGIN {label}-----[A-Za-z0-9+/=\s]+?-----END {label}-----", output)
    if match is None:
        raise CertError(f"openssl printed no {label.lower()}")
    return "".join(match.group(0).split())


# -- certificates ------------------------------------------------------------------------------


def split_chain(text: str) -> List[str]:
    """The PEM certificates of a chain, leaf first; CertError when it holds anything else."""
    if len(text.encode("utf-8")) > MAX_CHAIN_BYTES:
        raise CertError(f"the chain is larger than {MAX_CHAIN_BYTES} bytes")
    others = sorted({m.group(1) for m in _PEM_BEGIN.finditer(text)} - {"CERTIFICATE"})
    if others:
        # Above all never a private key: the chain comes from the network.
        raise CertError(f"the chain holds more than certificates ({', '.join(others)})")
    certs = [m.group(0).replace("\r\n", "\n") for m in _PEM_CERT.finditer(text)]
    if not certs:
        raise CertError("the chain holds no PEM certificate")
    if len(certs) > MAX_CHAIN_CERTS:
        raise CertError(f"the chain holds more than {MAX_CHAIN_CERTS} certificates")
    return certs


def inspect(path: Path, deadline: proc.Deadline) -> CertInfo:
    """The first certificate in the PEM file at `path` (other PEM blocks are skipped)."""
    argv = [
        _openssl(),
        "x509",
        "-in",
        str(path),
        "-noout",
        "-subject",
        "-issuer",
        "-enddate",
        "-serial",
        "-ext",
        "subjectAltName",
        "-nameopt",
        "RFC2253",
    ]
    return parse_x509_output(_run(argv, deadline, "read the certificate"))


def parse_x509_output(output: str) -> CertInfo:
    fields: Dict[str, str] = {}
    sans: List[str] = []
    lines = output.splitlines()
    for index, line in enumerate(lines):
        key, sep, value = line.partition("=")
        if sep and key in ("subject", "issuer", "notAfter", "serial") and key not in fields:
            fields[key] = value.strip()
        elif line.startswith("X509v3 Subject Alternative Name") and index + 1 < len(lines):
            for item in lines[index + 1].split(","):
                kind, _, name = item.strip().partition(":")
                if kind == "DNS" and name:
                    sans.append(name.lower())
    missing = [k for k in ("subject", "issuer", "notAfter", "serial") if k not in fields]
    if missing:
        raise CertError(f"openssl did not print {', '.join(missing)} for the certificate")
    return CertInfo(
        subject=fields["subject"],
        sans=sans,
        issuer=fields["issuer"],
        not_after=parse_openssl_date(fields["notAfter"]),
        serial=fields["serial"].upper(),
    )


def parse_openssl_date(text: str) -> int:
    """ "Feb 22 13:37:50 2027 GMT" -> unix seconds (no locale involved)."""
    match = _DATE.match(text.strip())
    if match is None or match.group(1) not in _MONTHS:
        raise CertError(f"cannot read the date {text[:40]!r}")
    month = _MONTHS[match.group(1)]
    day, hour, minute, second, year = (int(match.group(i)) for i in (2, 3, 4, 5, 6))
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
