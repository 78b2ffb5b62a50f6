"""Who is acting: an operator (web session or API token) or the system itself, and their role."""

from __future__ import annotations

from dataclasses import dataclass

from serverctl.errors import PermissionDenied

_RANK = {"viewer": 0, "operator": 1, "admin": 2}


@dataclass(frozen=True)
class Principal:
    kind: str  # "user", "token" or "system"
    name: str
    role: str
    source_ip: str | None = None
    user_id: int | None = None

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.name}"

    def can(self, role: str) -> bool:
        return _RANK[self.role] >= _RANK[role]

    def require(self, role: str) -> None:
        if not self.can(role):
            raise PermissionDenied(
                f"{self.actor} has the {self.role} role; this needs {role} or above"
            )


SYSTEM = Principal(kind="system", name="serverctl", role="admin")
