"""Settings → TLS (the ACME settings page) through the real web routes, and the Cron & Jobs
preset "TLS force renew" (`tls.acme_renew_force` with the pool's failover name).

The page saves through the same service as `PUT /api/settings/acme`, so validation and the
audit are the service's; here: the form's choices, the messages, the roles, CSRF, and that the
account key never reaches a page."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from serverctl.acme.settings import LETS_ENCRYPT, LETS_ENCRYPT_STAGING
from serverctl.db.models import AppSetting, AuditEntry, DnsProviderAccount, PoolDns, Schedule
from serverctl.domain.pool_job_params import TLS_RENEW, tls_renew_params
from serverctl.domain.principal import SYSTEM
from serverctl.domain.schedules import PRESETS
from serverctl.errors import Conflict
from support.tls import TEST_CA_PEM
from support.webui import login

PAGE = "/settings/tls"
CUSTOM = "https://acme.example.net/directory"


def _checked(page: str, value: str) -> bool:
    """Whether the directory radio `value` is checked on `page`."""
    found = re.search(rf'<input type="radio" name="directory" value="{value}"([^>]*)>', page)
    assert found, page
    return "checked" in found.group(1)


def _audit(env, action: str) -> list[AuditEntry]:
    with env.state.db.session() as s:
        rows = list(s.scalars(select(AuditEntry).where(AuditEntry.action == action)))
        s.expunge_all()
        return rows


def test_the_page_is_in_the_menu_and_starts_unconfigured(app_env):
    login(app_env, "admin")
    menu = app_env.client.get("/pools").text
    assert f'<a href="{PAGE}">TLS</a>' in menu
    page = app_env.client.get(PAGE)
    assert page.status_code == 200
    assert "Not configured yet" in page.text
    assert LETS_ENCRYPT in page.text and LETS_ENCRYPT_STAGING in page.text
    assert _checked(page.text, "production") and not _checked(page.text, "staging")
    assert 'id="acme-save"' in page.text


def test_an_admin_saves_staging_and_sees_it(app_env):
    csrf = login(app_env, "admin")
    saved = app_env.client.post(
        PAGE,
        data={
            "directory": "staging",
            "directory_url": "",
            "email": " ops@example.com ",
            "ca_bundle": "",
            "check_servers": "192.0.2.53\nns2.example.net:5353\n",
            "csrf_token": csrf,
        },
        follow_redirects=False,
    )
    assert saved.status_code == 303 and saved.headers["location"] == f"{PAGE}?saved=1"
    stored = app_env.state.acme_settings.get(SYSTEM)
    assert stored["directory_url"] == LETS_ENCRYPT_STAGING
    assert stored["email"] == "ops@example.com"
    assert stored["ca_bundle"] is None
    assert stored["check_servers"] == ["192.0.2.53", "ns2.example.net:5353"]
    page = app_env.client.get(saved.headers["location"]).text
    assert 'id="acme-saved"' in page and "Not configured yet" not in page
    assert "Let's Encrypt staging</strong> <code>" + LETS_ENCRYPT_STAGING in html.unescape(page)
    assert _checked(page, "staging") and not _checked(page, "production")
    assert 'value="ops@example.com"' in page
    assert "192.0.2.53\nns2.example.net:5353</textarea>" in page
    assert 'data-registered="false"' in page and "the first order registers one" in page
    # The audit comes from the service, under the web user's name.
    [entry] = _audit(app_env, "settings.acme.update")
    assert entry.actor == "user:admin"
    assert entry.detail["after"]["directory_url"] == LETS_ENCRYPT_STAGING


def test_a_custom_server_with_a_ca_bundle_round_trips(app_env):
    csrf = login(app_env, "admin")
    saved = app_env.client.post(
        PAGE,
        data={
            "directory": "custom",
            "directory_url": CUSTOM,
            "email": "ops@example.com",
            "ca_bundle": TEST_CA_PEM,
            "check_servers": "",
            "csrf_token": csrf,
        },
    )
    assert saved.status_code == 200, saved.text  # followed the redirect
    stored = app_env.state.acme_settings.get(SYSTEM)
    assert stored["directory_url"] == CUSTOM and stored["check_servers"] == []
    assert stored["ca_bundle"].strip() == TEST_CA_PEM.strip()
    assert _checked(saved.text, "custom")
    assert f'value="{CUSTOM}"' in saved.text
    assert "Custom ACME server</strong> <code>" + CUSTOM in saved.text
    assert "1 certificate(s)" in saved.text
    assert TEST_CA_PEM.strip().splitlines()[1] in saved.text  # the bundle is in its box


def test_a_bad_url_shows_the_services_message_and_keeps_the_input(app_env):
    csrf = login(app_env, "admin")
    answer = app_env.client.post(
        PAGE,
        data={
            "directory": "custom",
            "directory_url": "http://acme.example.net/dir",
            "email": "ops@example.com",
            "check_servers": "192.0.2.53",
            "csrf_token": csrf,
        },
    )
    assert answer.status_code == 422
    text = html.unescape(answer.text)
    assert "directory_url must start with https://" in text
    assert 'id="acme-error"' in answer.text
    assert 'value="http://acme.example.net/dir"' in answer.text
    assert 'value="ops@example.com"' in answer.text
    assert "192.0.2.53</textarea>" in answer.text
    assert _checked(answer.text, "custom")
    assert app_env.state.acme_settings.get(SYSTEM)["configured"] is False
    assert _audit(app_env, "settings.acme.update") == []


def test_a_bad_check_server_and_a_key_in_the_bundle_are_refused_by_name(app_env):
    csrf = login(app_env, "admin")
    base = {"directory": "production", "email": "ops@example.com", "csrf_token": csrf}
    bad_server = app_env.client.post(PAGE, data={**base, "check_servers": "192.0.2.1:0"})
    assert bad_server.status_code == 422
    assert "check_servers entry is not host or host:port" in html.unescape(bad_server.text)
    key = "-----BEGIN PRIVATE KEY-----\nAA\n-----END PRIVATE KEY-----"
    with_key = app_env.client.post(PAGE, data={**base, "ca_bundle": TEST_CA_PEM + key})
    assert with_key.status_code == 422
    assert "ca_bundle holds a private key" in with_key.text
    assert app_env.state.acme_settings.get(SYSTEM)["configured"] is False


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_admins_save_others_see_the_values_read_only(app_env, role):
    app_env.state.acme_settings.set(
        SYSTEM, directory_url=LETS_ENCRYPT, email="ops@example.com", check_servers=["192.0.2.53"]
    )
    csrf = login(app_env, role, role)
    page = app_env.client.get(PAGE).text
    assert "Only admins change the ACME settings." in page
    assert "<fieldset disabled>" in page and 'id="acme-save"' not in page
    assert 'value="ops@example.com"' in page and LETS_ENCRYPT in page
    # Invalid input from a non-admin is refused for the role (403), never judged (422).
    refused = app_env.client.post(
        PAGE,
        data={
            "directory": "custom",
            "directory_url": "http://evil.example/dir",
            "email": "not-an-address",
            "csrf_token": csrf,
        },
    )
    assert refused.status_code == 403
    assert "this needs admin" in refused.text
    assert "http://evil.example/dir" not in refused.text  # the saved values are shown
    good = app_env.client.post(
        PAGE,
        data={"directory": "staging", "email": "evil@example.com", "csrf_token": csrf},
    )
    assert good.status_code == 403
    stored = app_env.state.acme_settings.get(SYSTEM)
    assert stored["directory_url"] == LETS_ENCRYPT and stored["email"] == "ops@example.com"


def test_a_post_without_the_csrf_token_is_refused(app_env):
    login(app_env, "admin")
    data = {"directory": "staging", "email": "ops@example.com"}
    assert app_env.client.post(PAGE, data=data).status_code == 403
    wrong = app_env.client.post(PAGE, data={**data, "csrf_token": "x" * 40})
    assert wrong.status_code == 403
    assert app_env.state.acme_settings.get(SYSTEM)["configured"] is False


def test_the_account_is_shown_but_never_its_key(app_env):
    service = app_env.state.acme_settings
    service.set(SYSTEM, directory_url=CUSTOM, email="ops@example.com")
    account = service.account()
    service.save_account_url(account, "https://acme.example.net/acct/42")
    key_lines = [
        line for line in account.key_pem.splitlines() if line and not line.startswith("-----")
    ]
    with app_env.state.db.session() as s:
        sealed = s.get(AppSetting, "acme").secrets_encrypted
    for role in ("admin", "viewer"):
        login(app_env, f"web{role}", role)
        page = app_env.client.get(PAGE).text
        assert 'data-registered="true"' in page
        assert "https://acme.example.net/acct/42" in page
        assert "PRIVATE KEY" not in page and sealed not in page
        assert not any(line in page for line in key_lines)
    # A refused save's page does not carry it either.
    csrf = login(app_env, "webadmin2")
    failed = app_env.client.post(
        PAGE, data={"directory": "custom", "directory_url": "ftp://x", "csrf_token": csrf}
    )
    assert failed.status_code == 422
    assert not any(line in failed.text for line in key_lines)


# -- Cron & Jobs preset: "TLS force renew" ---------------------------------------------------------


def _link(env, pool_id: int, label: str, zone: str = "example.com") -> None:
    """The pool's DNS link as PUT /pools/{id}/dns leaves it (the provider is never called)."""
    with env.state.db.session() as s:
        provider = s.scalar(select(DnsProviderAccount).where(DnsProviderAccount.name == "pdns"))
        if provider is None:
            provider = DnsProviderAccount(
                name="pdns", kind="powerdns", settings={}, secrets_encrypted="x", created_by="t"
            )
            s.add(provider)
            s.flush()
        link = s.get(PoolDns, pool_id)
        if link is None:
            s.add(PoolDns(pool_id=pool_id, provider_id=provider.id, zone=zone, label=label, ttl=60))
        else:
            link.label = label


