"""Recipes: named lists of jobs, with a completion state read from what the host reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from serverctl.errors import NotFound


@dataclass(frozen=True)
class Recipe:
    id: str
    title: str
    description: str
    state_label: str
    apply_steps: tuple[str, ...]
    disable_steps: tuple[str, ...]
    # From the member's last `haproxy` heartbeat block: True/False, or None when unknown.
    read_state: Callable[[dict[str, Any]], bool | None]
    operator_note: str = ""


def _admin_socket_state(block: dict[str, Any]) -> bool | None:
    value = block.get("admin_socket_configured")
    return value if isinstance(value, bool) else None


RECIPES: dict[str, Recipe] = {
    recipe.id: recipe
    for recipe in (
        Recipe(
            id="admin-socket",
            title="Enable HAProxy admin stats socket",
            description=(
                "Adds `stats socket /run/haproxy/admin.sock mode 600 level admin expose-fd "
                "listeners` and `stats timeout 2m` to the global section, validates and reloads; "
                "restores the old file if validation or the reload fails. Drain, ready and maint "
                "and the Status tab need it."
            ),
            state_label="admin stats socket enabled",
            apply_steps=("haproxy.validate", "haproxy.admin_socket.enable"),
            disable_steps=("haproxy.admin_socket.disable",),
            read_state=_admin_socket_state,
            operator_note="The socket is local to the host (mode 600): it is not a public page.",
        ),
    )
}


def recipe(recipe_id: str) -> Recipe:
    found = RECIPES.get(recipe_id)
    if found is None:
        raise NotFound(f"no recipe {recipe_id!r}; known: {', '.join(sorted(RECIPES))}")
    return found
