"""Backup stores against real storage: the local store on real files, the S3 store against moto's
S3 server (in server mode, behind support.s3's Signature V4 checks); and the store setting
service (BackupStores) on a real SQLite database."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from serverctl.backups import registry
from serverctl.backups.base import BackupStore, StoreConfig
from serverctl.backups.local import LocalStore
from serverctl.backups.s3 import S3Store
from serverctl.backups.settings import BackupStores
from serverctl.config import Settings
from serverctl.crypto import SecretBox
from serverctl.db.migrate import upgrade
from serverctl.db.session import Database
from serverctl.domain.principal import SYSTEM, Principal
from serverctl.errors import PermissionDenied, StorageError, ValidationError
from support import s3 as s3_support
from support.s3 import MotoS3
from support.util import free_port, wait_until

# A fresh moto S3 server per test (support.s3).
moto_s3 = s3_support.moto_s3

BUCKET = "haproxy-backups"
KEY = "edge/lb1.example.net/20261124T030000Z-17.tar.gz"
VIEWER = Principal(kind="user", name="vera", role="viewer")
OPERATOR = Principal(kind="user", name="otto", role="operator")


def _s3(server: MotoS3, **changes: object) -> S3Store:
    settings = {**server.settings(BUCKET), **changes}
    store = registry.build("s3", settings, server.secrets())
    assert isinstance(store, S3Store)
    return store


def _chunks(data: bytes, size: int = 70_000) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    return LocalStore(StoreConfig({"directory": str(tmp_path / "store")}, {}))


@pytest.fixture
def s3_store(moto_s3: MotoS3) -> S3Store:
    moto_s3.create_bucket(BUCKET)
    return _s3(moto_s3)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> BackupStore:
    """Every store keeps the same contract."""
    found = request.getfixturevalue(f"{request.param}_store")
    assert isinstance(found, BackupStore)
    return found


# -- the contract every store keeps ---------------------------------------------------------------


def test_written_bytes_read_back_with_their_size_and_sha256(store: BackupStore):
    data = os.urandom(300_000)
    stored = store.write(KEY, _chunks(data), max_bytes=len(data))
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert b"".join(store.read(KEY)) == data
    assert store.digest(KEY) == stored
    assert store.get_bytes(KEY, len(data)) == data


def test_a_write_past_max_bytes_stores_nothing_and_keeps_the_previous_object(store: BackupStore):
    store.put_bytes(KEY, b"the good archive")
    with pytest.raises(StorageError, match="larger than the 100 bytes allowed"):
        store.write(KEY, _chunks(b"x" * 150, 40), max_bytes=100)
    assert store.get_bytes(KEY, 100) == b"the good archive"
    with pytest.raises(StorageError, match="larger than"):
        store.write("edge/lb2/new-18.tar.gz", [b"x" * 101], max_bytes=100)
    assert store.digest("edge/lb2/new-18.tar.gz") is None


def test_a_missing_object_has_no_digest_cannot_be_read_and_deletes_quietly(store: BackupStore):
    assert store.digest(KEY) is None
    with pytest.raises(StorageError, match="no object"):
        store.read(KEY)
    store.delete(KEY)
    store.put_bytes(KEY, b"data")
    store.delete(KEY)
    assert store.digest(KEY) is None


def test_check_writes_reads_back_and_deletes_a_probe(store: BackupStore):
    detail = store.check()
    assert "wrote, read back and deleted" in detail
    store.put_bytes(KEY, b"x")
    store.delete(KEY)
    # Nothing of the probe is left behind.
    if isinstance(store, LocalStore):
        assert list(store.directory.rglob("*")) == []
    else:
        assert isinstance(store, S3Store)
        assert store.client.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


@pytest.mark.parametrize(
    "key", ["../outside.tar.gz", "/etc/passwd", "edge/../../x", "edge//x", "", "edge/./x", "a\x00b"]
)
def test_keys_that_would_escape_are_refused(store: BackupStore, key: str):
    with pytest.raises(StorageError, match="refused backup key"):
        store.put_bytes(key, b"x")
    with pytest.raises(StorageError, match="refused backup key"):
        store.read(key)


def test_keys_follow_the_per_member_layout_with_safe_names(store: BackupStore):
    key = store.key_for("edge", "lb1.example.net", "20261124T030000Z", 17)
    layout = "edge/lb1.example.net/20261124T030000Z-17.tar.gz"
    assert key == (layout if isinstance(store, LocalStore) else f"serverctl/{layout}")
    odd = store.key_for("..", "../etc passwd", ".", 3).split("/")
    assert odd[-3:] == ["__", ".._etc_passwd", "_-3.tar.gz"]
    store.put_bytes("/".join(odd), b"safe")  # a key it made is one it accepts


# -- the local store ------------------------------------------------------------------------------


def test_local_files_are_0600_and_folders_0700(local_store: LocalStore):
    local_store.put_bytes(KEY, b"secret keys inside")
    path = local_store.directory / KEY
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for folder in (local_store.directory, path.parent, path.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_a_failed_local_write_leaves_no_temporary_file(local_store: LocalStore):
    def broken_upload() -> Iterator[bytes]:
        yield b"first part"
        raise ConnectionResetError("the agent went away")

    with pytest.raises(ConnectionResetError):
        local_store.write(KEY, broken_upload(), max_bytes=1000)
    with pytest.raises(StorageError):
        local_store.write(KEY, [b"x" * 20], max_bytes=10)
    assert [p for p in local_store.directory.rglob("*") if p.is_file()] == []


def test_a_symlink_out_of_the_local_directory_is_refused(local_store: LocalStore, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    local_store.directory.mkdir(parents=True)
    (local_store.directory / "edge").symlink_to(outside)
    with pytest.raises(StorageError, match="resolves outside"):
        local_store.put_bytes(KEY, b"x")
    assert list(outside.iterdir()) == []


def test_deleting_the_last_snapshot_removes_its_empty_folders(local_store: LocalStore):
    local_store.put_bytes(KEY, b"x")
    local_store.delete(KEY)
    assert local_store.directory.is_dir() and list(local_store.directory.iterdir()) == []


def test_local_check_reports_free_space_and_an_unusable_directory(tmp_path: Path):
    store = LocalStore(StoreConfig({"directory": str(tmp_path / "store")}, {}))
    assert "free" in store.check()
    (tmp_path / "a-file").write_text("not a folder")
    broken = LocalStore(StoreConfig({"directory": str(tmp_path / "a-file" / "store")}, {}))
    with pytest.raises(StorageError, match="cannot create the backup folder .*Not a directory"):
        broken.check()


def test_the_local_store_needs_an_absolute_directory():
    with pytest.raises(ValidationError, match="absolute directory"):
        LocalStore(StoreConfig({"directory": "relative/backups"}, {}))


# -- the S3 store ---------------------------------------------------------------------------------


def _request(url: str, method: str, headers: dict[str, str], body: bytes | None = None):
    """A plain http.client request, as the agent makes it."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request(method, f"{parts.path}?{parts.query}", body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def test_an_agent_puts_and_gets_an_archive_through_presigned_urls(s3_store: S3Store):
    archive = os.urandom(200_000)
    put = s3_store.presign(KEY, "PUT", 300)
    assert put["method"] == "PUT" and put["headers"] == {"Content-Type": "application/gzip"}
    assert "content-type" in put["url"].split("X-Amz-SignedHeaders=")[1].split("&")[0]
    status, _ = _request(put["url"], "PUT", put["headers"], archive)
    assert status == 200
    assert s3_store.digest(KEY).sha256 == hashlib.sha256(archive).hexdigest()

    get = s3_store.presign(KEY, "GET", 300)
    assert (get["method"], get["headers"]) == ("GET", {})
    status, body = _request(get["url"], "GET", get["headers"])
    assert status == 200 and body == archive
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(archive).hexdigest()


