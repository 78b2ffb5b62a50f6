"""Params that follow the pool rather than the operator's typing.

`tls.acme_renew_force` orders the certificate of the pool's failover name: its params (the FQDN,
the names, force) come from the pool's DNS link whenever the job is queued (Control panel, REST,
a Cron & Jobs schedule when it is made and again each time it runs), so a renamed failover label
is followed instead of renewing a stale name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from serverctl.db.models import PoolDns
from serverctl.dns import names
from serverctl.errors import Conflict, ValidationError

TLS_RENEW = "tls.acme_renew_force"
NO_FAILOVER_NAME = (
    "{job} orders the certificate of the pool's failover name, and this pool has none: link "
    "a DNS provider and set the failover label on the pool's Managed DNS tab first"
)


def tls_renew_params(link: PoolDns | None, given: dict[str, Any]) -> dict[str, Any]:
    """tls.acme_renew_force's params for a pool: its failover FQDN (the certificate's name and
    file, /etc/haproxy/certs/<fqdn>.pem), the names (the FQDN first, then any extra names the
    operator gave), and force. Conflict (409) when the pool has no failover name."""
    try:
        fqdn = names.fqdn(link.label, link.zone) if link is not None and link.zone else None
    except ValidationError:
        fqdn = None
    if fqdn is None:
        raise Conflict(NO_FAILOVER_NAME.format(job=TLS_RENEW))
    given_names = given.get("names", [])
    if not isinstance(given_names, list) or not all(isinstance(n, str) for n in given_names):
        # Not ours to repair: left as given, the catalogue's check names what is wrong.
        return {**given, "fqdn": fqdn, "force": True}
    # The old FQDN goes with the old failover name; other extra names stay.
    extra = [n for n in given_names if n not in (fqdn, given.get("fqdn"))]
    return {**given, "fqdn": fqdn, "names": [fqdn, *extra], "force": True}


# Job types whose params the pool gives (see the module docstring).
POOL_PARAMS: dict[str, Callable[[PoolDns | None, dict[str, Any]], dict[str, Any]]] = {
    TLS_RENEW: tls_renew_params,
}
