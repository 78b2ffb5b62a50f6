"""Stored XSS: markup that agents and operators can put into the control plane comes back out
of every page as text, never as markup.

A real `serverctl serve` is fed hostile values wherever input is free text: what an agent
reports (its version, HAProxy's `show info` and `show stat` names and states, the topology of
frontends, binds, backends and servers, the backup inventory), what its jobs report (summaries,
output, backup manifests: paths, owners, symlink targets, skipped files), refused requests
(whose reason quotes the agent's hostname) and operator-named things (API tokens). Names the
control plane validates (pools, hostnames) are tried too, and must be refused.

Then every page of the UI (found from the app's routes, HTMX parts included) is read: no
payload may arrive as a tag, an event handler or a `javascript:` URL, and each one must be
visible, escaped, where it belongs (so the check cannot pass by showing nothing). A headless
Chromium finally loads the pages with every payload's function defined: none may run.
"""

from __future__ import annotations

import collections.abc
import hashlib
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from markupsafe import escape

import serverctl.web
from support.browser import chromium, login
from support.route_walk import fill_path, listing_app, page_routes
from support.server import ServerProcess, start_server, stop_process
from support.standin_agent import StandInAgent, tar_gz
from support.util import wait_until

AGENT_IP = "127.0.0.2"
MARK = re.compile(r"xss\d+")


def script(n: int) -> str:
    return f"<script>xss{n}()</script>"


def img(n: int) -> str:
    return f'"><img src=x onerror=xss{n}()>'


def js_url(n: int) -> str:
    return f"javascript:xss{n}()"


def quote_break(n: int) -> str:
    """Breaks out of a JavaScript string in an inline handler: confirm('...{{ value }}...')."""
    return f"');xss{n}();('"


@dataclass(frozen=True)
class Injection:
    where: str  # what the value is
    payload: str
    page: str  # the page (path template) that must show it, escaped


PAGE_MEMBER = "/pools/{pool_id}/members/{member_id}"
STANDBY = "/pools/{pool_id}/members/{standby_id}"
# Each payload's number is unique: a hit names the injection point.
INJECTIONS = [
    Injection("agent version", script(1), PAGE_MEMBER),
    Injection("show info version", img(2), PAGE_MEMBER + "/status"),
    Injection("show stat frontend name", script(3), PAGE_MEMBER + "/status"),
    Injection("show stat frontend status", img(4), PAGE_MEMBER + "/status"),
    Injection("show stat backend name", img(5), PAGE_MEMBER + "/status"),
    Injection("show stat server name", quote_break(6), PAGE_MEMBER + "/status"),
    Injection("show stat server status", img(7), PAGE_MEMBER + "/status"),
    Injection("show stat server admin state", script(8), PAGE_MEMBER + "/status"),
    Injection("show stat server check status", js_url(9), PAGE_MEMBER + "/status"),
    # Listeners are kept, not shown (yet): every page is still scanned for them.
    Injection("topology frontend", img(10), ""),
    Injection("topology bind", script(11), ""),
    Injection("topology backend", img(12), STANDBY + "/control"),
    Injection("topology server", quote_break(13), STANDBY + "/control"),
    Injection("job summary", script(14), PAGE_MEMBER + "/jobs"),
    Injection("job output", img(15), PAGE_MEMBER + "/jobs"),
    Injection("backup file path", script(16), PAGE_MEMBER + "/backups/{snapshot_id}"),
    Injection("backup file owner", img(17), PAGE_MEMBER + "/backups/{snapshot_id}"),
    Injection("backup symlink target", js_url(18), PAGE_MEMBER + "/backups/{snapshot_id}"),
    Injection("backup skipped reason", script(19), PAGE_MEMBER + "/backups/{snapshot_id}"),
    Injection("refused hostname", img(20), PAGE_MEMBER),
    Injection("API token name", img(21), "/admin"),
    Injection("SMTP user name", img(22), "/settings/email"),
    # The "requests refused" alert quotes the last refusal's reason, so the hostname again.
    Injection("alert quoting a refusal", img(20), PAGE_MEMBER + "/monitoring"),
    Injection("alert quoting a refusal, pool tab", img(20), "/pools/{pool_id}/monitoring"),
]


