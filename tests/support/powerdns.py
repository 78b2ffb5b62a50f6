"""A real PowerDNS Authoritative server (Debian's pdns_server, gsqlite3 backend) on free loopback
ports, with its HTTP API and RFC 2136 updates (TSIG) turned on, for one zone.

No pytest here: end-to-end tests, the failover benchmark and `make demo` use it too.

    with PowerDNS(tmp_path / "pdns") as pdns:
        provider = build("powerdns", pdns.powerdns_config())
        ...
        pdns.stop()    # the API and the DNS port go away (a failed DNS server)
        pdns.start()   # back on the same ports, with the same data

Every cache is off (cache-ttl, query-cache-ttl, negquery-cache-ttl, zone cache, metadata
cache), so the DNS port answers an API change at once.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import dns.rdtypes.ANY.TXT

from support.daemon import Daemon
from support.util import free_port

PDNS_SERVER = shutil.which("pdns_server") or "/usr/sbin/pdns_server"
SCHEMAS = (
    Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql"),
    Path("/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql"),
)

CONFIG = """\
launch=gsqlite3
gsqlite3-database={database}
local-address={host}
local-port={dns_port}
api=yes
api-key={api_key}
webserver=yes
webserver-address={host}
webserver-port={api_port}
webserver-allow-from={allowed}
dnsupdate=yes
allow-dnsupdate-from={allowed}
socket-dir={root}
daemon=no
guardian=no
write-pid=no
disable-syslog=yes
loglevel=5
# Answers change the moment the API changes a record: no caches at all.
cache-ttl=0
query-cache-ttl=0
negquery-cache-ttl=0
zone-cache-refresh-interval=0
zone-metadata-cache-ttl=0
# Never ask the internet whether this version is secure (secpoll.powerdns.com).
security-poll-suffix=
distributor-threads=1
default-soa-content=ns1.@ hostmaster.@ 1 10800 3600 604800 60
"""


class PowerDNS(Daemon):
    """pdns_server under `root` (config, SQLite database, control socket and log)."""

    def __init__(
        self,
        root: Path,
        zone: str = "demo.example",
        *,
        host: str = "127.0.0.1",
        tsig_name: str = "serverctl-test",
        tsig_algorithm: str = "hmac-sha256",
        clients: tuple[str, ...] = (),
    ) -> None:
        """`clients`: addresses besides loopback and `host` that may use the API and send
        updates (a control plane on another host of a test LAN)."""
        self.root = root
        self.zone = zone.rstrip(".").lower()
        self.host = host
        self.clients = clients
        self.dns_port = free_dns_port(host)
        self.api_port = free_port(host)
        self.api_key = secrets.token_urlsafe(24)
        self.server_id = "localhost"
        self.tsig_name = tsig_name
        self.tsig_algorithm = tsig_algorithm
        self.tsig_secret = base64.b64encode(os.urandom(32)).decode()
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    # -- where things are -----------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def nameserver(self) -> str:
        """The DNS listener as `host:port` (the PowerDNS provider's `nameserver` setting)."""
        return f"{self.host}:{self.dns_port}"

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def database(self) -> Path:
        return self.root / "pdns.sqlite3"

    @property
    def log_path(self) -> Path:
        return self.root / "pdns.log"

    def powerdns_config(self) -> dict[str, object]:
        """Settings for the `powerdns` DNS provider."""
        return {"api_url": self.api_url, "api_key": self.api_key, "nameserver": self.nameserver}

    def rfc2136_config(self) -> dict[str, object]:
        """Settings for the `rfc2136` DNS provider, with the zone's TSIG key."""
        return {
            "server": self.host,
            "port": self.dns_port,
            "zone": self.zone,
            "tsig_key_name": self.tsig_name,
            "tsig_secret": self.tsig_secret,
            "tsig_algorithm": self.tsig_algorithm,
            "timeout": 5,
        }

    # -- life -----------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Start the server (creating its config, database and zone the first time) and wait
        until both the DNS port and the API answer."""
        if self.running:
            return
        first = not self.database.exists()
        if first:
            self._prepare()
        self._log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [PDNS_SERVER, f"--config-dir={self.config_dir}"],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready(timeout)
            if first:
                self._provision()
        except BaseException:
            self.stop()
            if first:  # half-made: make it again on the next start
                self.database.unlink(missing_ok=True)
            raise

    # -- asking it ------------------------------------------------------------------------------

    def fqdn(self, name: str) -> str:
        """'lb' -> 'lb.demo.example'; a name already in the zone stays as it is."""
        name = name.rstrip(".").lower()
        if name in ("", "@"):
            return self.zone
        if name == self.zone or name.endswith("." + self.zone):
            return name
        return f"{name}.{self.zone}"

    def query(self, name: str, rdtype: str = "A", timeout: float = 2.0) -> list[str]:
        """The values the DNS port answers for `name` (sorted; TXT strings joined), asked over
        UDP without recursion, as a resolver would ask the authority."""
        message = dns.message.make_query(self.fqdn(name) + ".", rdtype)
        message.flags &= ~dns.flags.RD
        response = dns.query.udp(message, self.host, timeout=timeout, port=self.dns_port)
        wanted = dns.rdatatype.from_text(rdtype)
        values = [
            _text(rdata) for rrset in response.answer if rrset.rdtype == wanted for rdata in rrset
        ]
        return sorted(values)

    def query_a(self, name: str) -> list[str]:
        return self.query(name, "A")

    def api(self, method: str, path: str, body: object | None = None) -> Any:
        """Call the HTTP API (`path` below /api/v1/servers/localhost); the decoded JSON or None."""
        request = urllib.request.Request(
            f"{self.api_url}/api/v1/servers/{self.server_id}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"X-API-Key": self.api_key, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            data = response.read()
        return json.loads(data) if data else None

    # -- inside ---------------------------------------------------------------------------------

    def _prepare(self) -> None:
        if not Path(PDNS_SERVER).exists():
            raise RuntimeError("no pdns_server: scripts/install-test-packages.sh installs it")
        self.config_dir.mkdir(parents=True, exist_ok=True)
        schema = next((p for p in SCHEMAS if p.exists()), None)
        if schema is None:
            raise RuntimeError("no gsqlite3 schema: apt-get install pdns-backend-sqlite3")
        with sqlite3.connect(self.database) as db:
            db.executescript(schema.read_text())
        db.close()
        (self.config_dir / "pdns.conf").write_text(
            CONFIG.format(
                database=self.database,
                host=self.host,
                allowed=",".join(("127.0.0.0/8", self.host, *self.clients)),
                dns_port=self.dns_port,
                api_port=self.api_port,
                api_key=self.api_key,
                root=self.root,
            )
        )

    def _provision(self) -> None:
        """The zone (SOA from default-soa-content, NS ns1 with its A record) and the TSIG key
        allowed to update it, made through the API as an operator would."""
        zone = f"{self.zone}."
        ns1 = {
            "name": f"ns1.{zone}",
            "type": "A",
            "ttl": 3600,
            "records": [{"content": self.host, "disabled": False}],
        }
        self.api(
            "POST",
            "/zones",
            {"name": zone, "kind": "Native", "nameservers": [f"ns1.{zone}"], "rrsets": [ns1]},
        )
        key = {"name": self.tsig_name, "algorithm": self.tsig_algorithm, "key": self.tsig_secret}
        self.api("POST", "/tsigkeys", key)
        for kind, values in (
            ("TSIG-ALLOW-DNSUPDATE", [self.tsig_name]),
            ("ALLOW-DNSUPDATE-FROM", ["127.0.0.0/8", self.host]),
        ):
            self.api("PUT", f"/zones/{zone}/metadata/{kind}", {"kind": kind, "metadata": values})

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not (self._dns_ready() and self._api_ready()):
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"pdns_server exited while starting:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"pdns_server not ready after {timeout} s:\n{self.log()[-3000:]}"
                )
            time.sleep(0.02)

    def _dns_ready(self) -> bool:
        # TCP first: a closed port refuses at once, where UDP would wait for its timeout.
        message = dns.message.make_query(self.zone + ".", "SOA")
        try:
            dns.query.tcp(message, self.host, timeout=0.5, port=self.dns_port)
            response = dns.query.udp(message, self.host, timeout=1.0, port=self.dns_port)
        except (dns.exception.DNSException, OSError, EOFError):
            return False
        return response.id == message.id  # any answer (REFUSED before the zone exists)

    def _api_ready(self) -> bool:
        try:
            self.api("GET", "")
        except (urllib.error.URLError, OSError):
            return False
        return True


def free_dns_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP (a DNS server listens on both)."""
    for _ in range(50):
        port = free_port(host)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both TCP and UDP")


def _text(rdata: object) -> str:
    if isinstance(rdata, dns.rdtypes.ANY.TXT.TXT):
        return b"".join(rdata.strings).decode(errors="replace")
    return str(rdata)
