"""Hostile request bodies against a real `serverctl serve`, sent over a raw socket.

Invalid and truncated JSON, nesting 100,000 deep, 5 MB and 50 MB bodies, wrong content types,
wrong field types, NUL bytes, invalid UTF-8, NaN, lone surrogates, and chunked bodies without a
length, at the agent API (heartbeat, job completion), a REST JSON endpoint and a web form. Each
must get a 4xx, never a 5xx, and always a whole HTTP answer the client can read: when the server
refuses an oversized body before reading it and closes the connection, the answer is still there.
The raw socket keeps sending whatever happens, as a careless client would, then reads.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2 as httpx
import pytest

from support.consistency import (
    assert_api_answers,
    assert_no_tracebacks,
    assert_pages_render,
    web_session,
)
from support.server import ServerProcess
from support.simulated_members import SimulatedMember, enrol_simulated, heartbeat_body
from support.surface import parameterised_routes

MB = 1024 * 1024
REFUSALS = {400, 401, 403, 404, 409, 411, 413, 415, 422}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    # False when the server stopped reading before the whole body was sent.
    sent_all: bool

    def detail(self) -> str:
        found = json.loads(self.body)["detail"]
        assert isinstance(found, str) and found, self.body
        return found


def _send(sock: socket.socket, data: bytes, piece: int = 256 * 1024) -> bool:
    for start in range(0, len(data), piece):
        try:
            sock.sendall(data[start : start + piece])
        except (BrokenPipeError, ConnectionResetError):
            return False
    return True


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a whole answer came: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed {length - len(body)} bytes before the answer's end"
        body += chunk
    return int(status_line.split()[1]), headers, body[:length]


def exchange(
    server: ServerProcess,
    path: str,
    body: bytes | list[bytes],
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> Answer:
    """One request on a fresh connection: a bytes body with its Content-Length, or a list of
    chunks sent with `Transfer-Encoding: chunked`. Sends it all unless the server hangs up."""
    url = urlsplit(server.url)
    assert url.hostname and url.port
    fields = {"Host": f"{url.hostname}:{url.port}", "Connection": "close", **(headers or {})}
    if isinstance(body, list):
        fields["Transfer-Encoding"] = "chunked"
        payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in body if c) + b"0\r\n\r\n"
    else:
        fields["Content-Length"] = str(len(body))
        payload = body
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    with socket.create_connection((url.hostname, url.port), timeout=60) as sock:
        sent_all = _send(sock, head.encode("latin-1") + b"\r\n") and _send(sock, payload)
        status, answer_headers, answer_body = _read_answer(sock)
    return Answer(status, answer_headers, answer_body, sent_all)


# -- the targets ----------------------------------------------------------------------------------


@dataclass
class Target:
    path: str
    headers: dict[str, str]
    valid: dict[str, Any]


@pytest.fixture(scope="module")
def member(module_server: ServerProcess) -> SimulatedMember:
    return enrol_simulated(module_server, 1, prefix="hb")[0]


@pytest.fixture(scope="module")
def targets(module_server: ServerProcess, member: SimulatedMember) -> dict[str, Target]:
    agent = {"Authorization": f"Bearer {member.secret}", "Content-Type": "application/json"}
    json_type = {"Content-Type": "application/json"}
    operator = {"Authorization": f"Bearer {module_server.token}", **json_type}
    heartbeat = json.loads(heartbeat_body(member))
    completion = {"hostname": member.hostname, "job_id": 1, "state": "completed", "summary": ""}
    return {
        "heartbeat": Target("/api/agents/heartbeat", agent, heartbeat),
        "completion": Target("/api/agents/jobs/complete", agent, completion),
        "rest": Target("/api/pools", operator, {"name": "hostile-bodies"}),
    }


JSON_TARGETS = ["heartbeat", "completion", "rest"]


def _assert_refused(answer: Answer, statuses: set[int] = REFUSALS) -> str:
    assert answer.status in statuses, (answer.status, answer.body[:300])
    assert answer.headers.get("content-type", "").startswith("application/json"), answer.headers
    return answer.detail()


def _with(valid: dict[str, Any], **changes: Any) -> bytes:
    return json.dumps({**valid, **changes}).encode()


def _hostile_json(valid: dict[str, Any]) -> Iterator[tuple[str, bytes, set[int]]]:
    """(what, body, the statuses that may answer it) for a JSON endpoint's valid body."""
    text = json.dumps(valid).encode()
    yield "invalid JSON", b"{not json", {400}
    yield "truncated JSON", text[: len(text) // 2], {400}
    yield "empty body", b"", {400, 422}
    deep = b"[" * 100_000 + b"]" * 100_000
    yield "100,000 open brackets", b"[" * 100_000, {400}
    yield "100,000 nested arrays", deep, {400}
    yield "nesting 100,000 deep in a field", text[:-1] + b', "x": ' + deep + b"}", {400}
    yield "a JSON array", b"[1, 2, 3]", {422}
    yield "a JSON string", b'"hello"', {422}
    yield "null", b"null", {422}
    yield "every field a list", json.dumps({k: [v] for k, v in valid.items()}).encode(), {401, 422}
    yield "every field a number", json.dumps(dict.fromkeys(valid, 7)).encode(), {401, 422}
    yield "every field an object", json.dumps({k: {"$gt": ""} for k in valid}).encode(), {401, 422}
    yield "NaN", text[:-1] + b', "n": NaN}', {400}
    yield "Infinity", text[:-1] + b', "n": -Infinity}', {400}
    yield "1e400", text[:-1] + b', "n": 1e400}', {400}
    yield "a lone surrogate", text[:-1] + b', "s": "\\ud800"}', {400}
    yield "a raw NUL byte", text[:-1] + b', "s": "a\x00b"}', {400}
    yield "invalid UTF-8", text[:-1] + b', "s": "\xff\xfe"}', {400}
    yield "UTF-16", json.dumps(valid).encode("utf-16"), {400}
    yield "a BOM", b"\xef\xbb\xbf" + text, {400}
    yield "5 MB of JSON", text[:-1] + b', "pad": "' + b"x" * (5 * MB) + b'"}', {413}
    yield "50 MB of JSON", text[:-1] + b', "pad": "' + b"x" * (50 * MB) + b'"}', {413}


@pytest.mark.parametrize("target_name", JSON_TARGETS)
def test_hostile_json_bodies_get_a_4xx_and_a_whole_answer(
    module_server: ServerProcess, targets: dict[str, Target], target_name: str
) -> None:
    target = targets[target_name]
    for what, body, statuses in _hostile_json(target.valid):
        answer = exchange(module_server, target.path, body, target.headers)
        assert answer.status in statuses, (target_name, what, answer.status, answer.body[:300])
        _assert_refused(answer)


@pytest.mark.parametrize("target_name", JSON_TARGETS)
def test_an_http_client_reads_the_early_413_of_a_50_mb_body(
    module_server: ServerProcess, targets: dict[str, Target], target_name: str
) -> None:
    """The server answers before it has read the body and closes; HTTPX (what a script or an
    integration would use) still gets the answer, not a broken connection."""
    target = targets[target_name]
    body = b'{"pad": "' + b"x" * (50 * MB) + b'"}'
    with httpx.Client(base_url=module_server.url, timeout=60) as client:
        answer = client.post(target.path, content=body, headers=target.headers)
    assert answer.status_code == 413, answer.text[:300]
    assert "limit" in answer.json()["detail"]


@pytest.mark.parametrize("target_name", JSON_TARGETS)
def test_nul_characters_and_wrong_field_types_are_refused(
    module_server: ServerProcess, targets: dict[str, Target], target_name: str
) -> None:
    target = targets[target_name]
    for field in target.valid:
        for value in (None, 12345, 1.5, True, [], {}, "x" * 100_000, "a\u0000b"):
            if field == "summary" and isinstance(value, str):
                continue  # a summary of any text is taken (and cut to length)
            if value == "a\u0000b" and target_name != "rest":
                continue  # an agent's NUL is kept as U+FFFD (test_nul_characters.py)
            body = _with(target.valid, **{field: value})
            answer = exchange(module_server, target.path, body, target.headers)
            _assert_refused(answer)


@pytest.mark.parametrize("target_name", JSON_TARGETS)
def test_wrong_content_types_are_refused(
    module_server: ServerProcess, targets: dict[str, Target], target_name: str
) -> None:
    target = targets[target_name]
    form = {**target.headers, "Content-Type": "application/x-www-form-urlencoded"}
    answer = exchange(module_server, target.path, b"name=hostile&ip=1", form)
    _assert_refused(answer)
    multipart = {**target.headers, "Content-Type": "multipart/form-data; boundary=zz"}
    body = b'--zz\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n--zz--\r\n'
    _assert_refused(exchange(module_server, target.path, body, multipart))


def test_a_json_body_declared_as_text_is_not_parsed_by_the_rest_api(
    module_server: ServerProcess, targets: dict[str, Target]
) -> None:
    rest = targets["rest"]
    text = {**rest.headers, "Content-Type": "text/plain"}
    answer = exchange(module_server, rest.path, _with(rest.valid, name="as-text"), text)
    _assert_refused(answer, {415, 422})


@pytest.mark.parametrize("target_name", JSON_TARGETS)
def test_chunked_bodies_without_a_length(
    module_server: ServerProcess, targets: dict[str, Target], target_name: str
) -> None:
    target = targets[target_name]
    text = json.dumps(target.valid).encode()
    # A small chunked body is read like any other: the answer is the endpoint's usual one.
    answer = exchange(module_server, target.path, [text[:5], text[5:]], target.headers)
    assert answer.status < 500, answer.body
    # Chunked past the limit: refused as soon as the limit is passed.
    huge = [text[:-1] + b', "pad": "'] + [b"x" * MB] * 8 + [b'"}']
    answer = exchange(module_server, target.path, huge, target.headers)
    assert _assert_refused(answer, {413})
    # Chunked JSON that stops short.
    answer = exchange(module_server, target.path, [b'{"ip"'], target.headers)
    assert answer.status in REFUSALS, answer.body


def test_hostile_bodies_at_the_web_login_form(module_server: ServerProcess) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    cases = [
        (b"name=admin&password=" + b"x" * (5 * MB), form, {413}),
        (b"name=admin&password=" + b"x" * (50 * MB), form, {413}),
        (b"name=adm%00in&password=%00", form, {400, 401, 422, 429}),
        (b"name=%ff%fe&password=%c3", form, {400, 401, 422, 429}),
        (b"&&&===&&&", form, {400, 422}),
        (b"name=" + b"a&" * 2000, form, {400, 422}),
        (b'{"name": "admin", "password": "x"}', {"Content-Type": "application/json"}, {400, 422}),
        (b"--zz\r\n\r\n", {"Content-Type": "multipart/form-data; boundary=zz"}, {400, 422}),
        (b"\xff" * 1000, {"Content-Type": "multipart/form-data"}, {400, 422}),
    ]
    for body, headers, statuses in cases:
        answer = exchange(module_server, "/login", body, headers)
        assert answer.status in statuses, (body[:60], answer.status, answer.body[:300])
    chunked = exchange(module_server, "/login", [b"name=admin&password="] + [b"x" * MB] * 8, form)
    assert chunked.status == 413, chunked.body[:300]


def test_out_of_range_ids_in_any_path_get_a_4xx(module_server: ServerProcess) -> None:
    """Every route, REST and web, with each path parameter a number no id column holds, or
    zero, or negative: a 4xx (the parameter is refused, or the object is not found)."""
    routes = parameterised_routes()
    assert len(routes) > 50, routes
    web = web_session(module_server)
    api = {"Authorization": f"Bearer {module_server.token}"}
    # With the session's CSRF token, a form post gets past the CSRF check to its parameters.
    found = re.search(r'name="csrf_token" value="([^"]+)"', web.get("/pools").text)
    assert found, "no CSRF token on the pools page"
    try:
        for method, template in routes:
            for number in ("99999999999999999999", "2147483648", "0", "-1"):
                path = re.sub(r"\{[^}]+\}", number, template)
                form = {"csrf_token": found.group(1)}
                answer = web.request(method, path, headers=api, data=form)
                assert 400 <= answer.status_code < 500, (method, path, answer.status_code)
    finally:
        web.close()


def test_nothing_broke_and_nothing_changed(
    module_server: ServerProcess, member: SimulatedMember
) -> None:
    """Run last: no hostile pool was made, the API and pages answer, no traceback was logged."""
    with module_server.api() as api:
        members = assert_api_answers(api)
        assert {m["hostname"] for m in members} == {"hb-00000"}
        names = {pool["name"] for pool in api.get("/api/pools").json()["items"]}
        assert names <= {"hb-000", "hostile-bodies", "as-text"} and "as-text" not in names
    web = web_session(module_server)
    try:
        assert_pages_render(web, members)
    finally:
        web.close()
    assert_no_tracebacks(module_server)
