"""The agent's heartbeat payload: what is accepted, and the error an agent is told otherwise."""

from __future__ import annotations

import re
from ipaddress import IPv4Address
from typing import Annotated, Any, Literal

import msgspec
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictStr
from pydantic import ValidationError as PydanticValidationError

from serverctl.db.types import MAX_DB_INT
from serverctl.domain.enrichment import BadEnrichment, check_enrichment
from serverctl.errors import ValidationError
from serverctl.strict_json import loads_strict, replace_nul

MAX_BODY_BYTES = 256 * 1024
# A job's result may carry a backup's manifest (up to 5000 files, about 1 MB as JSON).
MAX_COMPLETION_BYTES = 4 * 1024 * 1024


class BadPayload(ValidationError):
    """A heartbeat or enrolment body that is not what the agent protocol says."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.status_code = status_code


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# Dotted quads already in the form str(IPv4Address(...)) gives: every heartbeat's `ip`, checked
# with one match instead of a parse and a format (a sixth of the handler's time).
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def _ipv4(value: str) -> str:
    if _CANONICAL_IPV4.fullmatch(value):
        return value
    try:
        return str(IPv4Address(value))
    except ValueError:
        raise ValueError(f"{value[:64]!r} is not an IPv4 address") from None


# Shown on the member card and compared with the bundled agent's: text without control
# characters (a NUL, a newline) that could only come from a broken or hostile agent.
AgentVersion = Annotated[
    StrictStr, Field(min_length=1, max_length=32, pattern=r"^[^\x00-\x1f\x7f]+$")
]

# A string, never a number: pydantic's IPv4Address would also take an integer.
IPv4Text = Annotated[StrictStr, Field(max_length=15), AfterValidator(_ipv4)]


class HaproxyBlock(BaseModel):
    # Later issues add topology, listeners and `show stat` summaries: kept as sent, size-bounded
    # by the body limit.
    model_config = ConfigDict(extra="allow")

    monitored: StrictBool
    active: StrictBool | None = None
    source: StrictStr | None = Field(default=None, max_length=16)

    def as_dict(self) -> dict[str, Any]:
        """`model_dump(exclude_none=True)` without copying the extras: the `show stat` summary
        is most of a heartbeat and is only read, never changed, so the hot path keeps the
        decoded objects (a new top-level dict, so callers may add and remove keys)."""
        block: dict[str, Any] = {"monitored": self.monitored}
        if self.active is not None:
            block["active"] = self.active
        if self.source is not None:
            block["source"] = self.source
        for key, value in (self.__pydantic_extra__ or {}).items():
            if value is not None:
                block[key] = value
        return block


class HeartbeatPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ip: IPv4Text
    hostname: StrictStr = Field(min_length=1, max_length=253)
    version: AgentVersion
    haproxy: HaproxyBlock
    # The job the agent is running right now (absent from agents that do not report it).
    jobs_running: list[Annotated[int, Field(strict=True, ge=1, le=MAX_DB_INT)]] | None = Field(
        default=None, max_length=16
    )


class EnrolPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ip: IPv4Text
    hostname: StrictStr = Field(min_length=1, max_length=253)
    version: AgentVersion


_decoder = msgspec.json.Decoder()


def _loads(raw: bytes) -> Any:
    """msgspec's decoder (several times faster than `json` on the hot path) for what it
    accepts; everything else goes to `loads_strict`, which decides and words the refusal. Both
    give the same objects for what msgspec accepts (large integers included), and both refuse
    what is not strict JSON (NaN, Infinity, 1e400, lone surrogates: no answer could carry them
    again), so what is accepted and what an agent is told do not depend on the decoder. A NUL
    (which no text column can keep) becomes U+FFFD: a host's report is kept, not refused."""
    try:
        value = _decoder.decode(raw)
    except (ValueError, RecursionError):
        return loads_strict(raw, nul="replace")
    # A NUL can only arrive escaped, so the scan (next to nothing) finds every body that may
    # hold one; its NULs become U+FFFD, as `loads_strict(nul="replace")` makes them.
    return replace_nul(value) if b"\\u0000" in raw else value


def parse_json(raw: bytes, limit: int = MAX_BODY_BYTES) -> Any:
    if len(raw) > limit:
        raise BadPayload(f"body is over the limit of {limit} bytes", 413)
    try:
        return _loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadPayload(f"body is not valid JSON: {str(exc)[:120]}", 400) from None


def _describe(exc: PydanticValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def parse_heartbeat(raw: bytes) -> HeartbeatPayload:
    data = parse_json(raw)
    try:
        payload = HeartbeatPayload.model_validate(data)
    except PydanticValidationError as exc:
        raise BadPayload(f"invalid heartbeat: {_describe(exc)}") from None
    try:
        check_enrichment(payload.haproxy.__pydantic_extra__)
    except BadEnrichment as exc:
        raise BadPayload(f"invalid heartbeat: {exc}") from None
    return payload


def parse_enrolment(raw: bytes) -> EnrolPayload:
    data = parse_json(raw)
    try:
        return EnrolPayload.model_validate(data)
    except PydanticValidationError as exc:
        raise BadPayload(f"invalid enrolment: {_describe(exc)}") from None


class JobCompletion(BaseModel):
    model_config = ConfigDict(extra="ignore")

    hostname: StrictStr = Field(min_length=1, max_length=253)
    job_id: int = Field(ge=1, le=MAX_DB_INT, strict=True)
    state: Literal["completed", "failed"]
    summary: StrictStr = Field(default="", max_length=2000)
    output: StrictStr | None = Field(default=None, max_length=200_000)
    result: dict[str, Any] | None = None


def parse_completion(raw: bytes) -> JobCompletion:
    data = parse_json(raw, MAX_COMPLETION_BYTES)
    try:
        return JobCompletion.model_validate(data)
    except PydanticValidationError as exc:
        raise BadPayload(f"invalid job completion: {_describe(exc)}") from None
