"""For the backup and restore job tests: a loopback object store (presigned-URL style), a host
file tree to snapshot, and a fingerprint of every file under the root's /etc."""

from __future__ import annotations

import os
import stat
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from agent_jobs_host import Host

from balctl.paths import HostPaths
from support.loopback import LoopbackServer
from support.tls import TEST_CA_PEM

QUERY = "X-Amz-Signature=0123abcd"
# A self-signed CA certificate (no key kept anywhere): HAProxy loads it as a ca-file.
CERT = TEST_CA_PEM


class ObjectStore(LoopbackServer):
    """PUT keeps the body under the URL's path, GET serves it; the query string is ignored."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        store = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                store.objects[self.path.split("?")[0]] = body
                self._reply(200, b"")

            def do_GET(self) -> None:
                data = store.objects.get(self.path.split("?")[0])
                self._reply(200, data) if data is not None else self._reply(404, b"")

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(Handler)

    def upload(self, key: str) -> dict[str, Any]:
        return {
            "method": "PUT",
            "url": f"{self.url}/{key}?{QUERY}",
            "headers": {"Content-Type": "application/gzip"},
        }

    def download(self, key: str) -> dict[str, Any]:
        return {"method": "GET", "url": f"{self.url}/{key}?{QUERY}"}


def put(paths: HostPaths, logical: str, data: str, mode: int = 0o644) -> Path:
    target = paths.host(logical)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(data)
    os.chmod(target, mode)
    return target


def tls_config(host: Host, body: str = "served") -> str:
    """The host's config with `body` as the answer and a referenced CA file under /etc/ssl."""
    text = host.config_text().replace('string "served\\n"', f'string "{body}\\n"')
    return text + (
        "\nbackend be_tls\n"
        f'    server tls1 127.0.0.1:{host.dead} ssl verify required ca-file "${{BALCTL_ROOT}}'
        '/etc/ssl/edge/ca.pem"\n'
    )


def snapshot(host: Host, store: ObjectStore, snapshot_id: int = 1) -> dict[str, Any]:
    """Back up `host` into `store`; the job's result (the manifest)."""
    params = {
        "snapshot_id": snapshot_id,
        "max_bytes": 10_000_000,
        "upload": store.upload(f"snap-{snapshot_id}.tar.gz"),
    }
    done = host.job("haproxy.backup", params)
    assert done.state == "completed", done.summary
    assert done.result is not None
    return done.result


def snapshot_then_reset(host: Host, store: ObjectStore, config: str) -> dict[str, Any]:
    """A snapshot of `config` with a certificate, a CA file and a conf.d file; then the host is
    put back to its own set (which the restore is to replace)."""
    host.write_config(config)
    put(host.paths, "/etc/ssl/edge/ca.pem", CERT)
    put(host.paths, "/etc/haproxy/certs/snap.pem", CERT, 0o640)
    put(host.paths, "/etc/haproxy/conf.d/10-snap.cfg", "backend be_snap\n")
    result = snapshot(host, store)
    # This host's own set: another config, another certificate, no conf.d, no CA file.
    for logical in ("/etc/haproxy/certs/snap.pem", "/etc/haproxy/conf.d/10-snap.cfg"):
        host.paths.host(logical).unlink()
    host.paths.host("/etc/haproxy/conf.d").rmdir()
    host.paths.host("/etc/ssl/edge/ca.pem").unlink()
    host.paths.host("/etc/ssl/edge").rmdir()
    host.paths.host("/etc/ssl").rmdir()
    host.write_config(host.config_text())
    os.chmod(host.paths.haproxy_cfg, 0o640)
    put(host.paths, "/etc/haproxy/certs/own.pem", CERT, 0o600)
    return result


def restore_params(result: dict[str, Any], store: ObjectStore) -> dict[str, Any]:
    return {
        "snapshot_id": result["snapshot_id"],
        "source_hostname": "edge-0",
        "archive_sha256": result["archive_sha256"],
        "size": result["size"],
        "files": result["files"],
        "download": store.download(f"snap-{result['snapshot_id']}.tar.gz"),
    }


def fingerprint(paths: HostPaths) -> dict[str, tuple[Any, ...]]:
    """Every file, symlink and folder under <root>/etc (the restore work folder left out):
    its type, content or link, mode, owner, inode and modification time."""
    found: dict[str, tuple[Any, ...]] = {}
    top = paths.host("/etc")
    for folder, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d != ".balctl-restore"]
        for name in dirs + files:
            full = os.path.join(folder, name)
            st = os.lstat(full)
            logical = full[len(paths.root) :]
            if stat.S_ISDIR(st.st_mode):
                found[logical] = ("dir", stat.S_IMODE(st.st_mode))
            elif stat.S_ISLNK(st.st_mode):
                found[logical] = ("link", os.readlink(full), st.st_uid, st.st_ino)
            else:
                with open(full, "rb") as handle:
                    data = handle.read()
                found[logical] = (
                    "file",
                    data,
                    stat.S_IMODE(st.st_mode),
                    st.st_uid,
                    st.st_gid,
                    st.st_ino,
                    st.st_mtime_ns,
                )
    return found