def test_the_preset_derives_the_params_from_the_pool():
    link = PoolDns(pool_id=1, provider_id=1, zone="example.com", label="lb", ttl=60)
    assert PRESETS[TLS_RENEW] == "TLS force renew"
    assert tls_renew_params(link, {}) == {
        "fqdn": "lb.example.com",
        "names": ["lb.example.com"],
        "force": True,
    }
    # A renamed label: the old name goes, extra names (given over the API) stay.
    link.label = "www"
    old = {"fqdn": "lb.example.com", "names": ["lb.example.com", "alt.example.com"]}
    assert tls_renew_params(link, old) == {
        "fqdn": "www.example.com",
        "names": ["www.example.com", "alt.example.com"],
        "force": True,
    }
    apex = PoolDns(pool_id=1, provider_id=1, zone="example.com", label="@", ttl=60)
    assert tls_renew_params(apex, {})["fqdn"] == "example.com"
    with pytest.raises(Conflict, match="link a DNS provider and set the failover label"):
        tls_renew_params(None, {})


def test_the_cron_tab_offers_the_preset(app_env):
    pool = app_env.state.pools.create_pool(SYSTEM, "edge", "haproxy")
    member = app_env.state.pools.add_member(SYSTEM, pool["id"], "edge-1", ["127.0.0.2"]).member
    login(app_env, "admin")
    page = app_env.client.get(f"/pools/{pool['id']}/members/{member['id']}/jobs").text
    assert f'<option value="{TLS_RENEW}" >TLS force renew ({TLS_RENEW})</option>' in page


