"""`GET/PUT /api/settings/acme`: validation with messages naming the field, admin-only changes,
the audit trail, and an account key that never leaves the control plane."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from serverctl.acme.settings import AcmeSettingsService
from serverctl.crypto import SecretBox
from serverctl.db.models import AppSetting, AuditEntry
from serverctl.domain.principal import SYSTEM
from support.tls import TEST_CA_PEM

DIRECTORY = "https://acme.example.net/directory"
GOOD = {"directory_url": DIRECTORY, "email": "ops@example.com"}


def _audit(env, action: str) -> list[dict]:
    with env.state.db.session() as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.action == action)).all()
        return [{"actor": r.actor, "detail": r.detail} for r in rows]


def test_settings_start_unconfigured(app_env):
    answer = app_env.client.get("/api/settings/acme")
    assert answer.status_code == 200
    assert answer.json()["configured"] is False and answer.json()["account_registered"] is False


def test_settings_are_saved_shown_and_audited(app_env):
    body = {
        **GOOD,
        "ca_bundle": TEST_CA_PEM,
        "check_servers": ["192.0.2.53", "ns2.example.net:5353"],
    }
    saved = app_env.client.put("/api/settings/acme", json=body)
    assert saved.status_code == 200, saved.text
    shown = app_env.client.get("/api/settings/acme").json()
    assert shown["configured"] is True
    assert shown["directory_url"] == DIRECTORY and shown["email"] == "ops@example.com"
    assert shown["ca_bundle"].strip() == TEST_CA_PEM.strip()
    assert shown["check_servers"] == ["192.0.2.53", "ns2.example.net:5353"]
    assert shown["updated_by"] == "token:tests"
    [entry] = _audit(app_env, "settings.acme.update")
    assert entry["actor"] == "token:tests" and entry["detail"]["before"] is None
    # The audit keeps the bundle by its subject, not the whole PEM.
    assert entry["detail"]["after"]["ca_bundle"] == ["CN=balctl test CA"]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            {"directory_url": "http://acme.example.net/dir"},
            "directory_url must start with https://",
        ),
        ({"directory_url": ""}, "directory_url is required"),
        ({"directory_url": "https:///dir"}, "names no host"),
        ({"directory_url": "https://acme.example.net:99999/dir"}, "is not a URL"),
        ({"directory_url": "https://acme.example.net:0/dir"}, "is not a URL"),
        ({"directory_url": "https://acme.exa mple.net/dir"}, "is not a URL"),
        ({"directory_url": "https://user:pw@acme.example.net/dir"}, "user name or password"),
        ({"email": "not-an-address"}, "email: 'not-an-address' is not an email address"),
        ({"email": ""}, "email is required"),
        ({"ca_bundle": "hello"}, "ca_bundle is not a PEM certificate bundle"),
        (
            {"ca_bundle": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
            "ca_bundle has a certificate that cannot be read",
        ),
        (
            {
                "ca_bundle": TEST_CA_PEM
                + "-----BEGIN PRIVATE KEY-----\nAA\n-----END PRIVATE KEY-----"
            },
            "ca_bundle holds a private key",
        ),
        ({"check_servers": ["192.0.2.1:0"]}, "check_servers entry is not host or host:port"),
        ({"check_servers": ["bad host!"]}, "is not an address or host name"),
        ({"check_servers": [f"192.0.2.{i}" for i in range(9)]}, "at most 8 servers"),
    ],
)
def test_bad_settings_are_refused_naming_the_problem(app_env, change, says):
    answer = app_env.client.put("/api/settings/acme", json={**GOOD, **change})
    assert answer.status_code == 422, answer.text
    assert says in answer.json()["detail"]
    assert app_env.client.get("/api/settings/acme").json()["configured"] is False


def test_a_nul_in_a_setting_is_refused_as_the_body_is_read(app_env):
    answer = app_env.client.put(
        "/api/settings/acme", json={**GOOD, "directory_url": "https://acme.exa\x00mple.net/dir"}
    )
    assert answer.status_code == 400 and "NUL character" in answer.json()["detail"]
    assert app_env.client.get("/api/settings/acme").json()["configured"] is False


def test_unknown_fields_are_refused(app_env):
    answer = app_env.client.put("/api/settings/acme", json={**GOOD, "account_key": "x"})
    assert answer.status_code == 422 and "account_key" in answer.json()["detail"]


def test_only_an_admin_changes_the_settings_and_anyone_may_read_them(app_env):
    assert app_env.client.put("/api/settings/acme", json=GOOD).status_code == 200
    for role in ("viewer", "operator"):
        headers = app_env.as_role(role)
        refused = app_env.client.put(
            "/api/settings/acme", json={**GOOD, "email": "x@example.com"}, headers=headers
        )
        assert refused.status_code == 403, refused.text
        assert "needs admin" in refused.json()["detail"]
        read = app_env.client.get("/api/settings/acme", headers=headers)
        assert read.status_code == 200 and read.json()["email"] == "ops@example.com"


def test_the_account_key_is_encrypted_never_answered_and_dropped_with_a_new_directory(app_env):
    service = app_env.state.acme_settings
    app_env.client.put("/api/settings/acme", json=GOOD)
    account = service.account()  # made on first use, as an order would
    assert "PRIVATE KEY" in account.key_pem
    service.save_account_url(account, "https://acme.example.net/acct/1")
    assert service.account().key_pem == account.key_pem  # reused, not made again

    with app_env.state.db.session() as s:
        row = s.get(AppSetting, "acme")
        stored = json.dumps(row.value) + (row.secrets_encrypted or "")
    assert "PRIVATE KEY" not in stored and account.key_pem not in stored  # encrypted at rest

    # A new contact keeps the account; every answer leaves the key out.
    kept = app_env.client.put("/api/settings/acme", json={**GOOD, "email": "tls@example.com"})
    assert kept.json()["account_registered"] is True
    assert kept.json()["account_url"] == "https://acme.example.net/acct/1"
    for text in (kept.text, app_env.client.get("/api/settings/acme").text):
        assert "PRIVATE" not in text and "key_pem" not in text

    # Another CA does not know this account: it is dropped, and the audit says so.
    moved = app_env.client.put(
        "/api/settings/acme",
        json={**GOOD, "directory_url": "https://acme-staging.example.net/directory"},
    )
    assert moved.status_code == 200
    assert moved.json()["account_registered"] is False and moved.json()["account_url"] is None
    with app_env.state.db.session() as s:
        assert s.get(AppSetting, "acme").secrets_encrypted is None
    last = _audit(app_env, "settings.acme.update")[-1]
    assert last["detail"]["account"].startswith("dropped")
    assert service.account().key_pem != account.key_pem  # the next order makes a new one

    audit_text = json.dumps([e["detail"] for e in _audit(app_env, "settings.acme.account_key")])
    audit_text += app_env.client.get("/api/audit").text
    assert "PRIVATE" not in audit_text and account.key_pem not in audit_text


def test_the_system_principal_may_configure_acme_directly(app_env):
    saved = app_env.state.acme_settings.set(SYSTEM, **GOOD)
    assert saved["configured"] is True


def test_an_account_key_sealed_with_a_lost_secret_key_is_replaced(app_env, tmp_path):
    app_env.client.put("/api/settings/acme", json=GOOD)
    old = app_env.state.acme_settings.account()
    other = AcmeSettingsService(app_env.state.db, SecretBox.from_key_or_file(None, tmp_path))
    new = other.account()
    assert new.key_pem != old.key_pem and new.url is None
