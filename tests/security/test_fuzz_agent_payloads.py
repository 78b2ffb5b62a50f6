"""Property-based fuzzing of the agent's heartbeat and job-completion bodies against a real
`serverctl serve`, with a real enrolled member's secret, so every body passes authentication and
reaches the payload checks.

The bodies are of three kinds: near-valid (what a real agent sends, with one field mutated: wrong
types, huge or odd strings, NaN and infinities, out-of-range integers, extra keys, junk nested in
`haproxy.stats` and `topology`, other members' job ids, job states an agent may not report, odd
backup results), arbitrary JSON, and bytes that are not JSON at all. Every answer must be a 200
or a 4xx with a `detail`, never a 5xx; afterwards the member's card, the API and the web pages
still make sense, a valid heartbeat is still taken, and no job moved but along a legal path.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.consistency import (
    assert_api_answers,
    assert_no_tracebacks,
    assert_pages_render,
    assert_sane_member,
    web_session,
)
from support.server import ServerProcess
from support.simulated_members import (
    SOURCE_IP,
    SimulatedMember,
    enrol_simulated,
    haproxy_block,
    heartbeat_body,
    send_heartbeat,
)
from support.util import wait_until

log = logging.getLogger(__name__)
# A failing example holds bodies of hundreds of kB: let Hypothesis print them all the same.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

# `enrol_simulated(server, 2, per_pool=1, prefix="fz")` names them so: one member per pool.
ME, OTHER = "fz-00000", "fz-00001"
# Stand-ins the strategies use for ids known only at run time (see `Fleet.resolve`).
OTHER_JOB, JOB, SNAPSHOT = "@other-job", "@job", "@snapshot"
# A nesting far deeper than any parser's recursion limit, spliced in as text.
DEEP = "@deep"
DEEP_TEXT = "[" * 50_000 + "]" * 50_000
# No job of this id exists; below the largest id, so it is looked up, not refused as a number.
UNKNOWN_JOB = 2_000_000_000
LONG_JOB_S = 3600  # the jobs this module makes never time out during the run

# -- strategies ---------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),  # NaN and infinities: in ODD_VALUES
    st.text(max_size=24),
)
JUNK = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
ODD_VALUES = st.sampled_from(
    [
        "x" * 60_000,  # large, yet the body stays under the 256 KiB limit
        "x" * 300_000,  # the body goes over it
        "\u202eevil\u0000\u2028☃" * 50,
        "\ud7ff\ue000\U0001f4a9" * 20,
        "lone \ud800 surrogate",  # "\ud800" in JSON: Python takes it, UTF-8 cannot carry it
        math.nan,
        math.inf,
        -math.inf,
        2**63,
        -(2**63) - 1,
        10**400,
        DEEP,
        {"__proto__": {"admin": True}},
        [[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]],
    ]
)
MUTANTS = st.one_of(JUNK, ODD_VALUES)

BAD_IPS = st.sampled_from(
    ["::1", "127.0.0.1 ", " 127.0.0.1", "127.1", "0x7f.0.0.1", "127.000.000.001", "999.0.0.1",
     "", "127.0.0.1\u0000", "127.0.0.1/32", "fe80::1%eth0", 2130706433, "203.0.113.9"]
)  # fmt: skip
BAD_HOSTNAMES = st.sampled_from(
    [ME.upper(), f"{ME}.", f" {ME}", f"{ME}\u0000", f"{ME}\n", "é" * 10, "x" * 254, "", OTHER,
     "fz-0000O"]
)  # fmt: skip
JOB_IDS = st.one_of(
    st.sampled_from([0, -1, 2**31, 2**63, 10**30, "1", 1.0, True, OTHER_JOB, UNKNOWN_JOB]),
    st.integers(min_value=-(2**70), max_value=2**70),
)
JOBS_RUNNING = st.one_of(
    st.lists(JOB_IDS, max_size=20),
    MUTANTS,
)
TARGETED = {
    ("ip",): BAD_IPS,
    ("hostname",): BAD_HOSTNAMES,
    ("version",): st.sampled_from(["", "x" * 33, "1.0\n", "0.6.0\u0000", 1.0, None]),
    ("jobs_running",): JOBS_RUNNING,
    ("haproxy",): MUTANTS,
    ("haproxy", "monitored"): st.sampled_from(["true", 1, 0, None, [], {}]),
    ("haproxy", "active"): st.sampled_from(["yes", 1, "false", {}]),
    ("haproxy", "source"): st.sampled_from(["x" * 17, 5, "pidfile\u0000"]),
    ("haproxy", "stats"): MUTANTS,
    ("haproxy", "topology"): MUTANTS,
    ("haproxy", "info"): MUTANTS,
}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path to every value inside a JSON document (dict keys and list indices)."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, inner in items:
        yield (*prefix, key)
        yield from _paths(inner, (*prefix, key))


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _set(doc: Any, path: tuple[Any, ...], value: Any, delete: bool = False) -> None:
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    elif isinstance(parent, dict) or path[-1] < len(parent):
        parent[path[-1]] = value


def real_heartbeat() -> dict[str, Any]:
    """What a real agent with stats enrichment sends (support.simulated_members' shapes)."""
    return {"ip": SOURCE_IP, "hostname": ME, "version": "0.6.0", "haproxy": haproxy_block()}


@st.composite
def near_valid(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    """The real document with one change: a field the rules care about set to a bad value, any
    value anywhere replaced or deleted, or an extra key added to any object in it."""
    doc = copy.deepcopy(base)
    how = draw(st.sampled_from(["targeted", "replace", "delete", "extra"]))
    if how == "targeted":
        path = draw(st.sampled_from(sorted(TARGETED)))
        if path[0] in doc:
            _set(doc, path, draw(TARGETED[path]))
        return doc
    paths = list(_paths(doc))
    if how == "extra":
        holder = draw(st.sampled_from([(), *(p for p in paths if isinstance(_get(doc, p), dict))]))
        _get(doc, holder)[draw(st.text(max_size=12))] = draw(MUTANTS)
    else:
        _set(doc, draw(st.sampled_from(paths)), draw(MUTANTS), delete=how == "delete")
    return doc


def encode(doc: Any, ascii_only: bool) -> bytes:
    text = json.dumps(doc, ensure_ascii=ascii_only).replace(json.dumps(DEEP), DEEP_TEXT)
    return text.encode("utf-8", "surrogatepass")


# Mostly whole documents: those reach the payload rules, where the subtle mistakes live.
BODY_KINDS = ["document"] * 6 + ["truncated", "any JSON", "bytes"]


@st.composite
def bodies(draw: st.DrawFn, documents: st.SearchStrategy[Any]) -> bytes:
    """JSON texts of the documents (ASCII-escaped or raw UTF-8), truncated ones, any JSON
    value, or bytes."""
    kind = draw(st.sampled_from(BODY_KINDS))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    body = encode(draw(JUNK if kind == "any JSON" else documents), draw(st.booleans()))
    if kind == "truncated":
        return body[: max(1, len(body) * draw(st.integers(1, 99)) // 100)]
    return body


HEARTBEATS = bodies(near_valid(real_heartbeat()))

FILE_ENTRY = {
    "path": "/etc/haproxy/haproxy.cfg",
    "type": "file",
    "size": 10,
    "mode": "0644",
    "owner": "root:root",
    "sha256": "a" * 64,
}
BACKUP_RESULT = {
    "snapshot_id": SNAPSHOT,
    "archive_sha256": "b" * 64,
    "size": 1024,
    "haproxy_version": "2.6.12",
    "files": [FILE_ENTRY],
    "skipped": [],
    "config_valid": True,
}
ODD_FILES = st.sampled_from(
    [
        [{**FILE_ENTRY, "path": "/etc/haproxy/../shadow"}],
        [{**FILE_ENTRY, "path": "etc/haproxy/x"}],
        [{**FILE_ENTRY, "path": "/tmp/x"}],
        [{**FILE_ENTRY, "path": "/etc/haproxy/a\u0000b"}],
        [{**FILE_ENTRY, "path": "/etc//haproxy/x"}],
        [FILE_ENTRY, FILE_ENTRY],
        [{**FILE_ENTRY, "type": "symlink"}],
        [{**FILE_ENTRY, "size": -1}],
        [{**FILE_ENTRY, "size": 2**40}],
        [{**FILE_ENTRY, "mode": "rwxr-xr-x"}],
        [{**FILE_ENTRY, "sha256": "Z" * 64}],
        [{**FILE_ENTRY, "path": f"/etc/haproxy/f{n}"} for n in range(5_001)],
        "all of them",
        None,
    ]
)
RESULTS = st.one_of(
    st.none(),
    MUTANTS,
    st.builds(lambda files: {**BACKUP_RESULT, "files": files}, ODD_FILES),
    st.just(BACKUP_RESULT),
    near_valid(BACKUP_RESULT),
)


def real_completion(target: str) -> dict[str, Any]:
    """What a real agent sends when it finishes the job (a backup's with its result)."""
    return {
        "hostname": ME,
        "job_id": JOB,
        "state": "completed",
        "summary": "done",
        "output": "ok\n",
        "result": BACKUP_RESULT if target == "running-backup" else None,
    }


COMPLETION_MUTANTS = {
    "state": st.sampled_from(["failed", "running", "pending", "cancelled", "timed_out",
                              "COMPLETED", "", None, 1]),
    "summary": st.just("s" * 2_001) | MUTANTS,
    "output": st.just("o" * 200_001) | MUTANTS,
    "result": RESULTS,
    "job_id": JOB_IDS,
    "hostname": BAD_HOSTNAMES,
}  # fmt: skip


@st.composite
def completions(draw: st.DrawFn) -> tuple[str, bytes]:
    """Which job a completion names (see `Fleet.job_for`) and its body: the real one, or the
    real one with a field the rules care about, or any value, mutated."""
    target = draw(st.sampled_from(["running", "running-backup", "other", "unknown", "finished"]))
    doc = real_completion(target)
    how = draw(st.sampled_from(["as sent", "field", "field", "anywhere"]))
    if how == "field":
        key = draw(st.sampled_from(sorted(COMPLETION_MUTANTS)))
        doc[key] = draw(COMPLETION_MUTANTS[key])
    elif how == "anywhere":
        doc = draw(near_valid(doc))
    return target, draw(bodies(st.just(doc)))


# -- the member, its jobs and the other member's job ------------------------------------------


@dataclass
class Fleet:
    server: ServerProcess
    api: httpx.Client
    agent: httpx.Client
    web: httpx.Client
    me: SimulatedMember
    other: SimulatedMember
    other_job: int
    tally: Counter[str] = field(default_factory=Counter)
    finished: int | None = None

    def resolve(self, body: bytes, job: int = UNKNOWN_JOB, snapshot: int = 1) -> bytes:
        for stand_in, value in ((OTHER_JOB, self.other_job), (JOB, job), (SNAPSHOT, snapshot)):
            body = body.replace(json.dumps(stand_in).encode(), str(value).encode())
        return body

    def assert_member_shows(self) -> None:
        """The member's card, its status and its web Status tab answer, with sane values."""
        base = f"/api/pools/{self.me.pool_id}/members/{self.me.member_id}"
        card = self.api.get(base)
        assert card.status_code == 200, card.text
        assert_sane_member(card.json())
        status = self.api.get(f"{base}/status")
        assert status.status_code == 200, status.text
        page = self.web.get(f"/pools/{self.me.pool_id}/members/{self.me.member_id}/status")
        assert page.status_code == 200, page.text[:500]

    def job(self, job_id: int) -> dict[str, Any]:
        answer = self.api.get(f"/api/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    def heartbeat(self, member: SimulatedMember, **overrides: Any) -> dict[str, Any]:
        body = json.loads(heartbeat_body(member))
        answer = send_heartbeat(self.agent, member, json.dumps({**body, **overrides}).encode())
        assert answer.status_code == 200, answer.text
        reply: dict[str, Any] = answer.json()
        return reply

    def claim(self, member: SimulatedMember, job_type: str) -> dict[str, Any]:
        """Queue a job for the member and claim it as its agent would: a running job."""
        base = f"/api/pools/{member.pool_id}/members/{member.member_id}"
        path, body = (
            (f"{base}/backups", {"kind": "ufw"})
            if job_type == "backup.ufw"
            else (f"{base}/jobs", {"type": job_type, "timeout_s": LONG_JOB_S})
        )
        queued = self.api.post(path, json=body)
        assert queued.status_code == 202, queued.text
        jobs = self.heartbeat(member)["jobs"]
        assert [job["id"] for job in jobs] == [queued.json()["job_id"]], jobs
        claimed: dict[str, Any] = jobs[0]
        return claimed

    def running(self, job_type: str) -> dict[str, Any]:
        """This member's running job of that type (any other running job is cancelled first)."""
        base = f"/api/pools/{self.me.pool_id}/members/{self.me.member_id}"
        listed = self.api.get(f"{base}/jobs", params={"state": "running"}).json()["items"]
        for job in listed:
            if job["type"] == job_type and job_type != "backup.ufw":
                return {"id": job["id"], "params": {}}
            self.api.post(f"/api/jobs/{job['id']}/cancel").raise_for_status()
        for job in self.api.get(f"{base}/jobs", params={"state": "pending"}).json()["items"]:
            self.api.post(f"/api/jobs/{job['id']}/cancel").raise_for_status()
        return self.claim(self.me, job_type)

    def job_for(self, target: str) -> tuple[int, int]:
        """The job id (and backup snapshot id) a completion of this kind names."""
        if target == "other":
            return self.other_job, 1
        if target == "unknown":
            return UNKNOWN_JOB, 1
        if target == "finished" and self.finished is not None:
            return self.finished, 1
        claimed = self.running("backup.ufw" if target == "running-backup" else "haproxy.install")
        return claimed["id"], claimed["params"].get("snapshot_id", 1)


@pytest.fixture(scope="module")
def fleet(module_server: ServerProcess) -> Iterator[Fleet]:
    me, other = enrol_simulated(module_server, 2, per_pool=1, prefix="fz")
    assert (me.hostname, other.hostname) == (ME, OTHER)
    web = web_session(module_server)
    with module_server.api() as api, httpx.Client(base_url=module_server.url, timeout=10) as agent:
        made = Fleet(module_server, api, agent, web, me, other, other_job=0)
        made.heartbeat(me)
        made.other_job = made.claim(other, "haproxy.install")["id"]
        try:
            yield made
        finally:
            web.close()


def _assert_answered(answer: httpx.Response) -> None:
    """A 200, or a 4xx that says what is wrong; never a 5xx."""
    assert answer.status_code == 200 or 400 <= answer.status_code < 500, (
        answer.status_code,
        answer.text[:500],
    )
    if answer.status_code != 200:
        detail = answer.json()["detail"]
        assert isinstance(detail, str) and detail, answer.text


# -- the properties -----------------------------------------------------------------------------


@given(body=HEARTBEATS)
@settings(parent=settings.get_profile("bad-input"), max_examples=500)
def test_fuzzed_heartbeats_get_200_or_a_4xx_with_a_reason(fleet: Fleet, body: bytes) -> None:
    answer = send_heartbeat(fleet.agent, fleet.me, fleet.resolve(body))
    fleet.tally[f"heartbeat {answer.status_code}"] += 1
    _assert_answered(answer)
    if answer.status_code == 200:
        assert answer.json()["ok"] is True
        # What was taken is shown: nothing in it breaks the card, the API or the page.
        fleet.assert_member_shows()


@given(case=completions())
@settings(parent=settings.get_profile("bad-input"), max_examples=250)
def test_fuzzed_job_completions_change_only_the_members_own_running_job(
    fleet: Fleet, case: tuple[str, bytes]
) -> None:
    target, body = case
    job_id, snapshot_id = fleet.job_for(target)
    before = fleet.job(job_id)["state"] if target != "unknown" else None
    answer = fleet.agent.post(
        "/api/agents/jobs/complete",
        content=fleet.resolve(body, job_id, snapshot_id),
        headers={"Authorization": f"Bearer {fleet.me.secret}"},
    )
    fleet.tally[f"completion {answer.status_code}"] += 1
    _assert_answered(answer)
    if target in ("other", "unknown"):
        assert answer.status_code != 200, answer.text
        assert fleet.job(fleet.other_job)["state"] == "running"
        return
    after = fleet.job(job_id)["state"]
    if answer.status_code != 200:
        assert after == before, f"job {job_id} went {before} -> {after} on a refused completion"
        return
    # Legal: a running job ends completed or failed; a finished one answers its state again.
    assert answer.json()["state"] == after
    assert after in ("completed", "failed"), after
    assert before == "running" or before == after, f"job {job_id} went {before} -> {after}"
    fleet.finished = job_id


def test_the_state_after_the_fuzzing_is_consistent(fleet: Fleet) -> None:
    log.info("agent payload fuzzing: %s", dict(sorted(fleet.tally.items())))
    assert fleet.tally["heartbeat 200"] > 0 and fleet.tally["completion 200"] > 0, fleet.tally
    assert fleet.job(fleet.other_job)["state"] == "running", "another member completed its job"
    # A valid heartbeat is still taken, and what it says is what the card shows.
    fleet.heartbeat(fleet.me, version="0.6.1-after-fuzz")
    path = f"/api/pools/{fleet.me.pool_id}/members/{fleet.me.member_id}"

    def reflected() -> bool:
        beat = fleet.api.get(path).json()["heartbeat"]
        return beat["version"] == "0.6.1-after-fuzz" and beat["ip"] == SOURCE_IP

    wait_until(reflected, 10, what="the valid heartbeat to show on the member's card")
    assert fleet.api.get(path).json()["health"]["state"] == "healthy"
    assert_pages_render(fleet.web, assert_api_answers(fleet.api))
    assert_no_tracebacks(fleet.server)