def test_a_tampered_presigned_url_or_header_is_refused(s3_store: S3Store):
    put = s3_store.presign(KEY, "PUT", 300)
    other_key = put["url"].replace("20261124T030000Z-17", "20261124T030000Z-18")
    longer = put["url"].replace("X-Amz-Expires=300", "X-Amz-Expires=99999")
    for url, headers in [
        (other_key, put["headers"]),
        (longer, put["headers"]),
        (put["url"], {"Content-Type": "text/plain"}),
        (put["url"].split("&X-Amz-Signature=")[0], put["headers"]),
    ]:
        status, body = _request(url, "PUT", headers, b"evil")
        assert status == 403, body
    assert s3_store.digest(KEY) is None


def test_an_expired_presigned_url_is_refused(s3_store: S3Store):
    s3_store.put_bytes(KEY, b"archive")
    get = s3_store.presign(KEY, "GET", 1)

    def refused() -> bool:
        status, body = _request(get["url"], "GET", get["headers"])
        return status == 403 and b"Request has expired" in body

    wait_until(refused, 15, interval=0.5, what="the presigned URL to expire")


def test_wrong_credentials_are_named_without_the_secret(moto_s3: MotoS3):
    moto_s3.create_bucket(BUCKET)
    secret = "wrong-secret-0123456789abcdefghijklmn"
    settings = moto_s3.settings(BUCKET)
    wrong_secret = registry.build(
        "s3", settings, {"access_key_id": moto_s3.access_key_id, "secret_access_key": secret}
    )
    with pytest.raises(StorageError) as refused:
        wrong_secret.check()
    assert "SignatureDoesNotMatch" in refused.value.message
    assert "check the secret access key" in refused.value.message
    with pytest.raises(StorageError) as refused_write:
        wrong_secret.put_bytes(KEY, b"x")
    unknown_key = registry.build(
        "s3", settings, {"access_key_id": "AKIAUNKNOWN", "secret_access_key": secret}
    )
    with pytest.raises(StorageError) as refused_key:
        unknown_key.check()
    assert "InvalidAccessKeyId" in refused_key.value.message
    for error in (refused, refused_write, refused_key):
        assert secret not in error.value.message and BUCKET in error.value.message


