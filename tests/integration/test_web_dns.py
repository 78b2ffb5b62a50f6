"""The Managed DNS tab and Settings → API providers through the real web routes, against a real
PowerDNS server."""

from __future__ import annotations

import re

import pytest

from serverctl.domain.principal import SYSTEM
from support.util import free_port, wait_until
from support.webui import heartbeat, login

EDGE_1 = "127.0.0.2"
HX = {"HX-Request": "true"}


@pytest.fixture
def pool(app_env):
    state = app_env.state
    created = state.pools.create_pool(SYSTEM, "edge", "haproxy")
    member = state.pools.add_member(SYSTEM, created["id"], "edge-1", [EDGE_1])
    return {"id": created["id"], "secret": member.secret}


def _provider(env, pdns, name="pdns-main"):
    return env.state.dns_accounts.create(SYSTEM, name, "powerdns", pdns.powerdns_config())


def _unreachable(env, kind="powerdns"):
    port = free_port()
    config = (
        {"api_url": f"http://127.0.0.1:{port}", "api_key": "k"}
        if kind == "powerdns"
        else {
            "api_token": "t",
            "account_id": "0" * 32,
            "api_base": f"http://127.0.0.1:{port}/client/v4",
        }
    )
    return env.state.dns_accounts.create(SYSTEM, f"down-{kind}", kind, config)


# -- Settings → API providers ---------------------------------------------------------------------


def test_providers_page_renders_a_form_per_kind_from_the_config_model(app_env):
    login(app_env)
    page = app_env.client.get("/settings/providers")
    assert page.status_code == 200
    assert 'href="/settings/providers"' in page.text  # the top nav
    kinds = re.findall(r'<option value="([a-z0-9]+)"', page.text)
    assert {"cloudflare", "cpanel", "powerdns", "rfc2136"} <= set(kinds)
    expected = {
        "cloudflare": (["api_token"], ["account_id"]),
        "cpanel": (["api_token"], ["host", "port", "username", "verify_tls", "ca_bundle"]),
        "rfc2136": (["tsig_secret"], ["server", "port", "zone", "tsig_key_name", "tsig_algorithm"]),
        "powerdns": (["api_key"], ["api_url", "server_id", "nameserver"]),
    }
    for kind, (secret, plain) in expected.items():
        fields = app_env.client.get(f"/settings/providers/fields?kind={kind}", headers=HX).text
        for name in secret:
            assert re.search(rf'<input type="password" name="cfg_{name}"', fields), (kind, name)
        for name in plain:
            assert f'name="cfg_{name}"' in fields, (kind, name)
            assert not re.search(rf'type="password" name="cfg_{name}"', fields)
    powerdns = app_env.client.get("/settings/providers/fields?kind=powerdns").text
    assert re.search(r'name="cfg_server_id" id="cfg-server_id" value="localhost"', powerdns)
    rfc = app_env.client.get("/settings/providers/fields?kind=rfc2136").text
    assert '<select name="cfg_tsig_algorithm"' in rfc and ">hmac-sha512</option>" in rfc


