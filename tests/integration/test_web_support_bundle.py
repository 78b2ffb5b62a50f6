"""The "Download support bundle" buttons: where they are, who may press them (CSRF, operator
role), and that pressing one answers the archive; and the secrets the bundle searches for."""

from __future__ import annotations

import io
import re
import tarfile

import pytest

from serverctl.domain.jobs import Enqueue
from serverctl.domain.principal import SYSTEM
from serverctl.domain.redaction import known_secrets
from support.webui import heartbeat, login

POOL_FORM = 'action="/pools/1/support-bundle"'
MEMBER_FORM = 'action="/pools/1/members/1/support-bundle"'


@pytest.fixture
def pool(app_env):
    created = app_env.state.pools.create_pool(SYSTEM, "edge", "haproxy")
    member = app_env.state.pools.add_member(SYSTEM, created["id"], "edge-1", ["127.0.0.2"])
    return member


def _files(answer) -> dict[str, str]:
    """The bundle's files by their path inside its folder, as text (README's lines unwrapped)."""
    files = {}
    with tarfile.open(fileobj=io.BytesIO(answer.content), mode="r:gz") as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            assert handle is not None
            files[member.name.split("/", 1)[1]] = handle.read().decode()
    files["README.txt"] = " ".join(files["README.txt"].split())
    return files


def _button(page: str, form: str) -> str:
    found = re.search(re.escape(form) + r".*?</form>", page, re.S)
    assert found, f"no form {form}"
    return found.group(0)


def test_operators_see_the_buttons_on_the_overview_and_the_member_tab(app_env, pool):
    login(app_env, "ops", "operator")
    overview = _button(app_env.client.get("/pools/1").text, POOL_FORM)
    assert "Download support bundle" in overview and 'name="csrf_token"' in overview
    assert "disabled" not in overview
    member = _button(app_env.client.get("/pools/1/members/1").text, MEMBER_FORM)
    assert "Download support bundle" in member and "disabled" not in member


def test_viewers_see_a_disabled_button_with_the_reason(app_env, pool):
    csrf = login(app_env, "watcher", "viewer")
    button = _button(app_env.client.get("/pools/1").text, POOL_FORM)
    assert "disabled" in button and "Needs the operator role" in button
    refused = app_env.client.post("/pools/1/support-bundle", data={"csrf_token": csrf})
    assert refused.status_code == 403
    assert "needs operator" in refused.text


def test_the_button_answers_the_archive(app_env, pool):
    heartbeat(app_env, pool.secret, "edge-1", "127.0.0.2")
    csrf = login(app_env, "ops", "operator")
    answer = app_env.client.post(
        "/pools/1/members/1/support-bundle", data={"csrf_token": csrf, "wait_s": "0"}
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/gzip"
    assert re.fullmatch(
        r'attachment; filename="serverctl-support-edge-edge-1-\d{8}T\d{6}Z\.tar\.gz"',
        answer.headers["content-disposition"],
    )
    assert {"README.txt", "members.json", "members/edge-1/agent-log.txt"} <= set(_files(answer))
    # The online member was asked for its log: the job is queued for its next heartbeat.
    jobs, _ = app_env.state.jobs.list_jobs(SYSTEM, 1, 1, job_type="agent.logs")
    assert [j["enqueued_by"] for j in jobs] == ["user:ops"]


def test_the_button_needs_the_csrf_token(app_env, pool):
    login(app_env, "ops", "operator")
    assert app_env.client.post("/pools/1/support-bundle", data={}).status_code == 403
    assert (
        app_env.client.post("/pools/1/support-bundle", data={"csrf_token": "x"}).status_code == 403
    )


def test_an_offline_member_is_not_asked_and_the_bundle_says_why(app_env, pool):
    csrf = login(app_env, "ops", "operator")
    answer = app_env.client.post("/pools/1/support-bundle", data={"csrf_token": csrf})
    assert answer.status_code == 200
    readme = _files(answer)["README.txt"]
    assert "edge-1: not asked: its agent has never sent a heartbeat" in readme
    assert app_env.state.jobs.list_jobs(SYSTEM, 1, 1, job_type="agent.logs")[1] == 0


def test_every_stored_secret_is_searched_for(app_env):
    state = app_env.state
    state.dns_accounts.create(
        SYSTEM, "cf", "cloudflare", {"api_token": "cf-Token-0042", "account_id": "a" * 32}
    )
    state.smtp.set(
        SYSTEM,
        host="smtp.example.com",
        port=587,
        security="starttls",
        from_address="serverctl@example.com",
        username="u",
        password="smtp-Pw-0042",
    )
    known, problems = known_secrets(state.db, state.box, state.settings)
    assert known["cf-Token-0042"] == "DNS provider 'cf'"
    assert known["smtp-Pw-0042"] == "setting 'smtp'"
    assert "secret.key" in known.values()  # the encryption key itself
    assert problems == []


def test_a_member_that_does_not_answer_in_time_gets_its_earlier_lines(app_env, pool):
    env = app_env
    beat = heartbeat(env, pool.secret, "edge-1", "127.0.0.2")
    assert beat["jobs"] == []
    earlier = env.state.jobs.enqueue(SYSTEM, Enqueue(1, 1, "agent.logs", {"lines": 10}))
    claimed = heartbeat(env, pool.secret, "edge-1", "127.0.0.2")["jobs"]
    assert [j["id"] for j in claimed] == [earlier["id"]]
    result = {"source": "file", "where": "/var/log/balctl/agent.log", "text": "older line\n"}
    env.state.jobs.complete(1, earlier["id"], "completed", "1 log line(s)", "older line\n", result)
    answer = env.client.get("/api/pools/1/members/1/support-bundle?wait_s=0")
    assert answer.status_code == 200, answer.text
    files = _files(answer)
    assert files["members/edge-1/agent-log.txt"] == "older line\n"
    assert (
        f"agent-log.txt holds the lines of the earlier job {earlier['id']}" in files["README.txt"]
    )
    assert "was still pending after 0 s" in files["README.txt"]
