"""agent.env: the agent's settings, written by `--enrol`, read by `run` and by systemd.

The file is shell-style `KEY="value"` lines. Values are double-quoted with `\\`, `"`, `$` and
`` ` `` escaped, which systemd's EnvironmentFile= and bash read the same way; characters those two
would read differently (newlines, control characters) are refused instead of written.
It holds the enrolment secret, so it is written atomically with mode 0600 in a 0700 directory and
refused on read when group or others may read it (as certbot does for credential files).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple

from balctl import validate
from balctl.errors import ConfigError
from balctl.files import write_private
from balctl.paths import HostPaths

SERVER = "BALCTL_SERVER"
KEY = "BALCTL_KEY"
HOSTNAME = "BALCTL_HOSTNAME"
SOURCE_IP = "BALCTL_SOURCE_IP"
CA_FILE = "BALCTL_CA_FILE"
PUBLIC_IP = "BALCTL_PUBLIC_IP"
HAPROXY_PIDFILE = "BALCTL_HAPROXY_PIDFILE"
PROBE_INTERVAL = "BALCTL_PROBE_INTERVAL_S"
# A file the agent writes its log to itself, besides stderr (logfile.py); read by agent.logs.
LOG_FILE = "BALCTL_LOG_FILE"
KEYS = (
    SERVER,
    KEY,
    HOSTNAME,
    SOURCE_IP,
    CA_FILE,
    PUBLIC_IP,
    HAPROXY_PIDFILE,
    PROBE_INTERVAL,
    LOG_FILE,
)
REQUIRED = (SERVER, KEY, HOSTNAME)

# How often the heartbeat loop checks HAProxy between beats (haproxy_watch.py), in seconds.
DEFAULT_PROBE_INTERVAL_S = 0.2
MIN_PROBE_INTERVAL_S = 0.05
MAX_PROBE_INTERVAL_S = 5.0

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DOUBLE_QUOTE_ESCAPED = '\\"$`'
_HEADER = (
    "# balctl agent settings, written by `balctl --enrol`.\n"
    "# Read by balctl and by systemd (EnvironmentFile=). Holds a secret: keep mode 0600.\n"
)


class AgentConfig(NamedTuple):
    server: str
    key: str  # never in a repr, a log line or a traceback: see __repr__
    hostname: str
    source_ip: Optional[str] = None
    ca_file: Optional[str] = None
    public_ip: Optional[str] = None
    haproxy_pidfile: Optional[str] = None
    probe_interval_s: Optional[float] = None  # None: DEFAULT_PROBE_INTERVAL_S
    log_file: Optional[str] = None

    @property
    def probe_interval(self) -> float:
        """BALCTL_PROBE_INTERVAL_S, or its default."""
        if self.probe_interval_s is None:
            return DEFAULT_PROBE_INTERVAL_S
        return self.probe_interval_s

    def to_env(self) -> Dict[str, str]:
        values = {
            SERVER: self.server,
            KEY: self.key,
            HOSTNAME: self.hostname,
            SOURCE_IP: self.source_ip,
            CA_FILE: self.ca_file,
            PUBLIC_IP: self.public_ip,
            HAPROXY_PIDFILE: self.haproxy_pidfile,
            PROBE_INTERVAL: None if self.probe_interval_s is None else repr(self.probe_interval_s),
            LOG_FILE: self.log_file,
        }
        return {name: value for name, value in values.items() if value}

    def __repr__(self) -> str:
        # Every field but the secret; str() is this too (tuple has no __str__ of its own).
        shown = ", ".join(
            f"{name}={value!r}" for name, value in zip(self._fields, self) if name != "key"
        )
        return f"AgentConfig({shown})"


# -- writing ------------------------------------------------------------------------------------


def quote(value: str) -> str:
    """Double-quote `value` so that systemd and bash both read back exactly `value`."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise ConfigError("agent.env values cannot hold newlines or control characters")
    escaped = "".join("\\" + ch if ch in _DOUBLE_QUOTE_ESCAPED else ch for ch in value)
    return f'"{escaped}"'


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Replace `path` atomically with `values`; the file is 0600 and its directory 0700."""
    lines = [_HEADER]
    for name, value in values.items():
        if not _NAME.match(name):
            raise ConfigError(f"{name!r} is not a valid environment variable name")
        lines.append(f"{name}={quote(value)}\n")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    write_private(path, "".join(lines).encode("utf-8"))


def save_config(cfg: AgentConfig, paths: HostPaths) -> Path:
    write_env_file(paths.agent_env, cfg.to_env())
    return paths.agent_env


# -- reading ------------------------------------------------------------------------------------


def read_env_file(path: Path) -> Dict[str, str]:
    """Parse agent.env; refuse it when group or others have any access to it."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    # fstat on the opened file: the mode checked is the mode of the file actually read.
    with os.fdopen(fd, "r", encoding="utf-8") as handle:
        mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"{path} has mode {mode:04o}: it holds the agent's secret key and must not be "
                f"readable by group or others; fix it with: chmod 600 {path}"
            )
        try:
            text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
    values: Dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            parsed = _parse_line(line)
        except _LineError as exc:
            raise ConfigError(f"{path} line {number}: {exc}") from None
        if parsed is not None:
            values[parsed[0]] = parsed[1]
    return values