def _by(where: str) -> str:
    return next(i.payload for i in INJECTIONS if i.where == where)


# -- the control plane, fed ------------------------------------------------------------------------


@dataclass
class Fed:
    cp: ServerProcess
    ids: dict[str, Any]
    web: httpx.Client  # logged in as the admin


def _heartbeat_block() -> dict[str, Any]:
    server = {"name": _by("show stat server name"), "status": _by("show stat server status")}
    server |= {"admin": _by("show stat server admin state"), "weight": 1, "scur": 0, "rate": 0}
    server["check_status"] = _by("show stat server check status")
    return {
        "admin_socket_configured": True,
        "admin_socket": True,
        "info": {
            "version": _by("show info version"),
            "pid": 1,
            "uptime_s": 60,
            "curr_conns": 0,
            "conn_rate": 0,
            "sess_rate": 0,
        },
        "stats": {
            "at": 1795493992,
            "frontends": [
                {
                    "name": _by("show stat frontend name"),
                    "status": _by("show stat frontend status"),
                    "scur": 0,
                    "rate": 0,
                    "stot": 0,
                    "bin": 0,
                    "bout": 0,
                }
            ],
            "backends": [
                {
                    "name": _by("show stat backend name"),
                    "status": "UP",
                    "scur": 0,
                    "rate": 0,
                    "stot": 0,
                    "bin": 0,
                    "bout": 0,
                    "servers": [server],
                }
            ],
        },
        "topology": {
            "listeners": [{"frontend": _by("topology frontend"), "bind": _by("topology bind")}],
            "backends": [{"name": _by("topology backend"), "servers": [_by("topology server")]}],
        },
    }


def _feed(api: httpx.Client, agent_client: httpx.Client) -> dict[str, Any]:
    pool = api.post("/api/pools", json={"name": "xss"}).json()
    base = f"/api/pools/{pool['id']}"
    agent, standby = (
        _member(api, agent_client, pool["id"], hostname) for hostname in ("edge-1", "edge-2")
    )
    block = _heartbeat_block()
    # edge-1 reports figures from the admin socket; edge-2 only its configuration's topology
    # (the control panel lists the one or the other).
    agent.heartbeat(**{k: v for k, v in block.items() if k != "topology"})
    standby.heartbeat(topology=block["topology"])

    assert api.post(f"{base}/members/{agent.member_id}/jobs", json={"type": "haproxy.reload"})
    job = agent.claim()
    agent.complete(job["id"], "failed", _by("job summary"), output=_by("job output"))

    assert api.post(f"{base}/members/{agent.member_id}/backups").status_code == 202
    snapshot_id = _back_up_hostile_files(agent)

    alerts = {"alerts": {"member.rejected": {"threshold": 1}}}
    assert api.put(f"{base}/members/{agent.member_id}/alerts", json=alerts).status_code == 200
    refused = StandInAgent(agent_client, agent.secret, _by("refused hostname"), AGENT_IP)
    assert refused.send_heartbeat().status_code == 401
    wait_until(
        lambda: api.get(f"{base}/alerts/history").json()["items"],
        30,
        interval=0.25,
        what="the refused-requests alert",
    )
    smtp = {
        "host": "smtp.example.com",
        "from_address": "serverctl@example.com",
        "username": _by("SMTP user name"),
        "password": "smtp-password-1",
    }
    assert api.put("/api/settings/smtp", json=smtp).status_code == 200
    token = api.post("/api/tokens", json={"name": _by("API token name"), "role": "viewer"})
    assert token.status_code == 201, token.text
    return {
        "pool_id": pool["id"],
        "member_id": agent.member_id,
        "standby_id": standby.member_id,
        "snapshot_id": snapshot_id,
    }


def _member(
    api: httpx.Client, agent_client: httpx.Client, pool_id: int, hostname: str
) -> StandInAgent:
    made = api.post(
        f"/api/pools/{pool_id}/members", json={"hostname": hostname, "allowed_ips": [AGENT_IP]}
    )
    assert made.status_code == 201, made.text
    agent = StandInAgent(agent_client, made.json()["secret"], hostname, AGENT_IP)
    agent.version = _by("agent version")
    agent.member_id = made.json()["id"]
    return agent


