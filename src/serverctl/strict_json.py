"""JSON as RFC 8259 has it, for bodies that come from outside: agents and operators.

Python's `json` also takes `NaN`, `Infinity` and `-Infinity`, numbers too large for a double
(as infinity) and strings holding lone UTF-16 surrogates (`"\\ud800"`). None of these can be
kept and answered again: the database driver cannot encode a lone surrogate (the insert fails)
and a JSON answer cannot carry NaN (every later read of the value fails). `loads_strict` refuses
them, saying which, as it refuses any other malformed body.

NUL characters (`"\\u0000"`) in strings and keys are refused too (`nul="refuse"`, what
operators' bodies get). The standard allows them, but no name, address or message holds one,
and PostgreSQL's text columns cannot store one: the insert would fail after the request was
accepted. An agent's report is kept instead (`nul="replace"`): each NUL becomes U+FFFD, as an
invalid byte does when the agent decodes a command's output, so a log line with a NUL in it
never costs the job its result.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal


class NotStrictJSON(json.JSONDecodeError):
    """JSON that Python's parser takes but the standard does not; no position to give."""

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(reason, text, 0)

    def __str__(self) -> str:
        return self.msg


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is too large for a double")
    return value


def loads_strict(raw: bytes, *, nul: Literal["refuse", "replace"] = "refuse") -> Any:
    """The body's JSON value; a `json.JSONDecodeError` (a ValueError) saying what is wrong
    when it is not strict JSON in UTF-8. May raise RecursionError for absurd nesting."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"the body is not UTF-8 ({exc.reason} at byte {exc.start})"
        raise NotStrictJSON(reason, "") from None
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # from the two hooks above
        raise NotStrictJSON(str(exc), text) from None
    if "\\u0000" in text and holds_nul(value):
        if nul == "refuse":
            reason = "a string holds a NUL character (\\u0000): text fields take none"
            raise NotStrictJSON(reason, text)
        value = replace_nul(value)
    try:
        # One pass in C over every key and string: a lone surrogate cannot be encoded.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise NotStrictJSON(
            "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff): send valid Unicode", text
        ) from None
    return value


def holds_nul(value: Any) -> bool:
    """Whether any string or key in a decoded JSON value holds U+0000."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(holds_nul(key) or holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(holds_nul(item) for item in value)
    return False


def replace_nul(value: Any) -> Any:
    """`value` with U+FFFD for every NUL in its strings and keys."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {replace_nul(key): replace_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [replace_nul(item) for item in value]
    return value
