"""The backup store setting (Settings → Backups): which store, shown without its secrets, tested.

Kept in `app_settings` under the key "backup_store": `value` is {"kind", "settings"} and the
store's secrets are only in `secrets_encrypted` (serverctl.crypto). No row means the local store
in `<data_dir>/backups`. Secrets are never returned, audited or logged; answers list the names
of the secrets that are set instead.

Snapshots remember the store kind and location they went to, so `for_snapshot` can still read
one after the setting changed, when that place is still reachable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from serverctl.backups import registry
from serverctl.backups.base import BackupStore, StoreConfig
from serverctl.backups.local import LocalStore, resolve_directory
from serverctl.crypto import SecretBox, SecretBoxError
from serverctl.db.models import AppSetting
from serverctl.db.session import Database
from serverctl.db.types import utcnow
from serverctl.domain import audit
from serverctl.domain.principal import Principal
from serverctl.errors import StorageError, ValidationError

log = logging.getLogger(__name__)

KEY = "backup_store"
DEFAULT_KIND = "local"
WHERE = "Settings → Backups"


@dataclass(frozen=True)
class _Saved:
    kind: str
    settings: dict[str, Any]
    secrets_encrypted: str | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None
    secrets: dict[str, str] = field(default_factory=dict)


class BackupStores:
    def __init__(self, db: Database, box: SecretBox, data_dir: Path) -> None:
        self.db = db
        self.box = box
        self.data_dir = data_dir

    # -- operators --------------------------------------------------------------------------------

    def view(self, principal: Principal) -> dict[str, Any]:
        """The store as saved, for any viewer: the names of its secrets, never their values."""
        principal.require("viewer")
        saved = self._saved()
        problem = None
        secrets_set: list[str] = []
        try:
            secrets_set = sorted(self._decrypt(saved))
        except StorageError as exc:
            problem = exc.message
        title, direct, location = saved.kind, False, None
        try:
            cls = registry.store_class(saved.kind)
            title, direct = cls.title, cls.direct
            location = self.current().location()
        except (ValidationError, StorageError) as exc:
            problem = problem or exc.message
        return {
            "kind": saved.kind,
            "title": title,
            "direct": direct,
            "settings": saved.settings,
            "secrets_set": secrets_set,
            "location": location,
            "problem": problem,
            "kinds": registry.store_kinds(),
            "updated_at": saved.updated_at,
            "updated_by": saved.updated_by,
        }

    def put(
        self,
        principal: Principal,
        kind: str,
        settings: dict[str, Any] | None = None,
        secrets: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Save the store. Secrets left out (or empty) keep the saved ones when the kind stays
        the same; a new kind needs all of its own. Bad input changes nothing (422)."""
        principal.require("admin")
        cls = registry.store_class(kind)
        if secrets is not None and not isinstance(secrets, dict):
            raise ValidationError("secrets must be a JSON object of the store's secrets")
        given = {k: v for k, v in (secrets or {}).items() if v not in (None, "")}
        with self.db.session() as s:
            row = s.get(AppSetting, KEY)
            saved = self._saved_from(row)
            try:
                previous = self._decrypt(saved)
            except StorageError:
                previous = {}  # the secret key changed: the new secrets must come in full
            names = set(cls.secrets_model.model_fields)
            kept = {k: v for k, v in previous.items() if k in names} if saved.kind == kind else {}
            merged = kept | given
            config = registry.validated(cls, settings or {}, merged)
            public = self._placed(kind, config.settings)
            cls(StoreConfig(self._resolved(kind, public), config.secrets))  # builds, or 422
            value = {"kind": kind, "settings": public}
            before = dict(row.value) if row is not None else None
            if row is None:
                row = AppSetting(key=KEY, value={}, updated_by=principal.actor)
                s.add(row)
            row.value = value
            row.secrets_encrypted = (
                self.box.encrypt_json(config.secrets) if config.secrets else None
            )
            row.updated_at = utcnow()
            row.updated_by = principal.actor
            audit.record(
                s,
                principal,
                "settings.backup_store.update",
                "settings:backup_store",
                {"before": before, "after": value, "secrets": _changes(previous, config.secrets)},
            )
        log.info("backup store set to %s by %s", kind, principal.actor)
        return self.view(principal)

    def test(self, principal: Principal) -> dict[str, Any]:
        """Write, read back and delete a small object in the saved store. StorageError (502)
        with the store's own reason when that fails."""
        principal.require("admin")
        store = self.current()
        try:
            detail = store.check()
        except StorageError as exc:
            log.warning("backup store test by %s failed: %s", principal.actor, exc.message)
            raise
        return {"ok": True, "kind": store.kind, "detail": detail}

    # -- the rules --------------------------------------------------------------------------------

    def current(self) -> BackupStore:
        """The saved store, ready to use (secrets decrypted here). StorageError when it cannot
        be used as saved (secrets unreadable, a plugin no longer installed...)."""
        saved = self._saved()
        secrets = self._decrypt(saved)
        try:
            cls = registry.store_class(saved.kind)
            config = registry.validated(cls, saved.settings, secrets)
            return cls(StoreConfig(self._resolved(saved.kind, config.settings), config.secrets))
        except ValidationError as exc:
            raise StorageError(
                f"the saved backup store cannot be used: {exc.message}; save it again in {WHERE}"
            ) from None

    def for_snapshot(self, store_kind: str, location: dict[str, Any]) -> BackupStore:
        """The store a snapshot was saved to: the current one when it is the same place; a
        local store for any local directory (it needs no secrets)."""
        try:
            current: BackupStore | None = self.current()
        except StorageError as exc:
            current, why = None, exc.message
        else:
            why = ""
        if current is not None and current.kind == store_kind and current.same_place(location):
            return current
        directory = location.get("directory") if isinstance(location, dict) else None
        if store_kind == LocalStore.kind and isinstance(directory, str):
            return LocalStore(StoreConfig({"directory": directory}, {}))
        raise StorageError(
            f"the snapshot is in the {store_kind} store {_describe(location)}, which is no longer "
            f"the configured backup store; configure that store again in {WHERE} to read it"
            + (f" (the saved store cannot be used either: {why})" if why else "")
        )

    # -- storage ----------------------------------------------------------------------------------

    def _saved(self) -> _Saved:
        with self.db.session() as s:
            return self._saved_from(s.get(AppSetting, KEY))

    @staticmethod
    def _saved_from(row: AppSetting | None) -> _Saved:
        if row is None:
            return _Saved(DEFAULT_KIND, {"directory": None})
        value = row.value or {}
        return _Saved(
            kind=str(value.get("kind") or DEFAULT_KIND),
            settings=dict(value.get("settings") or {}),
            secrets_encrypted=row.secrets_encrypted,
            updated_at=row.updated_at,
            updated_by=row.updated_by,
        )

    def _decrypt(self, saved: _Saved) -> dict[str, str]:
        if not saved.secrets_encrypted:
            return {}
        try:
            values = self.box.decrypt_json(saved.secrets_encrypted)
        except SecretBoxError:
            raise StorageError(
                "the backup store's secrets cannot be decrypted with this secret key "
                f"(SERVERCTL_SECRET_KEY or secret.key changed); enter them again in {WHERE}"
            ) from None
        return {str(k): str(v) for k, v in values.items()}

    def _placed(self, kind: str, settings: dict[str, Any]) -> dict[str, Any]:
        """What is saved: a local directory given relative is saved absolute (the default stays
        unset, so it follows the data directory)."""
        if kind == LocalStore.kind and settings.get("directory"):
            directory = resolve_directory(settings["directory"], self.data_dir)
            return {**settings, "directory": str(directory)}
        return dict(settings)

    def _resolved(self, kind: str, settings: dict[str, Any]) -> dict[str, Any]:
        """What the store is built with: the local store's default directory filled in."""
        if kind == LocalStore.kind:
            directory = resolve_directory(settings.get("directory"), self.data_dir)
            return {**settings, "directory": str(directory)}
        return settings


def _changes(before: dict[str, str], after: dict[str, str]) -> dict[str, str]:
    """What happened to each secret, in words: the audit log never holds a value."""
    out = {}
    for name in sorted(set(before) | set(after)):
        if name not in after:
            out[name] = "removed"
        elif name not in before:
            out[name] = "set"
        else:
            out[name] = "unchanged" if before[name] == after[name] else "changed"
    return out


def _describe(location: dict[str, Any]) -> str:
    if not isinstance(location, dict) or not location:
        return "(no location saved)"
    if "bucket" in location:
        where = f"s3://{location['bucket']}"
        if location.get("prefix"):
            where += f"/{location['prefix']}"
        if location.get("endpoint_url"):
            where += f" at {location['endpoint_url']}"
        return where
    return ", ".join(f"{k}={v}" for k, v in sorted(location.items()) if v not in (None, ""))