def _back_up_hostile_files(agent: StandInAgent) -> int:
    """A backup whose manifest names hostile paths, owners, link targets and skip reasons."""
    job = agent.claim()
    params = job["params"]
    path = f"/etc/haproxy/{_by('backup file path')}.cfg"
    data, manifest = tar_gz({path: b"global\n"})
    manifest[0]["owner"] = _by("backup file owner")
    manifest.append(
        {
            "path": "/etc/haproxy/current.cfg",
            "type": "symlink",
            "size": 0,
            "mode": "0777",
            "owner": "root:root",
            "sha256": "0" * 64,
            "link": _by("backup symlink target"),
        }
    )
    upload = agent.call(
        "PUT",
        params["upload"]["path"],
        content=data,
        headers={"X-Balctl-Hostname": agent.hostname, "Content-Type": "application/gzip"},
    )
    assert upload.status_code == 200, upload.text
    done = agent.complete(
        job["id"],
        summary="backed up",
        result={
            "snapshot_id": params["snapshot_id"],
            "archive_sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "haproxy_version": "2.6.12",
            "files": manifest,
            "skipped": [{"path": "/etc/ssl/x.pem", "reason": _by("backup skipped reason")}],
            "config_valid": True,
        },
    )
    assert done["state"] == "completed", done
    snapshot_id: int = params["snapshot_id"]
    return snapshot_id


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[Fed]:
    cp = start_server(tmp_path_factory.mktemp("cp"))
    agent_client = httpx.Client(
        base_url=cp.url, timeout=30, transport=httpx.HTTPTransport(local_address=AGENT_IP)
    )
    web = httpx.Client(base_url=cp.url, timeout=30)
    try:
        with cp.api() as api:
            ids = _feed(api, agent_client)
        login = web.post("/login", data={"name": "admin", "password": cp.admin_password})
        assert login.status_code == 303, login.text
        yield Fed(cp, ids, web)
    finally:
        web.close()
        agent_client.close()
        stop_process(cp.process)


# -- reading the pages ----------------------------------------------------------------------------


