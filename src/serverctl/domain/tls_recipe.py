"""The `letsencrypt` recipe's pool-dependent parts: its job's params (the pool's failover FQDN
and the operator's extra names), why it cannot run yet, and its completion state (does the
member's HAProxy configuration load /etc/haproxy/certs/<fqdn>.pem?)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from serverctl.db.models import Pool, PoolDns
from serverctl.dns import names as dns_names
from serverctl.domain.catalogue import MAX_CERT_NAMES
from serverctl.domain.tls_orders import failover_fqdn
from serverctl.errors import Conflict, ValidationError

CERTS_DIR = "/etc/haproxy/certs"
OPTIONS = ("extra_names",)


def pem_path(fqdn: str) -> str:
    return f"{CERTS_DIR}/{fqdn}.pem"


def plan(s: Session, pool: Pool, options: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The one step: tls.acme_issue for the failover FQDN plus `extra_names` (same zone)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValidationError(f"the letsencrypt recipe takes only extra_names, not {unknown}")
    fqdn = failover_fqdn(s, pool)
    link = s.get(PoolDns, pool.id)
    assert link is not None
    extra = _extra_names(options.get("extra_names") or [], fqdn, link.zone)
    return [("tls.acme_issue", {"fqdn": fqdn, "names": [fqdn, *extra], "force": False})]


def _extra_names(raw: Any, fqdn: str, zone: str) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        raise ValidationError("extra_names must be a list of DNS names")
    if len(raw) > MAX_CERT_NAMES - 1:
        raise ValidationError(f"at most {MAX_CERT_NAMES - 1} extra_names (one certificate)")
    names: list[str] = []
    for value in raw:
        name = value.strip().rstrip(".").lower()
        if not dns_names.in_zone(name, zone):
            raise ValidationError(
                f"extra name {value[:80]!r} is not in the pool's zone {zone}: the pool's DNS "
                "provider can answer the challenge only for names in its zone"
            )
        if name == fqdn or name in names:
            raise ValidationError(f"extra name {name!r} is given twice (or is the failover name)")
        names.append(name)
    return names  # each name's form is checked with the job's params (catalogue)


def describe(s: Session, pool: Pool, block: dict[str, Any]) -> dict[str, Any]:
    """The recipe's state on this member: its label and completion for the pool's FQDN, or why
    it cannot be applied yet."""
    try:
        fqdn = failover_fqdn(s, pool)
    except Conflict as exc:
        return {
            "state_label": f"the configuration references {pem_path('<fqdn>')}",
            "completed": None,
            "unavailable": exc.message,
            "note": "",
        }
    path = pem_path(fqdn)
    return {
        "state_label": f"the configuration references {path}",
        "completed": _referenced(block, path),
        "unavailable": None,
        "note": (
            f"One-time step on each member: add `ssl crt {path}` to the bind line (for example "
            f"`bind :443 ssl crt {path}`), validate, reload. Until then the certificate is "
            "installed but not served."
        ),
    }


def _referenced(block: dict[str, Any], path: str) -> bool | None:
    certificates = block.get("certificates")
    if not isinstance(certificates, list):
        # An agent reports certificates once it has some; a member not reporting at all: unknown.
        return False if block.get("monitored") else None
    return any(
        isinstance(c, dict) and c.get("path") == path and c.get("referenced") is True
        for c in certificates
    )
