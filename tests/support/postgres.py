"""A real PostgreSQL server (Debian's postgresql package) on a free loopback port, its cluster
in a temporary directory, for running the control plane on PostgreSQL.

initdb and postgres refuse to run as root, so both run as the `postgres` system user that the
package creates; the cluster trusts loopback connections (a throwaway server, tests only) and
skips fsync, which a test's data does not need.

    with Postgres() as pg:
        url = pg.create_database("serverctl")   # a SQLAlchemy URL for SERVERCTL_DATABASE_URL
"""

from __future__ import annotations

import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from support.daemon import Daemon
from support.util import free_port

USER = "postgres"


def _binaries() -> Path:
    """The newest installed server's bin directory (/usr/lib/postgresql/<major>/bin)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda path: int(path.parent.parent.name),
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed: scripts/install-test-packages.sh installs it"
        )
    return found[-1].parent


class Postgres(Daemon):
    """The cluster lives in a directory of its own under the system's temporary directory
    (pytest's are private to root, and the server runs as `postgres`), removed when the `with`
    block ends."""

    # SIGTERM is PostgreSQL's "smart" shutdown, which waits for every client to leave.
    stop_signal = signal.SIGINT

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.bin = _binaries()
        self.host = host
        self.port = free_port(host)
        self._databases = 0
        self.root = Path(tempfile.mkdtemp(prefix="serverctl-pg-"))

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def start(self) -> None:
        owner = pwd.getpwnam(USER)
        shutil.chown(self.root, owner.pw_uid, owner.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            made = subprocess.run(
                [str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", USER, "-N"],
                capture_output=True,
                text=True,
                timeout=120,
                user=USER,
                group=USER,
                cwd=self.root,
            )
            if made.returncode != 0:
                raise RuntimeError(f"initdb failed ({made.returncode}):\n{made.stderr}")
        self._log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                str(self.bin / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.root),
                "-c",
                f"listen_addresses={self.host}",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            user=USER,
            group=USER,
            cwd=self.root,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"postgres exited:\n{self.log()}")
            probe = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", self.host, "-p", str(self.port), "-U", USER],
                capture_output=True,
                timeout=10,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"postgres did not get ready:\n{self.log()}")

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = subprocess.run(
            [
                str(self.bin / "psql"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                USER,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout

    def create_database(self, prefix: str = "serverctl") -> str:
        """A new, empty database; its SQLAlchemy URL (psycopg 3)."""
        self._databases += 1
        name = f"{prefix}_{self._databases}_{secrets.token_hex(3)}"
        self.psql(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://{USER}@{self.host}:{self.port}/{name}"

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
