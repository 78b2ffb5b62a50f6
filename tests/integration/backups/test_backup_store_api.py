"""The backup store setting over REST (GET/PUT /api/settings/backup-store, POST .../test) on the
real app, with moto's S3 server (support.s3) as the S3 store."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from support import s3 as s3_support
from support.s3 import MotoS3

# A fresh moto S3 server per test (support.s3).
moto_s3 = s3_support.moto_s3

URL = "/api/settings/backup-store"
BUCKET = "haproxy-backups"


def _s3_body(server: MotoS3, bucket: str = BUCKET, **settings: object) -> dict[str, object]:
    return {
        "kind": "s3",
        "settings": {**server.settings(bucket), **settings},
        "secrets": server.secrets(),
    }


def test_viewers_see_the_default_local_store_and_the_kinds_offered(app_env):
    answer = app_env.client.get(URL, headers=app_env.as_role("viewer"))
    assert answer.status_code == 200, answer.text
    store = answer.json()
    assert (store["kind"], store["direct"], store["secrets_set"]) == ("local", False, [])
    backups = (app_env.state.settings.data_dir / "backups").absolute()
    assert store["location"] == {"directory": str(backups)}
    kinds = {k["kind"]: k for k in store["kinds"]}
    assert {f["name"] for f in kinds["s3"]["secrets"]} == {"access_key_id", "secret_access_key"}
    assert app_env.client.post(f"{URL}/test").json()["ok"] is True


def test_an_s3_store_is_saved_and_tested_and_its_secrets_never_answered(app_env, moto_s3):
    moto_s3.create_bucket(BUCKET)
    secret = moto_s3.secret_access_key
    saved = app_env.client.put(URL, json=_s3_body(moto_s3))
    assert saved.status_code == 200, saved.text
    assert saved.json()["secrets_set"] == ["access_key_id", "secret_access_key"]
    assert saved.json()["location"]["endpoint_url"] == moto_s3.endpoint_url
    shown = app_env.client.get(URL, headers=app_env.as_role("viewer"))
    for answer in (saved, shown):
        assert secret not in answer.text and "secrets" not in answer.json()
    with app_env.state.db.engine.connect() as conn:
        row = conn.execute(
            text("SELECT value, secrets_encrypted FROM app_settings WHERE key = 'backup_store'")
        ).one()
    assert secret not in row.value and secret not in row.secrets_encrypted
    assert json.loads(row.value)["kind"] == "s3"
    tested = app_env.client.post(f"{URL}/test")
    assert tested.status_code == 200, tested.text
    assert tested.json()["ok"] is True and BUCKET in tested.json()["detail"]


def test_secrets_left_out_keep_the_stored_ones(app_env, moto_s3):
    moto_s3.create_bucket(BUCKET)
    app_env.client.put(URL, json=_s3_body(moto_s3))
    body = {"kind": "s3", "settings": moto_s3.settings(BUCKET, prefix="edge-backups")}
    kept = app_env.client.put(URL, json=body)
    assert kept.status_code == 200, kept.text
    assert kept.json()["settings"]["prefix"] == "edge-backups"
    assert kept.json()["secrets_set"] == ["access_key_id", "secret_access_key"]
    assert app_env.client.post(f"{URL}/test").json()["ok"] is True


def test_only_admins_change_or_test_the_store(app_env):
    for role in ("viewer", "operator"):
        headers = app_env.as_role(role)
        answer = app_env.client.put(URL, json={"kind": "local"}, headers=headers)
        assert answer.status_code == 403, answer.text
        assert app_env.client.post(f"{URL}/test", headers=headers).status_code == 403
    assert app_env.client.put(URL, json={"kind": "local"}).status_code == 200


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"kind": "tape"}, ["unknown backup store kind 'tape'"]),
        (
            {"kind": "s3", "settings": {"bucket": "x"}},
            ["settings.bucket", "secrets.access_key_id", "secrets.secret_access_key"],
        ),
        ({"kind": "local", "colour": "red"}, ["colour: Extra inputs are not permitted"]),
        ({"kind": "local", "settings": {"directory": 5}}, ["settings.directory"]),
        (
            {"kind": "s3", "settings": {"bucket": "okay-bucket", "endpoint_url": "ftp://x"}},
            ["settings.endpoint_url"],
        ),
    ],
)
def test_bad_store_settings_are_refused_naming_the_fields_and_change_nothing(app_env, body, words):
    answer = app_env.client.put(URL, json=body)
    assert answer.status_code == 422, answer.text
    for word in words:
        assert word in answer.json()["detail"]
    assert app_env.client.get(URL).json()["kind"] == "local"


def test_a_failing_store_test_answers_502_with_the_reason(app_env, moto_s3):
    saved = app_env.client.put(URL, json=_s3_body(moto_s3, bucket="never-created"))
    assert saved.status_code == 200, saved.text
    answer = app_env.client.post(f"{URL}/test")
    assert answer.status_code == 502
    assert "NoSuchBucket" in answer.json()["detail"]
    assert "never-created" in answer.json()["detail"]
    assert moto_s3.secret_access_key not in answer.text
