"""A real Pebble (Debian's `pebble`, Let's Encrypt's test CA) on free loopback ports, with its
DNS-01 lookups sent to a real DNS server (PowerDNS in the tests).

No pytest here: end-to-end tests and demos may use it too.

    with PowerDNS(tmp_path / "pdns") as pdns, Pebble(tmp_path / "pebble", pdns.nameserver) as ca:
        ca.directory_url     # https://127.0.0.1:<port>/dir
        ca.ca_bundle_pem     # the CA that signed Pebble's HTTPS certificate: trust it
        ca.issuing_root()    # the root Pebble issues under (new on every start)

Debian's package ships no certificates (upstream's test/certs minica), so the fixture makes its
own CA and a certificate for 127.0.0.1 (support.tls). Validation is real: PEBBLE_VA_ALWAYS_VALID
is removed from the environment, so a DNS-01 challenge passes only when the TXT record is
answered by `dns_server`. No random sleep before validation (PEBBLE_VA_NOSLEEP) and no
deliberately rejected nonces (PEBBLE_WFE_NONCEREJECT=0): the tests stay fast and repeatable.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from support.daemon import Daemon
from support.tls import make_ca_and_server_cert
from support.util import free_port

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"
HOST = "127.0.0.1"


class Pebble(Daemon):
    """pebble under `root` (config, TLS certificate and log), listening on 127.0.0.1 only."""

    def __init__(
        self,
        root: Path,
        dns_server: str,
        *,
        strict: bool = False,
        authz_reuse: int = 0,
    ) -> None:
        """`dns_server`: host:port every DNS-01 (and CAA) lookup goes to. `authz_reuse`: the
        percentage of valid authorizations Pebble hands out again (0: every order is
        challenged, so every order sets its TXT records)."""
        self.root = root
        self.dns_server = dns_server
        self.strict = strict
        self.authz_reuse = authz_reuse
        self.port = free_port(HOST)
        self.management_port = free_port(HOST)
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    # -- where things are -----------------------------------------------------------------------

    @property
    def directory_url(self) -> str:
        return f"https://{HOST}:{self.port}/dir"

    @property
    def management_url(self) -> str:
        return f"https://{HOST}:{self.management_port}"

    @property
    def ca_bundle_path(self) -> Path:
        return self.root / "tls" / "ca.pem"

    @property
    def ca_bundle_pem(self) -> str:
        """The CA of Pebble's own HTTPS certificate (the ACME settings' `ca_bundle`)."""
        return self.ca_bundle_path.read_text()

    @property
    def log_path(self) -> Path:
        return self.root / "pebble.log"

    # -- life -----------------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        if self.running:
            return
        if not Path(PEBBLE).exists():
            raise RuntimeError("no pebble: scripts/install-test-packages.sh installs it")
        config = self._prepare()
        env = {
            k: v
            for k, v in os.environ.items()
            # Nothing that would make validation pretend: every challenge is checked for real.
            if k not in ("PEBBLE_VA_ALWAYS_VALID", "PEBBLE_VA_SLEEPTIME")
        }
        env |= {
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_WFE_NONCEREJECT": "0",
            "PEBBLE_AUTHZREUSE": str(self.authz_reuse),
        }
        argv = [PEBBLE, "-config", str(config), "-dnsserver", self.dns_server]
        if self.strict:
            argv.append("-strict")
        self._log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            argv,
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    # -- asking it ------------------------------------------------------------------------------

    def issuing_root(self) -> str:
        """The PEM of the root Pebble signs certificates under (made anew on every start)."""
        return self._get(f"{self.management_url}/roots/0").decode()

    def intermediate(self) -> str:
        return self._get(f"{self.management_url}/intermediates/0").decode()

    # -- inside ---------------------------------------------------------------------------------

    def _prepare(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.ca_bundle_path.exists():
            make_ca_and_server_cert(self.ca_bundle_path.parent, HOST)
        tls = self.ca_bundle_path.parent
        config = {
            "pebble": {
                "listenAddress": f"{HOST}:{self.port}",
                "managementListenAddress": f"{HOST}:{self.management_port}",
                "certificate": str(tls / "server.pem"),
                "privateKey": str(tls / "server.key"),
                # Where HTTP-01 and TLS-ALPN-01 would be checked: free ports nobody serves, so
                # only DNS-01 can pass.
                "httpPort": free_port(HOST),
                "tlsPort": free_port(HOST),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
            }
        }
        path = self.root / "pebble-config.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle_path))

    def _get(self, url: str, timeout: float = 5.0) -> bytes:
        with urllib.request.urlopen(url, timeout=timeout, context=self._context()) as response:
            data: bytes = response.read()
        return data

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"pebble exited while starting:\n{self.log()[-3000:]}")
            try:
                directory = json.loads(self._get(self.directory_url, timeout=1.0))
                self._get(f"{self.management_url}/roots/0", timeout=1.0)
            except (urllib.error.URLError, OSError, ValueError):
                directory = None
            if directory and "newOrder" in directory:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"pebble not ready after {timeout} s:\n{self.log()[-3000:]}")
            time.sleep(0.05)
