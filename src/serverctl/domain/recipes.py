"""Recipes: named lists of jobs, with a completion state read from what the host reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from serverctl.db.models import Pool
from serverctl.domain import tls_recipe
from serverctl.errors import NotFound, ValidationError

Steps = list[tuple[str, dict[str, Any]]]


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
    # A recipe that depends on the pool: its apply steps with their params, built from the pool
    # and the apply request's options (raising Conflict with what to do first)...
    plan: Callable[[Session, Pool, dict[str, Any]], Steps] | None = None
    # ...and its state_label / completed / note / unavailable (why it cannot be applied yet).
    describe_for: Callable[[Session, Pool, dict[str, Any]], dict[str, Any]] | None = None
    # The apply request's options the recipe takes (the web form offers a field for each).
    options: tuple[str, ...] = ()

    def steps(self, s: Session, pool: Pool, action: str, options: dict[str, Any]) -> Steps:
        """The jobs to queue for `action`, with their params."""
        if action == "apply" and self.plan is not None:
            return self.plan(s, pool, options)
        if options:
            raise ValidationError(f"recipe {self.id!r} takes no options for {action}")
        return [
            (step, {}) for step in (self.apply_steps if action == "apply" else self.disable_steps)
        ]

    def describe(self, s: Session, pool: Pool, block: dict[str, Any]) -> dict[str, Any]:
        if self.describe_for is not None:
            return self.describe_for(s, pool, block)
        return {
            "state_label": self.state_label,
            "completed": self.read_state(block),
            "note": self.operator_note,
            "unavailable": None,
        }


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
        Recipe(
            id="letsencrypt",
            title="Let's Encrypt (failover / HAProxy)",
            description=(
                "Makes a key and a certificate request on the host for the pool's failover name "
                "(plus optional extra names in the same zone); the control plane orders the "
                "certificate from the ACME CA in Settings → TLS and answers its DNS-01 challenge "
                "through the pool's DNS provider. The agent installs "
                "the combined PEM at /etc/haproxy/certs/<fqdn>.pem (0600), validates, and "
                "reloads when the configuration references it. A valid certificate for the same "
                "names with more than 30 days left is kept, not ordered again."
            ),
            state_label="the configuration references /etc/haproxy/certs/<fqdn>.pem",
            apply_steps=("tls.acme_issue",),
            # Nothing to undo automatically: removing the `ssl crt` line is the operator's edit.
            disable_steps=(),
            read_state=lambda block: None,
            plan=tls_recipe.plan,
            describe_for=tls_recipe.describe,
            options=tls_recipe.OPTIONS,
        ),
    )
}


def recipe(recipe_id: str) -> Recipe:
    found = RECIPES.get(recipe_id)
    if found is None:
        raise NotFound(f"no recipe {recipe_id!r}; known: {', '.join(sorted(RECIPES))}")
    return found