class _Scan(HTMLParser):
    """Where a payload's mark landed as markup: in a tag's name or attributes where HTML runs
    code or follows URLs, or inside a <script>."""

    CODE_ATTRIBUTES = ("href", "src", "action", "formaction", "data", "srcdoc")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_script = tag == "script"
        for name, value in attrs:
            value = value or ""
            runs_code = name.startswith(("on", "hx-")) or name in self.CODE_ATTRIBUTES
            if runs_code and MARK.search(value):
                self.found.append(f"<{tag} {name}={value!r}>")
            if name in self.CODE_ATTRIBUTES and value.strip().lower().startswith("javascript:"):
                self.found.append(f"<{tag} {name}={value!r}>")
        if tag in ("img", "svg", "iframe", "object", "embed") and any(
            MARK.search(v or "") for _, v in attrs
        ):
            self.found.append(f"<{tag} {attrs!r}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and MARK.search(data):
            self.found.append(f"<script>{data.strip()[:80]}")


def markup_from_payloads(html: str) -> list[str]:
    scan = _Scan()
    scan.feed(html)
    scan.close()
    return scan.found


PAGES = sorted(set(page_routes(listing_app())))


def _pages(fed: Fed) -> dict[str, httpx.Response]:
    ids = {**fed.ids, "job_id": 1, "provider_id": 1}
    return {path: fed.web.get(fill_path(path, ids)) for path in PAGES}


@pytest.fixture(scope="module")
def pages(fed: Fed) -> dict[str, httpx.Response]:
    return _pages(fed)


@pytest.mark.parametrize("path", PAGES)
def test_no_payload_comes_out_of_a_page_as_markup(pages, path) -> None:
    answer = pages[path]
    assert answer.status_code < 500, answer.text
    if "text/html" not in answer.headers.get("content-type", ""):
        return
    assert markup_from_payloads(answer.text) == []
    for injection in INJECTIONS:
        if str(escape(injection.payload)) != injection.payload:
            assert injection.payload not in answer.text, f"{injection.where} is raw on {path}"


SHOWN = [i for i in INJECTIONS if i.page]


@pytest.mark.parametrize("injection", SHOWN, ids=lambda i: i.where)
def test_each_payload_is_shown_escaped_where_it_belongs(fed, injection) -> None:
    answer = fed.web.get(fill_path(injection.page, fed.ids))
    assert answer.status_code == 200, answer.text
    assert str(escape(injection.payload)) in answer.text, (
        f"{injection.where} is not on {injection.page}: the check would see nothing"
    )


# -- names the control plane validates, and what it echoes when it refuses them ------------------


@pytest.mark.parametrize("payload", [script(40), img(41), quote_break(42)])
def test_markup_in_pool_names_and_hostnames_is_refused(fed, payload) -> None:
    with fed.cp.api() as api:
        pool = api.post("/api/pools", json={"name": payload})
        member = api.post(
            f"/api/pools/{fed.ids['pool_id']}/members",
            json={"hostname": payload, "allowed_ips": [AGENT_IP]},
        )
    assert (pool.status_code, member.status_code) == (422, 422)


@pytest.mark.parametrize("payload", [script(43), img(44)])
def test_a_refused_form_echoes_the_markup_escaped(fed, payload) -> None:
    """The pool form's error message quotes the name typed: a reflected XSS if not escaped."""
    page = fed.web.get("/pools").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    answer = fed.web.post("/pools", data={"name": payload, "csrf_token": csrf.group(1)})
    assert answer.status_code == 422
    assert str(escape(repr(payload))) in answer.text
    assert markup_from_payloads(answer.text) == []


# -- a real browser -------------------------------------------------------------------------------

# Defines every payload's function before any page script runs: a call is a hit.
RECORD_HITS = """
window.__xss_hits = [];
for (let n = 0; n < 100; n++) { window["xss" + n] = () => window.__xss_hits.push(n); }
"""
# The pages an operator opens (the HTMX parts load inside them).
BROWSED = sorted({i.page for i in SHOWN} | {"/pools", "/pools/{pool_id}", PAGE_MEMBER})


@pytest.mark.browser
def test_no_payload_runs_in_a_browser(fed, tmp_path) -> None:
    with chromium(tmp_path) as browser:
        context = browser.new_context()
        context.add_init_script(RECORD_HITS)
        dialogs: list[str] = []
        page = context.new_page()
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

        # The detector works: a payload that does run is seen.
        page.set_content("<img src=x onerror=xss99()>")
        page.wait_for_function("window.__xss_hits.length > 0")
        assert page.evaluate("window.__xss_hits") == [99]

        login(page, fed.cp.url, fed.cp.admin_password)
        for path in BROWSED:
            url = fed.cp.url + fill_path(path, fed.ids)
            page.goto(url)
            page.wait_for_load_state("networkidle")
            # The HTMX parts are in the first render; a short wait lets any first poll land.
            page.wait_for_timeout(500)
            assert page.evaluate("window.__xss_hits") == [], f"a payload ran on {path}"
        assert dialogs == []


# -- the templates themselves ---------------------------------------------------------------------

TEMPLATES = Path(serverctl.web.__file__).parent / "templates"
# A value inside an inline handler or a <script> is decoded by the browser before the JavaScript
# runs, so HTML escaping does not protect it: pass values through data-* attributes instead.
INLINE_JS_WITH_VALUE = re.compile(r"""\son[a-z]+\s*=\s*("[^"]*\{\{|'[^']*\{\{)""")
SCRIPT_WITH_VALUE = re.compile(r"<script[^>]*>(?:(?!</script>).)*\{\{", re.DOTALL)


@pytest.mark.parametrize("template", sorted(TEMPLATES.glob("*.html")), ids=lambda p: p.name)
def test_no_template_puts_a_value_into_inline_javascript(template: Path) -> None:
    text = template.read_text()
    assert not INLINE_JS_WITH_VALUE.search(text)
    assert not SCRIPT_WITH_VALUE.search(text)
