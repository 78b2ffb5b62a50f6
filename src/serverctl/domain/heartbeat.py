"""The agent's heartbeat payload: what is accepted, and the error an agent is told otherwise."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictStr
from pydantic import ValidationError as PydanticValidationError

from serverctl.errors import ValidationError

MAX_BODY_BYTES = 256 * 1024
# A job's result may carry a backup's manifest (up to 5000 files, about 1 MB as JSON).
MAX_COMPLETION_BYTES = 4 * 1024 * 1024


class BadPayload(ValidationError):
    """A heartbeat or enrolment body that is not what the agent protocol says."""

    def __init__(self, message: str, status_code: int = 422) -> None:
        super().__init__(message)
        self.status_code = status_code


def _ipv4(value: str) -> str:
    try:
        return str(IPv4Address(value))
    except ValueError:
        raise ValueError(f"{value[:64]!r} is not an IPv4 address") from None


# A string, never a number: pydantic's IPv4Address would also take an integer.
IPv4Text = Annotated[StrictStr, Field(max_length=15), AfterValidator(_ipv4)]


class HaproxyBlock(BaseModel):
    # Later issues add topology, listeners and `show stat` summaries: kept as sent, size-bounded
    # by the body limit.
    model_config = ConfigDict(extra="allow")

    monitored: StrictBool
    active: StrictBool | None = None
    source: StrictStr | None = Field(default=None, max_length=16)


class HeartbeatPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ip: IPv4Text
    hostname: StrictStr = Field(min_length=1, max_length=253)
    version: StrictStr = Field(min_length=1, max_length=32)
    haproxy: HaproxyBlock
    # The job the agent is running right now (absent from agents that do not report it).
    jobs_running: list[Annotated[int, Field(strict=True, ge=1)]] | None = Field(
        default=None, max_length=16
    )


class EnrolPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ip: IPv4Text
    hostname: StrictStr = Field(min_length=1, max_length=253)
    version: StrictStr = Field(min_length=1, max_length=32)


def parse_json(raw: bytes, limit: int = MAX_BODY_BYTES) -> Any:
    if len(raw) > limit:
        raise BadPayload(f"body is over the limit of {limit} bytes", 413)
    try:
        return json.loads(raw)
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
        return HeartbeatPayload.model_validate(data)
    except PydanticValidationError as exc:
        raise BadPayload(f"invalid heartbeat: {_describe(exc)}") from None


def parse_enrolment(raw: bytes) -> EnrolPayload:
    data = parse_json(raw)
    try:
        return EnrolPayload.model_validate(data)
    except PydanticValidationError as exc:
        raise BadPayload(f"invalid enrolment: {_describe(exc)}") from None


class JobCompletion(BaseModel):
    model_config = ConfigDict(extra="ignore")

    hostname: StrictStr = Field(min_length=1, max_length=253)
    job_id: int = Field(ge=1, strict=True)
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
