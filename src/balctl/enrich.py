"""What the heartbeat's `haproxy` block carries beyond "is it running".

Every beat: `admin_socket_configured` (does haproxy.cfg's global section hold ServerCTL's admin
socket line; the file is re-read only when it changes). At most every BALCTL_STATS_INTERVAL_S
seconds (5 by default; beats in between omit these keys and the control plane keeps the last):
- `admin_socket`: true when a configured admin socket answers, false when none does (absent
  when the configuration names none);
- `info` and `stats`: summaries of `show info` and `show stat` (with admin states from
  `show servers state`), when the socket answers;
- `topology`: listeners and backends parsed from the configuration files, sent when it changed
  since it was last sent, or every TOPOLOGY_EVERY_S;
- `backup_files`: the files a haproxy backup would capture (backup_inventory.py), sent when they
  changed, or every RESEND_EVERY_S;
- `certificates`: the TLS certificates in /etc/haproxy/certs and those the configuration loads
  with `crt` (cert_inventory.py), sent when they changed, or every 5 minutes.
All socket I/O of one beat shares one deadline of SOCKET_BUDGET_S, so a hung HAProxy costs the
heartbeat at most that; any failure only drops the enrichment for that beat.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from balctl import runtime_api
from balctl.backup_inventory import Inventory
from balctl.cert_inventory import CertInventory
from balctl.errors import RuntimeApiError
from balctl.haproxy_cfg import Section, config_files, fingerprint, read_sections, topology
from balctl.haproxy_stats import (
    admin_states,
    info_summary,
    parse_info,
    parse_servers_state,
    parse_stat,
    stats_summary,
)
from balctl.jobs.admin_socket import is_enabled
from balctl.paths import HostPaths

logger = logging.getLogger(__name__)

STATS_INTERVAL_ENV = "BALCTL_STATS_INTERVAL_S"
DEFAULT_STATS_INTERVAL_S = 5.0
TOPOLOGY_EVERY_S = 60.0
SOCKET_BUDGET_S = 1.0


def stats_interval(environ: Optional[Mapping[str, str]] = None) -> float:
    env = os.environ if environ is None else environ
    raw = env.get(STATS_INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_STATS_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        logger.warning(
            "%s=%r is not a number of seconds (0-3600); using %g",
            STATS_INTERVAL_ENV,
            raw,
            DEFAULT_STATS_INTERVAL_S,
        )
        return DEFAULT_STATS_INTERVAL_S
    return value


class Enricher:
    def __init__(
        self,
        paths: HostPaths,
        interval: float = DEFAULT_STATS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.paths = paths
        self.interval = interval
        self._clock = clock
        self._wall = wall
        self._last_run: Optional[float] = None
        self._configured: Tuple[Any, bool] = (None, False)
        self._sections: Tuple[Any, Optional[List[Section]]] = (None, None)
        self._topology_sent: Tuple[str, float] = ("", 0.0)
        self._inventory = Inventory(paths)
        self._certificates = CertInventory(paths)

    def extra(self) -> Dict[str, Any]:
        """The keys to add to this beat's `haproxy` block."""
        block: Dict[str, Any] = {}
        try:
            block["admin_socket_configured"] = self._admin_socket_configured()
            now = self._clock()
            if self._last_run is None or now - self._last_run >= self.interval:
                self._last_run = now
                block.update(self._periodic(now))
        except Exception:  # enrichment is optional: never let it cost the heartbeat
            logger.debug("heartbeat enrichment failed", exc_info=True)
        return block

    def lost(self) -> None:
        """The beat that carried the last topology did not arrive: send it again next time."""
        self._topology_sent = ("", 0.0)
        self._inventory.lost()
        self._certificates.lost()

    def _admin_socket_configured(self) -> bool:
        cfg = self.paths.haproxy_cfg
        mark = fingerprint([cfg])
        if mark != self._configured[0]:
            try:
                text = cfg.read_text(encoding="utf-8", errors="replace")
            except OSError:
                text = ""
            self._configured = (mark, is_enabled(text, self.paths))
        return self._configured[1]

    def _config(self) -> Optional[List[Section]]:
        files = config_files(self.paths)
        mark = fingerprint(files)
        if mark != self._sections[0]:
            self._sections = (mark, read_sections(files) if files else None)
        return self._sections[1]

    def _periodic(self, now: float) -> Dict[str, Any]:
        block: Dict[str, Any] = {}
        sections = self._config()
        sockets = runtime_api.candidates(self.paths, sections)
        if sockets:
            runtime = self._runtime(sockets)
            block["admin_socket"] = runtime is not None
            if runtime is not None:
                block.update(runtime)
        if sections is not None:
            shape = topology(sections)
            digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()
            last_digest, last_at = self._topology_sent
            if digest != last_digest or now - last_at >= TOPOLOGY_EVERY_S:
                block["topology"] = shape
                self._topology_sent = (digest, now)
        try:
            inventory = self._inventory.due(now)
        except Exception:  # its own failure must not cost the rest of the enrichment
            logger.debug("backup inventory failed", exc_info=True)
            inventory = None
        if inventory is not None:
            block["backup_files"] = inventory
        try:
            certificates = self._certificates.due(now, sections or [])
        except Exception:  # as above: the certificates alone are left out of this beat
            logger.debug("certificate inventory failed", exc_info=True)
            certificates = None
        if certificates is not None:
            block["certificates"] = certificates
        return block

    def _runtime(self, sockets: List[Path]) -> Optional[Dict[str, Any]]:
        end = self._clock() + SOCKET_BUDGET_S
        try:
            path, text = runtime_api.first_answer(sockets, "show info", SOCKET_BUDGET_S)
            info = info_summary(parse_info(text))
            rows = parse_stat(runtime_api.query(path, "show stat", self._left(end)))
        except RuntimeApiError as exc:
            logger.debug("admin socket unavailable for this heartbeat: %s", exc)
            return None
        try:
            states = parse_servers_state(
                runtime_api.query(path, "show servers state", self._left(end))
            )
            admin = admin_states(states)
        except RuntimeApiError:
            admin = {}  # show stat's status is the fallback (it hides drain on a DOWN server)
        return {"info": info, "stats": stats_summary(rows, admin, at=int(self._wall()))}

    def _left(self, end: float) -> float:
        left = end - self._clock()
        if left <= 0:
            raise RuntimeApiError(f"the admin socket took over {SOCKET_BUDGET_S:g} s")
        return left