def test_a_preset_schedule_renews_the_pools_failover_name(app_env):
    pool = app_env.state.pools.create_pool(SYSTEM, "edge", "haproxy")
    member = app_env.state.pools.add_member(SYSTEM, pool["id"], "edge-1", ["127.0.0.2"]).member
    base = f"/pools/{pool['id']}/members/{member['id']}"
    csrf = login(app_env, "webop", "operator")
    form = {"job_type": TLS_RENEW, "cron": "0 4 * * 1", "scope": "pool", "csrf_token": csrf}
    # Without a failover name there is nothing to renew: the reason, not a schedule.
    refused = app_env.client.post(f"{base}/schedules", data=form)
    assert refused.status_code == 409
    assert "set the failover label" in refused.text
    _link(app_env, pool["id"], "lb")
    made = app_env.client.post(f"{base}/schedules", data=form, follow_redirects=False)
    assert made.status_code == 303, made.text
    [schedule] = app_env.state.schedules.list(SYSTEM, pool["id"])
    assert schedule["params"] == {
        "fqdn": "lb.example.com",
        "names": ["lb.example.com"],
        "force": True,
    }
    # The label changes afterwards: the schedule follows it when it runs.
    _link(app_env, pool["id"], "www")
    with app_env.state.db.session() as s:
        s.execute(
            update(Schedule)
            .where(Schedule.id == schedule["id"])
            .values(next_run_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    assert app_env.state.schedules.run_due() == 1
    jobs, _ = app_env.state.jobs.list_jobs(SYSTEM, pool["id"], member["id"])
    [job] = [j for j in jobs if j["type"] == TLS_RENEW]
    assert job["params"]["fqdn"] == "www.example.com"
    assert job["params"]["names"] == ["www.example.com"] and job["params"]["force"] is True
    # Without the DNS link a run is skipped (logged), not queued with a stale name.
    with app_env.state.db.session() as s:
        s.delete(s.get(PoolDns, pool["id"]))
        s.execute(
            update(Schedule)
            .where(Schedule.id == schedule["id"])
            .values(next_run_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    assert app_env.state.schedules.run_due() == 0