def test_a_missing_bucket_is_named(moto_s3: MotoS3):
    store = _s3(moto_s3, bucket="no-such-bucket")
    with pytest.raises(StorageError) as refused:
        store.check()
    assert "NoSuchBucket" in refused.value.message and "no-such-bucket" in refused.value.message
    assert "create the bucket" in refused.value.message
    with pytest.raises(StorageError, match="NoSuchBucket"):
        store.put_bytes(KEY, b"x")


def test_an_unreachable_endpoint_is_named():
    settings = {"bucket": BUCKET, "endpoint_url": f"http://127.0.0.1:{free_port()}"}
    store = registry.build("s3", settings, {"access_key_id": "a", "secret_access_key": "b"})
    with pytest.raises(StorageError, match="no answer from http://127.0.0.1"):
        store.check()


def test_s3_keys_use_the_prefix_and_an_empty_prefix_is_allowed(moto_s3: MotoS3):
    assert _s3(moto_s3, prefix="/backups/haproxy/").key_for("edge", "lb1", "T", 1) == (
        "backups/haproxy/edge/lb1/T-1.tar.gz"
    )
    assert _s3(moto_s3, prefix="").key_for("edge", "lb1", "T", 1) == "edge/lb1/T-1.tar.gz"


def test_an_s3_store_is_the_same_place_whatever_its_prefix_or_region(moto_s3: MotoS3):
    store = _s3(moto_s3)
    moved = {**store.location(), "prefix": "old", "region": "eu-west-3"}
    assert store.same_place(moved)
    assert not store.same_place({**store.location(), "bucket": "other-bucket"})
    assert not store.same_place({**store.location(), "endpoint_url": None})


@pytest.mark.parametrize(
    ("settings", "secrets", "names"),
    [
        ({}, {"access_key_id": "a", "secret_access_key": "b"}, ["settings.bucket"]),
        ({"bucket": "A b"}, {"access_key_id": "a", "secret_access_key": "b"}, ["settings.bucket"]),
        (
            {"bucket": "okay-bucket", "endpoint_url": "ftp://x", "prefix": "../up"},
            {"access_key_id": "a", "secret_access_key": "b"},
            ["settings.endpoint_url", "settings.prefix"],
        ),
        ({"bucket": "okay-bucket", "colour": "red"}, {}, ["settings.colour"]),
        (
            {"bucket": "okay-bucket"},
            {"access_key_id": "a"},
            ["secrets.secret_access_key: Field required"],
        ),
        (
            {"bucket": "okay-bucket"},
            {"access_key_id": "a", "secret_access_key": "two words-TOPSECRET"},
            ["secrets.secret_access_key"],
        ),
    ],
)
def test_bad_s3_settings_are_refused_naming_the_fields(settings, secrets, names):
    with pytest.raises(ValidationError) as refused:
        registry.build("s3", settings, secrets)
    for name in names:
        assert name in refused.value.message
    assert "TOPSECRET" not in refused.value.message


