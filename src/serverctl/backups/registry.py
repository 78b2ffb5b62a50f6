"""Backup stores by kind. Built-ins are registered as entry points of the
`serverctl.backup_stores` group (see pyproject.toml), the same way as any third-party store; the
table below is the fallback for a source checkout that was never installed."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic import ValidationError as PydanticError

from serverctl.backups.base import BackupStore, StoreConfig
from serverctl.errors import ValidationError
from serverctl.plugins import PluginGroup

GROUP = "serverctl.backup_stores"
BUILTIN = {
    "local": "serverctl.backups.local:LocalStore",
    "s3": "serverctl.backups.s3:S3Store",
}
STORES: PluginGroup[BackupStore] = PluginGroup(GROUP, BUILTIN, BackupStore, "backup store")


def kinds() -> list[str]:
    return STORES.kinds()


def store_class(kind: str) -> type[BackupStore]:
    return STORES.load(kind)


def validated(
    cls: type[BackupStore], settings: dict[str, Any], secrets: dict[str, Any]
) -> StoreConfig:
    """Settings and secrets checked by the store's models: one ValidationError (422) naming
    every bad field of both, and never a value (secrets reach no message)."""
    problems: list[str] = []
    public = _check(cls.settings_model, settings, "settings", problems)
    hidden = _check(cls.secrets_model, secrets, "secrets", problems)
    if problems:
        raise ValidationError(f"{cls.title} store settings are not valid: {'; '.join(problems)}")
    return StoreConfig(settings=public, secrets={k: str(v) for k, v in hidden.items()})


def build(kind: str, settings: dict[str, Any], secrets: dict[str, Any]) -> BackupStore:
    cls = store_class(kind)
    return cls(validated(cls, settings, secrets))


def store_kinds() -> list[dict[str, Any]]:
    """What the settings form offers: each kind with its fields (secret ones apart)."""
    out = []
    for kind in kinds():
        try:
            cls = store_class(kind)
        except ValidationError:
            continue  # an uninstalled extra: not offered
        out.append(
            {
                "kind": kind,
                "title": cls.title,
                "direct": cls.direct,
                "settings": _fields(cls.settings_model),
                "secrets": _fields(cls.secrets_model),
            }
        )
    return out


def _check(
    model: type[BaseModel], values: dict[str, Any], what: str, problems: list[str]
) -> dict[str, Any]:
    if not isinstance(values, dict):
        problems.append(f"{what} must be a JSON object")
        return {}
    try:
        return model.model_validate(values).model_dump(mode="json")
    except PydanticError as exc:
        for error in exc.errors():
            where = ".".join([what, *(str(p) for p in error["loc"])])
            problems.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
        return {}


def _fields(model: type[BaseModel]) -> list[dict[str, Any]]:
    out = []
    for name, field in model.model_fields.items():
        required = field.is_required()
        default = None if required else field.get_default(call_default_factory=True)
        out.append(
            {
                "name": name,
                "required": required,
                "default": default,
                "description": field.description or "",
            }
        )
    return out