def test_providers_add_list_test_and_delete_never_showing_the_secret(app_env, pool, pdns):
    csrf = login(app_env)
    config = pdns.powerdns_config()
    created = app_env.client.post(
        "/settings/providers",
        data={
            "csrf_token": csrf,
            "name": "pdns-main",
            "kind": "powerdns",
            "cfg_api_url": config["api_url"],
            "cfg_api_key": config["api_key"],
            "cfg_server_id": "localhost",
            "cfg_nameserver": config["nameserver"],
            "cfg_verify_tls": "on",
        },
        follow_redirects=False,
    )
    assert created.status_code == 303, created.text
    page = app_env.client.get(created.headers["location"])
    assert "Saved provider pdns-main" in page.text
    row = re.search(r'<tr data-provider="pdns-main".*?</tr>', page.text, re.S).group(0)
    assert config["api_url"] in row and "PowerDNS" in row
    assert config["api_key"] not in page.text
    tested = app_env.client.post(
        "/settings/providers/1/test", data={"csrf_token": csrf, "zone": pdns.zone}, headers=HX
    )
    assert 'data-ok="true"' in tested.text and "Connected" in tested.text
    assert "<html" not in tested.text  # HTMX gets the result line only
    wrong_zone = app_env.client.post(
        "/settings/providers/1/test", data={"csrf_token": csrf, "zone": "nope.example"}
    )
    assert 'data-ok="false"' in wrong_zone.text and "<html" in wrong_zone.text

    app_env.state.pool_dns.link(
        SYSTEM, pool["id"], provider_id=1, zone=pdns.zone, label="lb", ttl=30
    )
    refused = app_env.client.post("/settings/providers/1/delete", data={"csrf_token": csrf})
    assert refused.status_code == 409
    assert "is linked to 1 pool(s); unlink it on their Managed DNS tabs first" in refused.text
    app_env.state.pool_dns.unlink(SYSTEM, pool["id"])
    deleted = app_env.client.post(
        "/settings/providers/1/delete", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert deleted.headers["location"] == "/settings/providers?deleted=pdns-main"
    assert app_env.state.dns_accounts.list_all(SYSTEM) == []


def test_a_bad_provider_form_says_why_and_never_echoes_the_secret(app_env):
    csrf = login(app_env)
    answer = app_env.client.post(
        "/settings/providers",
        data={
            "csrf_token": csrf,
            "name": "pdns",
            "kind": "powerdns",
            "cfg_api_url": "ftp://ns1.example",
            "cfg_api_key": "SECRET-never-shown",
        },
    )
    assert answer.status_code == 422
    assert "PowerDNS settings are not valid: api_url" in answer.text
    assert "SECRET-never-shown" not in answer.text
    assert 'value="ftp://ns1.example"' in answer.text  # the rest is kept
    missing = app_env.client.post(
        "/settings/providers", data={"csrf_token": csrf, "name": "cf", "kind": "cloudflare"}
    )
    assert missing.status_code == 422 and "api_token: Field required" in missing.text
    assert app_env.state.dns_accounts.list_all(SYSTEM) == []


def test_only_admins_add_or_delete_providers(app_env, pdns):
    _provider(app_env, pdns)
    csrf = login(app_env, "ops", "operator")
    page = app_env.client.get("/settings/providers")
    assert 'id="add-provider"' not in page.text and ">Delete</button>" not in page.text
    assert ">Test</button>" in page.text
    added = app_env.client.post(
        "/settings/providers", data={"csrf_token": csrf, "name": "x", "kind": "powerdns"}
    )
    assert added.status_code == 403
    assert (
        app_env.client.post("/settings/providers/1/delete", data={"csrf_token": csrf}).status_code
        == 403
    )
    csrf = login(app_env, "val", "viewer")
    page = app_env.client.get("/settings/providers")
    assert "pdns-main" in page.text and ">Test</button>" not in page.text


# -- the Managed DNS tab --------------------------------------------------------------------------


def test_managed_dns_without_providers_points_to_api_providers(app_env, pool):
    login(app_env)
    page = app_env.client.get("/pools/1/dns")
    assert page.status_code == 200
    assert 'id="no-providers"' in page.text
    assert 'href="/settings/providers">Add one under Settings → API providers' in page.text
    assert "DNS not linked" in page.text


def test_managed_dns_link_read_test_and_unlink(app_env, pool, pdns):
    _provider(app_env, pdns)
    heartbeat(app_env, pool["secret"], "edge-1", EDGE_1)
    csrf = login(app_env, "ops", "operator")
    page = app_env.client.get("/pools/1/dns")
    assert 'hx-get="/pools/1/dns/zones" hx-trigger="load"' in page.text
    assert 'id="dns-only-note"' in page.text  # PowerDNS has no proxy
    zones = app_env.client.get(
        "/pools/1/dns/zones", params={"provider_id": 1, "label": "lb"}, headers=HX
    )
    assert re.search(
        rf'<select name="zone".*<option value="{pdns.zone}" selected>', zones.text, re.S
    )
    assert f'<code id="fqdn-value">lb.{pdns.zone}</code>' in zones.text  # the preview, out of band
    preview = app_env.client.get("/pools/1/dns/preview", params={"label": "LB", "zone": pdns.zone})
    assert f"lb.{pdns.zone}" in preview.text
    bad = app_env.client.get("/pools/1/dns/preview", params={"label": "no way", "zone": pdns.zone})
    assert "is not valid" in bad.text

    saved = app_env.client.post(
        "/pools/1/dns",
        data={
            "csrf_token": csrf,
            "provider_id": "1",
            "zone": pdns.zone,
            "label": "lb",
            "ttl": "30",
            "ddns": "on",
            "check_servers": "",
        },
        follow_redirects=False,
    )
    assert saved.status_code == 303 and saved.headers["location"] == "/pools/1/dns?saved=1"
    page = app_env.client.get(saved.headers["location"])
    assert "Saved: the record is published" in page.text
    assert 'hx-get="/pools/1/dns/current" hx-trigger="load"' in page.text
    assert 'name="ddns" checked' in page.text and 'value="30"' in page.text
    assert app_env.state.pool_dns.view(SYSTEM, 1, read_provider=False)["ddns"] is True
    wait_until(lambda: pdns.query_a("lb") == [EDGE_1], 10, what="the record")

    current = app_env.client.get("/pools/1/dns/current", headers=HX)
    assert re.search(rf'data-target="{EDGE_1}" data-matches="true"', current.text)
    assert "Matches the active member" in current.text
    status = wait_until(
        lambda: "propagated in" in (t := app_env.client.get("/pools/1/dns/status").text) and t,
        10,
        what="propagation",
    )
    assert 'data-state="applied"' in status, status

    tested = app_env.client.post("/pools/1/dns/test", data={"csrf_token": csrf}, headers=HX)
    assert 'data-ok="true"' in tested.text and "<html" not in tested.text
    full = app_env.client.post("/pools/1/dns/test", data={"csrf_token": csrf})
    assert 'data-ok="true"' in full.text and "<html" in full.text

    unlinked = app_env.client.post(
        "/pools/1/dns/unlink", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert unlinked.headers["location"] == "/pools/1/dns?unlinked=1"
    page = app_env.client.get(unlinked.headers["location"])
    assert "DNS unlinked" in page.text and "DNS not linked" in page.text
    assert app_env.state.pool_dns.view(SYSTEM, 1, read_provider=False)["linked"] is False


def test_managed_dns_save_errors_are_shown(app_env, pool, pdns):
    _provider(app_env, pdns)
    csrf = login(app_env, "ops", "operator")
    form = {"csrf_token": csrf, "provider_id": "1", "zone": pdns.zone, "label": "lb", "ttl": "60"}
    bad_label = app_env.client.post("/pools/1/dns", data={**form, "label": "no way"})
    assert (
        bad_label.status_code == 422 and "DNS label &#39;no way&#39; is not valid" in bad_label.text
    )
    assert 'value="no way"' in bad_label.text
    bad_ttl = app_env.client.post("/pools/1/dns", data={**form, "ttl": "0"})
    assert bad_ttl.status_code == 422 and "TTL must be between 1 and 86400" in bad_ttl.text
    proxied = app_env.client.post("/pools/1/dns", data={**form, "proxied": "on"})
    assert proxied.status_code == 422 and "cannot proxy records" in proxied.text
    assert app_env.state.pool_dns.view(SYSTEM, 1, read_provider=False)["linked"] is False


def test_zone_list_falls_back_to_a_text_box_and_proxied_follows_the_provider(app_env, pool):
    _unreachable(app_env, "powerdns")
    _unreachable(app_env, "cloudflare")
    login(app_env, "ops", "operator")
    for provider_id, proxy in ((1, False), (2, True)):
        answer = app_env.client.get(
            "/pools/1/dns/zones",
            params={"provider_id": provider_id, "zone": "example.com", "label": "lb"},
            headers=HX,
        )
        assert answer.status_code == 200
        assert '<input name="zone" id="zone" value="example.com"' in answer.text
        assert "Could not list the provider's zones" in answer.text
        assert ('name="proxied"' in answer.text) is proxy
        assert ("Raw TCP" in answer.text) is proxy
        assert "lb.example.com" in answer.text


def test_current_record_says_when_the_provider_cannot_be_read(app_env, pool, pdns):
    _provider(app_env, pdns)
    app_env.state.pool_dns.link(SYSTEM, 1, provider_id=1, zone=pdns.zone, label="lb", ttl=30)
    login(app_env, "ops", "operator")
    empty = app_env.client.get("/pools/1/dns/current")
    assert "No A record for" in empty.text  # no active address has been published yet
    pdns.stop()
    page = app_env.client.get("/pools/1/dns")  # renders without asking the provider
    assert page.status_code == 200 and "Reading the A record" in page.text
    down = app_env.client.get("/pools/1/dns/current")
    assert 'id="current-error"' in down.text and "Could not read the record" in down.text


def test_viewers_see_managed_dns_read_only(app_env, pool, pdns):
    _provider(app_env, pdns)
    app_env.state.pool_dns.link(SYSTEM, 1, provider_id=1, zone=pdns.zone, label="lb", ttl=30)
    csrf = login(app_env, "val", "viewer")
    page = app_env.client.get("/pools/1/dns")
    assert "<fieldset disabled>" in page.text
    for hidden in ('id="dns-save"', "Unlink</button>", "Test DNS connection"):
        assert hidden not in page.text
    zones = app_env.client.get("/pools/1/dns/zones", params={"provider_id": 1, "zone": pdns.zone})
    assert '<input name="zone"' in zones.text and "Could not list" not in zones.text
    refused = app_env.client.post("/pools/1/dns/unlink", data={"csrf_token": csrf})
    assert refused.status_code == 403