def test_store_kinds_describe_the_forms():
    kinds = {k["kind"]: k for k in registry.store_kinds()}
    assert {"local", "s3"} <= set(kinds)
    assert kinds["s3"]["direct"] is True and kinds["local"]["direct"] is False
    assert [f["name"] for f in kinds["s3"]["secrets"]] == ["access_key_id", "secret_access_key"]
    prefix = next(f for f in kinds["s3"]["settings"] if f["name"] == "prefix")
    assert (prefix["required"], prefix["default"]) == (False, "serverctl")
    assert kinds["local"]["secrets"] == []
    with pytest.raises(ValidationError, match="unknown backup store kind 'ftp'"):
        registry.store_class("ftp")


# -- the store setting (BackupStores) -------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"


@pytest.fixture
def database(data_dir: Path) -> Iterator[Database]:
    db = Database(Settings(data_dir=data_dir))
    upgrade(db.engine)
    yield db
    db.dispose()


@pytest.fixture
def stores(database: Database, data_dir: Path) -> BackupStores:
    return BackupStores(database, SecretBox(Fernet.generate_key()), data_dir)


def _raw_row(database: Database):
    with database.engine.connect() as conn:
        row = conn.execute(
            text("SELECT value, secrets_encrypted FROM app_settings WHERE key = 'backup_store'")
        ).one()
        audit = conn.execute(
            text("SELECT detail FROM audit_log WHERE action = 'settings.backup_store.update'")
        ).all()
    return row, [a.detail for a in audit]


def test_without_a_setting_the_store_is_local_under_the_data_directory(stores, data_dir):
    view = stores.view(VIEWER)
    backups = str((data_dir / "backups").absolute())
    assert (view["kind"], view["settings"], view["secrets_set"]) == (
        "local",
        {"directory": None},
        [],
    )
    assert view["location"] == {"directory": backups} and view["problem"] is None
    assert {"local", "s3"} <= {k["kind"] for k in view["kinds"]}
    current = stores.current()
    assert isinstance(current, LocalStore) and str(current.directory) == backups
    assert stores.test(SYSTEM)["ok"] is True


def test_s3_secrets_are_encrypted_at_rest_and_never_shown(stores, database, moto_s3):
    moto_s3.create_bucket(BUCKET)
    secret = moto_s3.secret_access_key
    view = stores.put(SYSTEM, "s3", moto_s3.settings(BUCKET), moto_s3.secrets())
    assert view["kind"] == "s3" and view["secrets_set"] == ["access_key_id", "secret_access_key"]
    assert view["location"]["bucket"] == BUCKET
    assert secret not in json.dumps(stores.view(VIEWER), default=str)
    row, audit = _raw_row(database)
    assert secret not in row.value and moto_s3.access_key_id not in row.value
    assert secret not in row.secrets_encrypted
    assert stores.box.decrypt_json(row.secrets_encrypted) == moto_s3.secrets()
    assert json.loads(row.value) == {"kind": "s3", "settings": moto_s3.settings(BUCKET)}
    assert secret not in audit[-1] and '"secret_access_key":"set"' in audit[-1]
    assert "wrote, read back and deleted" in stores.test(SYSTEM)["detail"]


def test_secrets_left_out_are_kept_and_a_new_one_replaces_its_own(stores, database, moto_s3):
    moto_s3.create_bucket(BUCKET)
    moto_s3.create_bucket("other-bucket")
    stores.put(SYSTEM, "s3", moto_s3.settings(BUCKET), moto_s3.secrets())
    kept = stores.put(SYSTEM, "s3", moto_s3.settings("other-bucket"), {"access_key_id": ""})
    assert kept["secrets_set"] == ["access_key_id", "secret_access_key"]
    assert "other-bucket" in stores.test(SYSTEM)["detail"]
    stores.put(SYSTEM, "s3", moto_s3.settings(BUCKET), {"secret_access_key": "not-it"})
    with pytest.raises(StorageError) as refused:
        stores.test(SYSTEM)
    assert (
        "SignatureDoesNotMatch" in refused.value.message and "not-it" not in refused.value.message
    )
    _, audit = _raw_row(database)
    assert '"secret_access_key":"changed"' in audit[-1] and "not-it" not in audit[-1]


