"""The support bundle's redaction: known values in every form, secret-named keys, secret
shapes, pieces of secrets the agent cut, and the leak check that withholds a bundle."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
from cryptography.fernet import Fernet

from serverctl.crypto import SecretBox
from serverctl.domain import secrets, support_archive
from serverctl.domain.redaction import REDACTED, Redactor, denied_key

SMTP_PASSWORD = 'p"w/with spaces&quote'


def test_known_values_go_in_every_form_they_take() -> None:
    redactor = Redactor({SMTP_PASSWORD: "setting 'smtp'", "cf-token-123": "DNS provider 'cf'"})
    text = " | ".join(
        [SMTP_PASSWORD, json.dumps(SMTP_PASSWORD), quote(SMTP_PASSWORD, safe=""), "cf-token-123"]
    )
    cleaned = redactor.text(text)
    assert "with spaces" not in cleaned and "cf-token" not in cleaned
    assert "with%20spaces" not in cleaned
    assert redactor.count == 4


def test_values_too_short_to_be_secrets_are_not_searched_for() -> None:
    redactor = Redactor({"abc": "setting 'x'"})
    assert redactor.text("abc abc") == "abc abc" and redactor.known == {}


def test_secret_named_keys_lose_their_values_whatever_they_hold() -> None:
    redactor = Redactor({})
    data = {
        "api_token": "anything",
        "store": {"secret_access_key": "x", "bucket": "b", "secrets": ["api_token"]},
        "Authorization": {"scheme": "Bearer"},
        "password_set": True,
        "key": "snapshots/1.tar.gz",
        "idempotency_key": "cron:3:2030-01-01",
        "enqueued_by": "token:ci",
        "empty_token": None,
    }
    assert redactor.data(data) == {
        "api_token": REDACTED,
        "store": {"secret_access_key": REDACTED, "bucket": "b", "secrets": REDACTED},
        "Authorization": REDACTED,
        "password_set": REDACTED,
        "key": REDACTED,
        "idempotency_key": "cron:3:2030-01-01",
        "enqueued_by": "token:ci",
        "empty_token": None,
    }
    assert denied_key("tsig_secret") and denied_key("CSRF_TOKEN") and not denied_key("hostname")


@pytest.mark.parametrize(
    "secret",
    [
        secrets.new_enrolment_secret(),
        secrets.new_api_token(),
        SecretBox(Fernet.generate_key()).encrypt_json({"api_token": "x"}),
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlLXZhbHVl",
        "AKIAIOSFODNN7EXAMPLE",
    ],
)
def test_secret_shapes_go_whatever_their_value(secret: str) -> None:
    redactor = Redactor({})
    assert secret not in redactor.text(f"seen: {secret}.")
    assert redactor.count == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.def-123", "Authorization: [REDACTED]"),
        ("curl -H 'authorization: Basic dXNlcjpwYXNz'", "curl -H 'authorization: [REDACTED]'"),
        ("sent Bearer abcdef012345", "sent Bearer [REDACTED]"),
        ("password=hunter22&user=x", "password=[REDACTED]&user=x"),
        ('{"client_secret": "abc"}', '{"client_secret": "[REDACTED]"}'),
        ("secret: abc def", "secret: [REDACTED] def"),
        ("postgresql://serverctl:pw0rd@db/x", "postgresql://serverctl:[REDACTED]@db/x"),
        (
            "PUT https://cp.example/api/agents/backups/transfer/Zx_9-abc failed",
            "PUT https://cp.example/api/agents/backups/transfer/[REDACTED] failed",
        ),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY-----[REDACTED]-----END PRIVATE KEY-----",
        ),
    ],
)
def test_secret_context_is_recognised(text: str, expected: str) -> None:
    assert Redactor({}).text(text) == expected


def test_ordinary_text_is_left_alone() -> None:
    text = (
        "job 7 (haproxy.reload) by token:ci completed at 2030-01-01T00:00:00+00:00; "
        f"sha256 {'0a' * 32}; edge-1.example.com 203.0.113.7; key 'be_app' drained"
    )
    redactor = Redactor({})
    assert redactor.text(text) == text and redactor.count == 0


def test_the_piece_of_a_secret_left_beside_an_agents_marker_goes_too() -> None:
    redactor = Redactor({"s3/Bundle+Secret=Access-Key": "setting 'backup_store'"})
    assert (
        redactor.text("said s3/Bundle+Secret=[REDACTED] then") == "said [REDACTED][REDACTED] then"
    )
    assert redactor.text("[REDACTED]Key x") == "[REDACTED]Key x"  # 3 characters: too short
    assert redactor.text("[REDACTED]s-Key x") == "[REDACTED][REDACTED] x"


def test_a_bundle_with_a_known_secret_left_is_withheld_without_naming_it() -> None:
    redactor = Redactor({"cf-token-123": "DNS provider 'cf'"})
    files = {"ok.json": b"{}", "bad.txt": b"oops cf-token-123"}
    with pytest.raises(support_archive.RedactionFailed) as caught:
        support_archive.check_leaks(files, redactor)
    assert "bad.txt: DNS provider 'cf'" in caught.value.message
    assert "cf-token-123" not in caught.value.message
    assert caught.value.status_code == 500


def test_files_are_rendered_redacted_and_json_stays_valid() -> None:
    redactor = Redactor({"cf-token-123": "DNS provider 'cf'"})
    rendered = support_archive.render(
        {"at": datetime(2030, 1, 1, tzinfo=UTC), "note": 'said "cf-token-123"', "token": "x"},
        redactor,
    )
    assert json.loads(rendered) == {
        "at": "2030-01-01T00:00:00+00:00",
        "note": 'said "[REDACTED]"',
        "token": REDACTED,
    }
    assert support_archive.render("cf-token-123\n", redactor) == b"[REDACTED]\n"
