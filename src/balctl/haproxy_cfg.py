"""Reading HAProxy's configuration: which files, which sections, which sockets and listeners.

HAProxy reads `haproxy.cfg`, then `conf.d/*.cfg` in C-locale order when that folder holds any
(the agent passes both with `-f`, as the Debian unit can be told to). Only what the agent needs
is parsed: section headers, `stats socket` lines of `global`, `bind` lines and server names.
Words are split the way HAProxy splits them: `#` starts a comment, backslash escapes, single
quotes are literal, and double quotes expand `$VAR` / `${VAR}` from the environment HAProxy
is started with: the agent's own minus its secret (`proc.child_env`). Expanding from the agent's
own would put the secret into the topology it reports whenever a configuration names it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from balctl.paths import HostPaths
from balctl.proc import child_env

SECTION_KEYWORDS = frozenset(
    {
        "global",
        "defaults",
        "frontend",
        "backend",
        "listen",
        "peers",
        "resolvers",
        "userlist",
        "mailers",
        "program",
        "http-errors",
        "ring",
        "cache",
        "fcgi-app",
    }
)
MAX_BACKENDS = 200
MAX_SERVERS = 200
MAX_LISTENERS = 500
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RANGE = re.compile(r"^(\d{1,6})(?:-(\d{1,6}))?$")


def split_words(line: str, environ: Optional[Mapping[str, str]] = None) -> List[str]:
    """The words of one configuration line, quotes and escapes resolved, comment dropped."""
    env = child_env() if environ is None else environ
    words: List[str] = []
    word: List[str] = []
    in_word = False
    quote = ""
    i = 0
    while i < len(line):
        ch = line[i]
        if quote:
            i, quote = _quoted(line, i, quote, env, word)
            continue
        if ch == "#":
            break
        if ch.isspace():
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
        elif ch in "'\"":
            quote, in_word = ch, True
        elif ch == "\\" and i + 1 < len(line):
            i += 1
            word.append(line[i])
            in_word = True
        else:
            word.append(ch)
            in_word = True
        i += 1
    if in_word:
        words.append("".join(word))
    return words


def _quoted(
    line: str, i: int, quote: str, env: Mapping[str, str], word: List[str]
) -> Tuple[int, str]:
    """One step inside quotes: (next index, quote still open or "")."""
    ch = line[i]
    if ch == quote:
        return i + 1, ""
    if quote == '"':
        if ch == "\\" and i + 1 < len(line):
            word.append(line[i + 1])
            return i + 2, quote
        if ch == "$":
            return _expand(line, i, env, word), quote
    word.append(ch)
    return i + 1, quote


def _expand(line: str, i: int, env: Mapping[str, str], word: List[str]) -> int:
    """Expand the variable at line[i] == "$" into `word`; the index after it."""
    braced = line.startswith("${", i)
    start = i + 2 if braced else i + 1
    match = _ENV_NAME.match(line, start)
    if match is None or (braced and not line.startswith("}", match.end())):
        word.append("$")
        return i + 1
    word.append(env.get(match.group(0), ""))
    return match.end() + 1 if braced else match.end()


class Section:
    __slots__ = ("kind", "name", "lines")

    def __init__(
        self,
        kind: str,  # "global", "frontend", ...
        name: str,  # "" for global and unnamed defaults
        lines: Optional[List[List[str]]] = None,  # the words of each line
    ) -> None:
        self.kind = kind
        self.name = name
        self.lines: List[List[str]] = [] if lines is None else lines


def parse_sections(text: str, environ: Optional[Mapping[str, str]] = None) -> List[Section]:
    sections: List[Section] = []
    env = child_env() if environ is None else environ  # once, not per line
    for line in text.splitlines():
        words = split_words(line, env)
        if not words:
            continue
        keyword = words[0].lower()
        if keyword in SECTION_KEYWORDS:
            sections.append(Section(keyword, words[1] if len(words) > 1 else ""))
        elif sections:
            sections[-1].lines.append(words)
    return sections


def section_keyword(line: str) -> Optional[str]:
    """The section a raw line opens ("global", "backend"...), or None. No variables expanded."""
    words = split_words(line, {})
    if words and words[0].lower() in SECTION_KEYWORDS:
        return words[0].lower()
    return None


# -- files -----------------------------------------------------------------------------------


def conf_d_files(paths: HostPaths) -> List[Path]:
    """conf.d's non-hidden *.cfg files in the order HAProxy loads them."""
    try:
        entries = list(paths.haproxy_conf_d.iterdir())
    except OSError:
        return []
    files = [p for p in entries if p.name.endswith(".cfg") and not p.name.startswith(".")]
    return sorted((p for p in files if p.is_file()), key=lambda p: p.name.encode())