def test_a_new_kind_needs_its_own_secrets_and_bad_input_changes_nothing(stores, moto_s3):
    stores.put(SYSTEM, "s3", moto_s3.settings(BUCKET), moto_s3.secrets())
    stores.put(SYSTEM, "local", {}, None)
    with pytest.raises(ValidationError) as refused:
        stores.put(SYSTEM, "s3", moto_s3.settings(BUCKET), None)
    assert "secrets.access_key_id" in refused.value.message
    assert "secrets.secret_access_key" in refused.value.message
    with pytest.raises(ValidationError, match="settings.bucket"):
        stores.put(SYSTEM, "s3", {"bucket": "x"}, moto_s3.secrets())
    with pytest.raises(ValidationError, match="unknown backup store kind"):
        stores.put(SYSTEM, "tape", {}, {})
    view = stores.view(VIEWER)
    assert (view["kind"], view["secrets_set"]) == ("local", [])


def test_a_relative_local_directory_is_saved_under_the_data_directory(stores, data_dir):
    view = stores.put(SYSTEM, "local", {"directory": "archives"}, None)
    expected = str((data_dir / "archives").absolute())
    assert view["settings"] == {"directory": expected}
    assert view["location"] == {"directory": expected}


def test_only_admins_change_or_test_the_store_and_viewers_see_it(stores):
    assert stores.view(VIEWER)["kind"] == "local"
    for who in (VIEWER, OPERATOR):
        with pytest.raises(PermissionDenied):
            stores.put(who, "local", {}, None)
        with pytest.raises(PermissionDenied):
            stores.test(who)


def test_a_failed_store_test_says_why(stores, moto_s3):
    stores.put(SYSTEM, "s3", moto_s3.settings("never-created"), moto_s3.secrets())
    with pytest.raises(StorageError) as refused:
        stores.test(SYSTEM)
    assert refused.value.status_code == 502
    assert "never-created" in refused.value.message and "NoSuchBucket" in refused.value.message


def test_snapshots_are_read_from_the_store_they_went_to(stores, moto_s3, tmp_path):
    moto_s3.create_bucket(BUCKET)
    old_local = LocalStore(StoreConfig({"directory": str(tmp_path / "old")}, {}))
    old_local.put_bytes(KEY, b"from the old folder")
    stores.put(SYSTEM, "s3", moto_s3.settings(BUCKET), moto_s3.secrets())
    s3_location = stores.current().location()
    # The current store, even under another prefix, when it is the same bucket.
    same = stores.for_snapshot("s3", {**s3_location, "prefix": "before"})
    assert isinstance(same, S3Store) and same.location() == s3_location
    # Any local directory: it needs no secrets.
    local = stores.for_snapshot("local", old_local.location())
    assert local.get_bytes(KEY, 100) == b"from the old folder"
    with pytest.raises(StorageError) as elsewhere:
        stores.for_snapshot("s3", {**s3_location, "bucket": "gone-bucket"})
    assert "gone-bucket" in elsewhere.value.message and "no longer" in elsewhere.value.message
    stores.put(SYSTEM, "local", {}, None)
    with pytest.raises(StorageError, match=f"s3://{BUCKET}/serverctl at {moto_s3.endpoint_url}"):
        stores.for_snapshot("s3", s3_location)


def test_secrets_unreadable_after_a_key_change_are_reported_not_leaked(
    stores,
    database,
    data_dir,
    moto_s3,
    tmp_path,
):
    moto_s3.create_bucket(BUCKET)
    stores.put(SYSTEM, "s3", moto_s3.settings(BUCKET), moto_s3.secrets())
    rekeyed = BackupStores(database, SecretBox(Fernet.generate_key()), data_dir)
    with pytest.raises(StorageError, match="cannot be decrypted .* enter them again"):
        rekeyed.current()
    view = rekeyed.view(VIEWER)
    assert view["secrets_set"] == [] and "cannot be decrypted" in view["problem"]
    local = rekeyed.for_snapshot("local", {"directory": str(tmp_path / "old")})
    assert isinstance(local, LocalStore)
    # Entering the secrets again repairs it.
    rekeyed.put(SYSTEM, "s3", moto_s3.settings(BUCKET), moto_s3.secrets())
    assert rekeyed.test(SYSTEM)["ok"] is True
