"""The heartbeat's HAProxy enrichment (`haproxy.info`, `.stats`, `.topology`...): its shapes.

Every few seconds an agent's heartbeat carries what HAProxy's admin socket and configuration
say (docs/agent.md, "Stats enrichment"). The pages, the API and the rules read these keys as
documented: `info.uptime_s` is a number, every server row has a `status`... A wrong type or a
missing key is refused with the heartbeat (422, naming the field) instead of being kept and
breaking a page each time it is drawn. Only the keys read are checked; others pass as sent.
Checking costs a few microseconds, and only on heartbeats that carry the enrichment.
"""

from __future__ import annotations

from typing import Annotated, Any, NotRequired

import msgspec
from typing_extensions import TypedDict

# `show stat` figures are integers (the agent writes 0 for an empty field).
Count = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
Text = Annotated[str, msgspec.Meta(max_length=1024)]
# The agent sends at most 200 frontends, backends or servers per backend.
Rows = msgspec.Meta(max_length=1000)


class Info(TypedDict):
    version: Text
    pid: Count
    uptime_s: Count
    curr_conns: Count
    conn_rate: Count
    sess_rate: Count


class Traffic(TypedDict):
    name: Text
    status: Text
    scur: Count
    rate: Count
    stot: Count
    bin: Count
    bout: Count


class Server(TypedDict):
    name: Text
    status: Text
    weight: Count
    scur: Count
    rate: Count
    check_status: Text
    admin: Text


class Backend(Traffic):
    servers: Annotated[list[Server], Rows]


class Stats(TypedDict):
    at: Count
    frontends: Annotated[list[Traffic], Rows]
    backends: Annotated[list[Backend], Rows]
    truncated: NotRequired[bool]


class Listener(TypedDict):
    frontend: Text
    bind: Text


class TopologyBackend(TypedDict):
    name: Text
    servers: Annotated[list[Text], Rows]


class Topology(TypedDict):
    listeners: Annotated[list[Listener], Rows]
    backends: Annotated[list[TopologyBackend], Rows]


class BackupFiles(TypedDict):
    # The entries are read defensively (domain/backup_diff.py); the block must be an object.
    digest: NotRequired[Text]
    files: NotRequired[list[Any] | dict[str, Any]]
    ufw: NotRequired[bool]
    truncated: NotRequired[bool]


class Certificate(TypedDict):
    # {"path", "referenced", "error"} for a file that is not a readable certificate; the
    # others always carry the rest (balctl.cert_inventory).
    path: Text
    referenced: bool
    subject: NotRequired[Text]
    sans: NotRequired[Annotated[list[Text], msgspec.Meta(max_length=100)]]
    issuer: NotRequired[Text]
    not_after: NotRequired[Count]  # unix seconds
    serial: NotRequired[Text]
    error: NotRequired[Text]


class Enrichment(TypedDict, total=False):
    admin_socket: bool
    admin_socket_configured: bool
    info: Info
    stats: Stats
    topology: Topology
    backup_files: BackupFiles
    # The agent lists at most 100 files (balctl.cert_inventory.MAX_FILES).
    certificates: Annotated[list[Certificate], msgspec.Meta(max_length=100)]


_KEYS = frozenset(Enrichment.__annotations__)


class BadEnrichment(ValueError):
    """An enrichment key not of its documented shape; the message names where."""


def check_enrichment(extras: dict[str, Any] | None) -> None:
    """Raise BadEnrichment when an enrichment key among the `haproxy` block's extra keys is
    not of its documented shape. A null is left out, as `HaproxyBlock.as_dict` leaves it out
    of what is kept. (msgspec checks in a few microseconds what pydantic takes twice as long
    for; its copy is thrown away, the decoded objects are kept.)"""
    if not extras or _KEYS.isdisjoint(extras):
        return
    present = {key: value for key, value in extras.items() if key in _KEYS and value is not None}
    try:
        msgspec.convert(present, Enrichment)
    except msgspec.ValidationError as exc:
        # "Expected `int`, got `str` - at `$.stats.backends[0].scur`" -> "haproxy.stats...: ..."
        what, _, where = str(exc).partition(" - at `$")
        raise BadEnrichment(f"haproxy{where.rstrip('`')}: {what}") from None
