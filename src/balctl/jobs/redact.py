"""Secrets out of text before it leaves the host (the log lines `agent.logs` sends).

Two passes: the values the agent knows are secret (its own enrolment key) wherever they appear,
then what looks like a secret whatever its value: `Authorization:` headers, `Bearer` tokens,
`name=value` / `"name": "value"` pairs whose name says secret, password, token or key,
passwords in URLs, PEM private keys, and strings shaped like ServerCTL's own secrets (48
random letters and digits, `sct_` API tokens). The control plane redacts again on its side
(serverctl.domain.redaction); this pass makes sure the secrets never travel in the first place.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, List, Match, Pattern, Tuple, Union

REDACTED = "[REDACTED]"
# Shorter "secrets" would redact ordinary words; the agent's key is at least 8 characters.
MIN_KNOWN_LENGTH = 8

_NAME = (
    r"[\w.-]*(?:secret|password|passwd|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|signature|credential)[\w.-]*|[\w.-]*[_-]key|key"
)
# A template for Match.expand, or a function of the match.
Replacement = Union[str, Callable[[Match[str]], str]]


def _mixed(match: Match[str]) -> str:
    """A 48-character run of letters and digits is a ServerCTL enrolment secret when it mixes
    upper case, lower case and digits (a random one always does; a word or a hex digest not)."""
    word = match.group(0)
    classes = (str.isupper, str.islower, str.isdigit)
    return REDACTED if all(any(test(c) for c in word) for test in classes) else word


def _quoted_like(value: str) -> str:
    """[REDACTED] in the quotes `value` had, so that JSON or shell text stays well-formed."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[0] + REDACTED + value[0]
    return REDACTED


_RULES: List[Tuple[Pattern[str], Replacement]] = [
    (
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S
        ),
        "-----BEGIN PRIVATE KEY-----" + REDACTED + "-----END PRIVATE KEY-----",
    ),
    (re.compile(r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)[^\r\n\"']+"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1" + REDACTED),
    # name=value; the name must start a token: "s3/Bundle+Secret=x" is one value, cut by
    # nobody here (the control plane knows its stored secrets whole).
    (
        re.compile(
            r"(?i)(?<![\w/+=.:-])(" + _NAME + r")([\"']?\s*(?:=|:\s+|:(?=[\"']))\s*)"
            r"(\"[^\"\r\n]*\"|'[^'\r\n]*'|[^\s\"'&,;]+)"
        ),
        lambda m: m.group(1) + m.group(2) + _quoted_like(m.group(3)),
    ),
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+):[^@\s/]+@"), r"\1:" + REDACTED + "@"),
    (re.compile(r"\bsct_[A-Za-z0-9]{16,}"), "sct_" + REDACTED),
    (re.compile(r"(?<![A-Za-z0-9_])[A-Za-z0-9]{48}(?![A-Za-z0-9_])"), _mixed),
]


def redact(text: str, known: Iterable[str] = ()) -> Tuple[str, int]:
    """(`text` with its secrets replaced by [REDACTED], how many replacements were made)."""
    count = 0
    # Longest first: a secret that contains another is replaced whole.
    for value in sorted({v for v in known if len(v) >= MIN_KNOWN_LENGTH}, key=len, reverse=True):
        count += text.count(value)
        text = text.replace(value, REDACTED)
    changed = [0]

    def replace(rule: Replacement) -> Callable[[Match[str]], str]:
        def one(match: Match[str]) -> str:
            new = rule(match) if callable(rule) else match.expand(rule)
            if new != match.group(0):
                changed[0] += 1
            return new

        return one

    for pattern, rule in _RULES:
        text = pattern.sub(replace(rule), text)
    return text, count + changed[0]
