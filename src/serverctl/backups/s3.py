"""The S3 store: Amazon S3 or any S3-compatible service (MinIO, Ceph, Wasabi, R2...).

Agents transfer straight to the bucket through presigned URLs; the credentials stay on the
control plane. Every botocore error is translated here, where it enters, into a StorageError
carrying the service's own code and message (and what to do), never the secret key.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticError

from serverctl.backups.base import BackupStore, StoreConfig, StoredObject
from serverctl.backups.local import layout_key
from serverctl.errors import StorageError, ValidationError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
# Uploads from the control plane (manifests, the local-to-S3 path) stay in memory up to this,
# then spill to a temporary file: archives can reach MAX_ARCHIVE_BYTES.
SPOOL_BYTES = 8 * 1024 * 1024
# SigV4 presigned URLs live at most 7 days.
MAX_PRESIGN_S = 7 * 24 * 3600
ARCHIVE_TYPE = "application/gzip"

_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
_REGION = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TOKEN = re.compile(r"^\S{1,256}$")

# What an operator should do about an S3 error code, added after the service's own message.
_HINTS = {
    "InvalidAccessKeyId": "check the access key id",
    "SignatureDoesNotMatch": "check the secret access key",
    "AccessDenied": "give the key s3:ListBucket on the bucket and s3:PutObject, s3:GetObject "
    "and s3:DeleteObject under the prefix",
    "403": "check the access key id and secret, and that the key may list the bucket",
    "NoSuchBucket": "create the bucket or correct its name",
    "404": "create the bucket or correct its name",
    "InvalidBucketName": "correct the bucket name",
    "PermanentRedirect": "set the region to the bucket's region",
    "301": "set the region to the bucket's region",
    "AuthorizationHeaderMalformed": "set the region to the bucket's region",
    "IllegalLocationConstraintException": "set the region to the bucket's region",
    "RequestTimeTooSkewed": "the control plane's clock is wrong; synchronise it (NTP)",
}


class S3Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    bucket: str = Field(description="the bucket's name (it must exist)")
    prefix: str = Field(default="serverctl", description="folder for the archives in the bucket")
    region: str = Field(default="us-east-1", description="the bucket's region")
    endpoint_url: str | None = Field(
        default=None, description="S3-compatible services only, e.g. https://minio.example.net"
    )

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not _BUCKET.match(value):
            raise ValueError(
                "must be 3-63 letters, digits, '.', '-' or '_', starting and ending with a "
                "letter or digit (e.g. acme-haproxy-backups)"
            )
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        parts = value.split("/") if value else []
        if len(value) > 200 or any(
            not _SEGMENT.match(part) or part in (".", "..") for part in parts
        ):
            raise ValueError(
                "must be up to 200 characters of folders made of letters, digits, '.', '-' or "
                "'_', separated by '/' (e.g. serverctl or backups/haproxy)"
            )
        return value

    @field_validator("region", mode="before")
    @classmethod
    def _region(cls, value: object) -> object:
        if value is None or value == "":
            return "us-east-1"
        if not isinstance(value, str) or not _REGION.match(value.strip()):
            raise ValueError("must be a region name such as us-east-1 or eu-west-3")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.username is not None
            or parts.query
            or parts.fragment
            or parts.path not in ("", "/")
        ):
            raise ValueError(
                "must be an http(s) URL with a host and no path, e.g. https://minio.example.net:9000"
            )
        try:
            parts.port  # noqa: B018 (a bad port raises here)
        except ValueError:
            raise ValueError("has a port that is not a number in 1-65535") from None
        return f"{parts.scheme}://{parts.netloc}"


class S3Secrets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    access_key_id: str = Field(description="stored encrypted")
    secret_access_key: str = Field(description="stored encrypted, never shown again")

    # Messages never repeat the value: they reach operators and logs.
    @field_validator("access_key_id", "secret_access_key")
    @classmethod
    def _token(cls, value: str) -> str:
        if not _TOKEN.match(value):
            raise ValueError("must be 1-256 characters without spaces or line breaks")
        return value


class S3Store(BackupStore):
    kind: ClassVar[str] = "s3"
    title: ClassVar[str] = "Amazon S3 or S3-compatible"
    direct: ClassVar[bool] = True
    settings_model: ClassVar[type[BaseModel]] = S3Settings
    secrets_model: ClassVar[type[BaseModel]] = S3Secrets

    def __init__(self, config: StoreConfig, client: S3Client | None = None) -> None:
        """`client` is the test seam; by default a boto3 client made from the config."""
        super().__init__(config)
        try:
            self.settings = S3Settings.model_validate(config.settings)
            self._secrets = S3Secrets.model_validate(config.secrets)
        except PydanticError as exc:
            # Normally checked before (registry.validated); the fields only, never a value.
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
            raise ValidationError(f"the S3 store's configuration is not valid: {fields}") from None
        self.client = client or self._make_client()

    def _make_client(self) -> S3Client:
        config = Config(
            signature_version="s3v4",
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": 3, "mode": "standard"},
            # S3-compatible services want https://host/bucket/key, not bucket.host.
            s3={"addressing_style": "path" if self.settings.endpoint_url else "auto"},
            # Many S3-compatible services refuse the CRC checksums boto3 sends by default since
            # 1.36; archives carry their own SHA-256, checked on the way back (`digest`).
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # Only the endpoint saved in the settings: never AWS_ENDPOINT_URL from the
            # environment or ~/.aws/config. (A botocore option its stubs do not list yet.)
            ignore_configured_endpoint_urls=True,  # type: ignore[call-arg]
        )
        # Explicit credentials: boto3 looks none up (environment, files, instance metadata).
        return boto3.client(
            "s3",
            region_name=self.settings.region,
            endpoint_url=self.settings.endpoint_url,
            aws_access_key_id=self._secrets.access_key_id,
            aws_secret_access_key=self._secrets.secret_access_key,
            config=config,
        )

    def location(self) -> dict[str, Any]:
        return {
            "bucket": self.settings.bucket,
            "prefix": self.settings.prefix,
            "region": self.settings.region,
            "endpoint_url": self.settings.endpoint_url,
        }

    def same_place(self, location: dict[str, Any]) -> bool:
        # Snapshots keep their full keys, so a changed prefix (or a corrected region) still
        # reads them: the bucket and the service are what make the place.
        return (
            location.get("bucket") == self.settings.bucket
            and location.get("endpoint_url") == self.settings.endpoint_url
        )

    def key_for(self, pool: str, member: str, stamp: str, snapshot_id: int) -> str:
        key = layout_key(pool, member, stamp, snapshot_id)
        return f"{self.settings.prefix}/{key}" if self.settings.prefix else key

    def presign(self, key: str, method: Literal["PUT", "GET"], expires_s: int) -> dict[str, Any]:
        _check_key(key)
        if not 1 <= expires_s <= MAX_PRESIGN_S:
            raise ValidationError(f"a presigned URL lives 1-{MAX_PRESIGN_S} s, not {expires_s}")
        params: dict[str, Any] = {"Bucket": self.settings.bucket, "Key": key}
        headers: dict[str, str] = {}
        if method == "PUT":
            # Signed, so the agent must send exactly this Content-Type.
            params["ContentType"] = ARCHIVE_TYPE
            headers["Content-Type"] = ARCHIVE_TYPE
        operation = "put_object" if method == "PUT" else "get_object"
        try:
            url = self.client.generate_presigned_url(
                operation, Params=params, ExpiresIn=expires_s, HttpMethod=method
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, f"presign {method} {self._where(key)}") from None
        return {"method": method, "url": url, "headers": headers}

    # -- objects ----------------------------------------------------------------------------------

    def write(self, key: str, chunks: Iterable[bytes], max_bytes: int) -> StoredObject:
        _check_key(key)
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            digest, size = hashlib.sha256(), 0
            for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise StorageError(
                        f"{key} is larger than the {max_bytes} bytes allowed; nothing was stored"
                    )
                digest.update(chunk)
                spool.write(chunk)
            spool.seek(0)
            # One PUT: S3 makes the object visible whole or not at all.
            try:
                self.client.put_object(
                    Bucket=self.settings.bucket,
                    Key=key,
                    Body=spool,
                    ContentLength=size,
                    ContentType=_content_type(key),
                )
            except (BotoCoreError, ClientError) as exc:
                raise self._error(exc, f"write {self._where(key)}") from None
        return StoredObject(size, digest.hexdigest())

    def read(self, key: str) -> Iterator[bytes]:
        body = self._open(key)
        if body is None:
            raise StorageError(f"no object {self._where(key)}")
        return self._stream(body, key)

    def digest(self, key: str) -> StoredObject | None:
        body = self._open(key)
        if body is None:
            return None
        digest, size = hashlib.sha256(), 0
        for chunk in self._stream(body, key):
            digest.update(chunk)
            size += len(chunk)
        return StoredObject(size, digest.hexdigest())

    def delete(self, key: str) -> None:
        _check_key(key)
        try:
            self.client.delete_object(Bucket=self.settings.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, f"delete {self._where(key)}") from None

    def check(self) -> str:
        doing = f"reach bucket {self.settings.bucket!r}"
        try:
            self.client.head_bucket(Bucket=self.settings.bucket)
        except ClientError as exc:
            raise self._error(self._explained(exc), doing) from None
        except BotoCoreError as exc:
            raise self._error(exc, doing) from None
        name = f".serverctl-check-{secrets.token_hex(8)}"
        probe = f"{self.settings.prefix}/{name}" if self.settings.prefix else name
        data = secrets.token_bytes(64)
        self.put_bytes(probe, data)
        try:
            if self.get_bytes(probe, len(data)) != data:
                raise StorageError(
                    f"a test object written to {self._where(probe)} read back different"
                )
        finally:
            self.delete(probe)
        service = self.settings.endpoint_url or "AWS"
        return (
            f"bucket {self.settings.bucket} on {service} ({self.settings.region}): wrote, read "
            f"back and deleted {probe}"
        )

    # -- helpers ----------------------------------------------------------------------------------

    def _open(self, key: str) -> Any:
        """The object's streaming body, or None when there is no such object."""
        _check_key(key)
        try:
            answer = self.client.get_object(Bucket=self.settings.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                return None
            raise self._error(exc, f"read {self._where(key)}") from None
        except BotoCoreError as exc:
            raise self._error(exc, f"read {self._where(key)}") from None
        return answer["Body"]

    def _stream(self, body: Any, key: str) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(CHUNK)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, f"read {self._where(key)}") from None
        finally:
            body.close()

    def _explained(self, exc: ClientError) -> ClientError:
        """A HEAD answer has no body, so only a bare status ("403"); a one-key listing of the
        bucket gets the service's own code and message (InvalidAccessKeyId, NoSuchBucket...)."""
        if not _code(exc).isdigit():
            return exc
        try:
            self.client.list_objects_v2(
                Bucket=self.settings.bucket, Prefix=self.settings.prefix, MaxKeys=1
            )
        except ClientError as detailed:
            return detailed
        except BotoCoreError:
            pass
        return exc

    def _where(self, key: str) -> str:
        at = f" at {self.settings.endpoint_url}" if self.settings.endpoint_url else ""
        return f"s3://{self.settings.bucket}/{key}{at}"

    def _error(self, exc: Exception, doing: str) -> StorageError:
        """The service's own code and message, what to do, and never the secret."""
        if isinstance(exc, ClientError):
            code = _code(exc)
            error = exc.response.get("Error", {})
            message = str(error.get("Message") or "").strip().rstrip(".")
            said = f"{code}: {message}" if message and message != code else code
            text = f"S3 refused to {doing}: {said}"
            region = _bucket_region(exc)
            if region and region != self.settings.region:
                text += f" (the bucket is in {region}, the settings say {self.settings.region})"
            hint = _HINTS.get(code)
        elif isinstance(exc, BotoConnectionError | ReadTimeoutError):
            # Connection refused, DNS, TLS, proxy, timeouts: no answer from the service.
            service = self.settings.endpoint_url or "S3"
            text = f"cannot {doing}: no answer from {service} ({exc})"
            hint = "check the endpoint URL, the network and any proxy"
        else:
            text, hint = f"cannot {doing}: {exc}", None
        if hint:
            text += f"; {hint}"
        secret = self._secrets.secret_access_key
        return StorageError(text.replace(secret, "<secret>") if secret else text)


def _check_key(key: str) -> None:
    parts = key.split("/")
    if not key or key.startswith("/") or "\x00" in key or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"refused backup key {key!r}: not a plain relative key")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "unknown error")


def _bucket_region(exc: ClientError) -> str | None:
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    region = headers.get("x-amz-bucket-region")
    return str(region) if region else None


def _content_type(key: str) -> str:
    if key.endswith(".tar.gz"):
        return ARCHIVE_TYPE
    if key.endswith(".json"):
        return "application/json"
    return "application/octet-stream"
