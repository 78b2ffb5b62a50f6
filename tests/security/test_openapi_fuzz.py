"""Schemathesis over the whole OpenAPI schema of a real `serverctl serve`.

Every operation of the document is called with generated requests, valid and invalid (wrong
types, missing fields, unknown methods, no token), with an operator token; the operations only
an admin may call are run a second time with an admin token, so their bodies are fuzzed too.
The server runs in a network namespace with no route off its LAN (`sandboxed_server`): fuzzed
settings name arbitrary DNS providers, mail relays and stores, and nothing may leave the machine.

Each answer must be a status the operation documents, with the body its schema says; never a
500. A 502 is the documented answer of an operation whose upstream (a DNS provider, a mail
relay, a backup store) cannot be reached, which in the sandbox none can. Schemathesis' own
"a schema-valid request must succeed" check is left out: the rules (names, cron syntax, ranges)
say more than the JSON Schema does, and their 422 is documented. Afterwards the data the fuzzing
left behind still lists, shows and renders.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from typing import Any

import httpx2 as httpx
import pytest
import schemathesis
from hypothesis import settings

from support.consistency import assert_api_answers, assert_no_tracebacks, assert_pages_render
from support.server import ServerProcess, serverctl_cli
from support.simulated_members import SimulatedMember, heartbeat_body, send_heartbeat
from support.surface import openapi_document

log = logging.getLogger(__name__)
# Operations only an admin may call; the operator's run sees only their 403.
ADMIN_ONLY = r"^/api/(users|tokens|audit|dns-providers|settings/)"
EXAMPLES = 20
TALLY: Counter[str] = Counter()


# Made in-process at collection time, so the operations can be test items (the server starts
# later, in a fixture); a test checks it is the document the server serves.
DOCUMENT = openapi_document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


def never_a_500(ctx: Any, response: Any, case: Any) -> None:
    """No 500; a 5xx at all only as a documented upstream failure, saying what failed."""
    status = response.status_code
    assert status == 502 or status < 500, f"{case.method} {case.path}: {status} {response.text}"
    if status >= 400:
        detail = response.json().get("detail")
        assert isinstance(detail, str) and detail, response.text


@pytest.fixture(scope="module")
def seeded(sandboxed_server: ServerProcess, sandbox_client_ip: str) -> ServerProcess:
    """Data for the fuzzer to find at small ids: pools, members (one heartbeating, with
    `show stat` figures), a queued job and a schedule. All of it may be changed or deleted."""
    with sandboxed_server.api() as api:
        for pool_index in (1, 2):
            pool = api.post("/api/pools", json={"name": f"fuzz-{pool_index}"}).json()
            for member_index in (1, 2):
                made = api.post(
                    f"/api/pools/{pool['id']}/members",
                    json={"hostname": f"edge-{pool_index}-{member_index}",
                          "allowed_ips": [sandbox_client_ip]},
                )  # fmt: skip
                assert made.status_code == 201, made.text
            member = made.json()
            beat = _heartbeat(sandboxed_server, member, sandbox_client_ip)
            assert beat.status_code == 200, beat.text
            queued = api.post(
                f"/api/pools/{pool['id']}/members/{member['id']}/jobs",
                json={"type": "haproxy.reload"},
            )
            assert queued.status_code == 202, queued.text
            scheduled = api.post(
                f"/api/pools/{pool['id']}/schedules",
                json={"job_type": "haproxy.validate", "cron": "0 3 * * *"},
            )
            assert scheduled.status_code == 201, scheduled.text
    return sandboxed_server


def _heartbeat(server: ServerProcess, member: dict[str, Any], ip: str) -> httpx.Response:
    """A real agent's heartbeat (with `show stat` figures), from the sandbox LAN's address."""
    agent = SimulatedMember(member["pool_id"], member["id"], member["hostname"], member["secret"])
    body = {**json.loads(heartbeat_body(agent)), "ip": ip}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        return send_heartbeat(client, agent, json.dumps(body).encode())


@pytest.fixture(scope="module")
def operator_auth(seeded: ServerProcess, role_token: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {role_token(seeded, 'operator')}"}


@pytest.fixture(scope="module")
def admin_auth(seeded: ServerProcess, role_token: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {role_token(seeded, 'admin')}"}


def _call(case: Any, server: ServerProcess, auth: dict[str, str], run: str) -> None:
    response = case.call(base_url=server.url, headers=auth)
    TALLY[f"{run} {response.status_code}"] += 1
    case.validate_response(
        response,
        excluded_checks=[
            schemathesis.checks.positive_data_acceptance,
            schemathesis.checks.not_a_server_error,
        ],
        additional_checks=[never_a_500],
    )


@schema.parametrize()
@settings(parent=settings.get_profile("bad-input"), max_examples=EXAMPLES)
def test_every_operation_answers_only_documented_statuses_as_an_operator(
    case: Any, seeded: ServerProcess, operator_auth: dict[str, str]
) -> None:
    _call(case, seeded, operator_auth, "operator")


@schema.include(path_regex=ADMIN_ONLY).parametrize()
@settings(parent=settings.get_profile("bad-input"), max_examples=EXAMPLES)
def test_admin_only_operations_answer_only_documented_statuses_as_an_admin(
    case: Any, seeded: ServerProcess, admin_auth: dict[str, str]
) -> None:
    _call(case, seeded, admin_auth, "admin")


def test_the_served_document_is_the_one_fuzzed(seeded: ServerProcess) -> None:
    served = httpx.get(f"{seeded.url}/openapi.json", timeout=10).json()
    assert served == DOCUMENT


def test_the_state_after_the_fuzzing_is_consistent(seeded: ServerProcess, role_token: Any) -> None:
    operations = sum(len(methods) for methods in DOCUMENT["paths"].values())
    log.info("%d operations; answers by status: %s", operations, dict(sorted(TALLY.items())))
    assert sum(TALLY.values()) >= operations * 5, TALLY
    # A new admin, in case the fuzzing deleted or disabled the first one (as it may).
    made = serverctl_cli(
        "users", "create", "after-fuzz", "--role", "admin", data_dir=seeded.data_dir
    )
    assert made.returncode == 0, made.stderr
    password = made.stdout.strip().splitlines()[-1]
    with seeded.api() as api:
        # Likewise a new admin token: the fuzzing may have revoked the first ones.
        api.headers["Authorization"] = f"Bearer {role_token(seeded, 'admin')}"
        members = assert_api_answers(api)
    with httpx.Client(base_url=seeded.url, timeout=10) as web:
        login = web.post("/login", data={"name": "after-fuzz", "password": password})
        assert login.status_code in (200, 303), login.text[:300]
        assert_pages_render(web, members)
    assert_no_tracebacks(seeded)


def test_admin_only_pattern_names_real_operations() -> None:
    assert any(re.match(ADMIN_ONLY, path) for path in DOCUMENT["paths"])