def load_config(paths: HostPaths, environ: Optional[Mapping[str, str]] = None) -> AgentConfig:
    """The effective settings: agent.env, overridden by same-named environment variables."""
    env = os.environ if environ is None else environ
    values = read_env_file(paths.agent_env) if paths.agent_env.exists() else {}
    for name in KEYS:
        if env.get(name):
            values[name] = env[name]
    missing = [name for name in REQUIRED if not values.get(name)]
    if missing:
        where = str(paths.agent_env) if paths.agent_env.exists() else f"{paths.agent_env} (absent)"
        raise ConfigError(
            f"{', '.join(missing)} not set in {where} or the environment; enrol this host first "
            "with: balctl --enrol --server URL --key KEY --hostname NAME"
        )
    return _checked(values, paths.agent_env)


def _checked(values: Mapping[str, str], origin: Path) -> AgentConfig:
    try:
        return AgentConfig(
            server=values[SERVER],
            key=validate.key(values[KEY]),
            hostname=validate.hostname(values[HOSTNAME]),
            source_ip=_optional_ip(values, SOURCE_IP),
            ca_file=values.get(CA_FILE) or None,
            public_ip=_optional_ip(values, PUBLIC_IP),
            haproxy_pidfile=values.get(HAPROXY_PIDFILE) or None,
            probe_interval_s=parse_probe_interval(values.get(PROBE_INTERVAL)),
            log_file=_optional_absolute(values, LOG_FILE),
        )
    except ConfigError as exc:
        raise ConfigError(f"{exc} (from {origin} or the environment)") from None


def _optional_ip(values: Mapping[str, str], name: str) -> Optional[str]:
    value = values.get(name)
    return validate.ipv4(value, name) if value else None


def _optional_absolute(values: Mapping[str, str], name: str) -> Optional[str]:
    value = values.get(name)
    if value and not value.startswith("/"):
        raise ConfigError(f"{name}={value[:200]!r} must be an absolute path (e.g. /var/log/x.log)")
    return value or None


def parse_probe_interval(raw: Optional[str]) -> Optional[float]:
    """BALCTL_PROBE_INTERVAL_S: seconds, 0.05-5; None when unset or empty (the default)."""
    if raw is None or not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not MIN_PROBE_INTERVAL_S <= value <= MAX_PROBE_INTERVAL_S:  # also refuses nan
        raise ConfigError(
            f"{PROBE_INTERVAL}={raw!r} is not a number of seconds from {MIN_PROBE_INTERVAL_S:g} "
            f"to {MAX_PROBE_INTERVAL_S:g} (default {DEFAULT_PROBE_INTERVAL_S:g})"
        )
    return value


class _LineError(ValueError):
    """A malformed agent.env line; read_env_file adds the file name and line number."""


def _parse_line(line: str) -> Optional[Tuple[str, str]]:
    """(name, value) for an assignment, None for a blank or comment line."""
    stripped = line.strip()
    if not stripped or stripped.startswith(("#", ";")):
        return None
    if stripped.startswith("export "):
        stripped = stripped[len("export ") :].lstrip()
    name, sep, raw = stripped.partition("=")
    if not sep or not _NAME.match(name):
        raise _LineError("expected NAME=VALUE")
    return name, _parse_value(raw)


def _parse_value(raw: str) -> str:
    """The subset of shell quoting that systemd's EnvironmentFile= reads the same way."""
    chars: List[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "'":
            end = raw.find("'", i + 1)
            if end < 0:
                raise _LineError("unterminated single quote")
            chars.append(raw[i + 1 : end])
            i = end + 1
        elif ch == '"':
            i = _double_quoted(raw, i + 1, chars)
        elif ch == "\\" and i + 1 < len(raw):
            chars.append(raw[i + 1])
            i += 2
        elif ch.isspace():
            # bash would run the rest as a command; only a trailing comment is harmless.
            if raw[i:].strip().startswith("#"):
                break
            raise _LineError("unquoted whitespace in a value (quote the value)")
        else:
            chars.append(ch)
            i += 1
    return "".join(chars)


def _double_quoted(raw: str, i: int, chars: List[str]) -> int:
    """Append the double-quoted text starting at `i`; return the index after the closing quote."""
    while i < len(raw):
        ch = raw[i]
        if ch == '"':
            return i + 1
        if ch == "\\" and i + 1 < len(raw) and raw[i + 1] in _DOUBLE_QUOTE_ESCAPED:
            chars.append(raw[i + 1])
            i += 2
        else:
            # As in bash and systemd, a backslash before any other character stays literal.
            chars.append(ch)
            i += 1
    raise _LineError("unterminated double quote")