def config_args(paths: HostPaths) -> List[str]:
    """The `-f` options for haproxy: the main file, plus conf.d when it has *.cfg files."""
    args = ["-f", str(paths.haproxy_cfg)]
    if conf_d_files(paths):
        args += ["-f", str(paths.haproxy_conf_d)]
    return args


def config_files(paths: HostPaths) -> List[Path]:
    main = [paths.haproxy_cfg] if paths.haproxy_cfg.is_file() else []
    return main + conf_d_files(paths)


def fingerprint(files: Sequence[Path]) -> Tuple[Tuple[str, int, int], ...]:
    """What changes when any of `files` changes: re-read the configuration only then."""
    marks = []
    for path in files:
        try:
            st = path.stat()
        except OSError:
            continue
        marks.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(marks)


def read_sections(
    files: Sequence[Path], environ: Optional[Mapping[str, str]] = None
) -> List[Section]:
    sections: List[Section] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        sections.extend(parse_sections(text, environ))
    return sections


# -- what the agent needs from it ----------------------------------------------------------------


class StatsSocket(NamedTuple):
    path: Path
    level: str  # "user", "operator" (HAProxy's default) or "admin"


def stats_sockets(sections: Sequence[Section]) -> List[StatsSocket]:
    """The Unix `stats socket` lines of the global sections (TCP and abstract ones skipped)."""
    found: List[StatsSocket] = []
    for section in sections:
        if section.kind != "global":
            continue
        for words in section.lines:
            if len(words) < 3 or words[0] != "stats" or words[1] != "socket":
                continue
            address = words[2][len("unix@") :] if words[2].startswith("unix@") else words[2]
            # A relative path depends on HAProxy's working directory, which the agent cannot know.
            if not address.startswith("/"):
                continue
            level = "operator"
            if "level" in words[3:]:
                at = words.index("level", 3)
                level = words[at + 1] if at + 1 < len(words) else level
            found.append(StatsSocket(Path(address), level))
    return found


def topology(sections: Sequence[Section]) -> Dict[str, Any]:
    """Listeners (frontend, bind address) and backends with their server names."""
    listeners: List[Dict[str, str]] = []
    backends: List[Dict[str, Any]] = []
    for section in sections:
        if section.kind in ("frontend", "listen"):
            for words in section.lines:
                if words[0] == "bind" and len(words) > 1:
                    for address in words[1].split(","):
                        if address and len(listeners) < MAX_LISTENERS:
                            listeners.append({"frontend": section.name, "bind": address})
        if section.kind in ("backend", "listen") and len(backends) < MAX_BACKENDS:
            backends.append({"name": section.name, "servers": _server_names(section)})
    return {"listeners": listeners, "backends": backends}


def _server_names(section: Section) -> List[str]:
    names: List[str] = []
    for words in section.lines:
        if len(words) < 2:
            continue
        if words[0] == "server":
            names.append(words[1])
        elif words[0] == "server-template" and len(words) > 2:
            names.extend(_template_names(words[1], words[2]))
    return names[:MAX_SERVERS]


def _template_names(prefix: str, count: str) -> List[str]:
    # `server-template web 3 ...` makes web1..web3; `server-template web 5-7 ...` web5..web7.
    match = _RANGE.match(count)
    if match is None:
        return []
    if match.group(2):
        first, last = int(match.group(1)), int(match.group(2))
    else:
        first, last = 1, int(match.group(1))
    last = min(last, first + MAX_SERVERS - 1)
    return [f"{prefix}{n}" for n in range(first, last + 1)]
