"""Plugins by kind, from an entry-point group: DNS providers and backup stores are found the
same way. Built-ins are registered as entry points too (see pyproject.toml); each group's
built-in table is the fallback for a source checkout that was never installed."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar, cast

from serverctl.errors import ValidationError

T = TypeVar("T")


class PluginGroup(Generic[T]):
    # `base` is the plugins' abstract base class: typed loosely, as mypy takes only concrete
    # classes for type[T]; the group's T comes from the variable's annotation.
    def __init__(self, group: str, builtin: dict[str, str], base: type[Any], what: str) -> None:
        self.group = group
        self.builtin = builtin
        self.base = base
        # How messages name one plugin: "DNS provider", "backup store".
        self.what = what

    def targets(self) -> dict[str, str]:
        """kind -> "module:attribute", entry points over the built-in table."""
        targets = dict(self.builtin)
        for ep in entry_points(group=self.group):
            targets[ep.name] = ep.value
        return targets

    def kinds(self) -> list[str]:
        return sorted(self.targets())

    def load(self, kind: str) -> type[T]:
        """The plugin class of `kind`; ValidationError (422) saying why when there is none."""
        target = self.targets().get(kind)
        if target is None:
            raise ValidationError(
                f"unknown {self.what} kind {kind!r}; choose one of {self.kinds()}"
            )
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValidationError(
                f"the {kind} {self.what} cannot be loaded ({exc}); install its extra, "
                f"for example pip install 'serverctl[{kind}]'"
            ) from exc
        cls = getattr(module, attr, None)
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise ValidationError(f"{target} is not a {self.what} class")
        return cast("type[T]", cls)
