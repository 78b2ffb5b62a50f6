"""Re-capture the runtime API answers in this folder from a real haproxy (2.6 when captured).

    .venv/bin/python tests/unit/agent/haproxy26/capture.py

Starts haproxy on free 127.0.0.1 ports under a temporary directory, sets app2 to drain and app3
to maint, sends a few requests, writes each answer to <name>.txt here, then stops haproxy.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent

CONFIG = """\
global
    stats socket {sock} mode 600 level admin
    stats timeout 2m

defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s

frontend fe_web
    bind 127.0.0.1:{web}
    http-request return status 200 content-type text/plain string "ok\\n"

backend be_app
    server app1 127.0.0.1:{dead} check inter 200ms
    server app2 127.0.0.1:{dead} weight 20
    server app3 127.0.0.1:{dead} backup
    server app4 127.0.0.1:{dead}

listen li_tcp
    mode tcp
    bind 127.0.0.1:{tcp1},127.0.0.1:{tcp2}
    server tcp1 127.0.0.1:{dead}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ask(path: Path, command: str) -> str:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sock, pidfile, cfg = Path(tmp, "admin.sock"), Path(tmp, "haproxy.pid"), Path(tmp, "h.cfg")
        web = free_port()
        ports = {"web": web, "dead": free_port(), "tcp1": free_port(), "tcp2": free_port()}
        cfg.write_text(CONFIG.format(sock=sock, **ports))
        subprocess.run(["haproxy", "-D", "-p", str(pidfile), "-f", str(cfg)], check=True)
        try:
            time.sleep(1)  # let app1's checks fail
            for _ in range(3):
                urllib.request.urlopen(f"http://127.0.0.1:{web}/", timeout=5).read()
            for command in (
                "set server be_app/app2 state drain",
                "set server be_app/app3 state maint",
            ):
                assert ask(sock, command) == "\n", command
            answers = {
                "show_info": "show info",
                "show_stat": "show stat",
                "show_servers_state": "show servers state",
                "show_servers_state_unknown": "show servers state nope",
                "set_server_unknown": "set server be_app/nope state drain",
                "set_server_ok": "set server be_app/app4 state ready",
            }
            for name, command in answers.items():
                (HERE / f"{name}.txt").write_text(ask(sock, command))
            bad = Path(tmp, "bad.cfg")
            bad.write_text(cfg.read_text() + "\nbogus keyword\n")
            checked = subprocess.run(
                ["haproxy", "-c", "-f", str(bad)], capture_output=True, text=True, check=False
            )
            (HERE / "check_invalid.txt").write_text(checked.stdout + checked.stderr)
        finally:
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGTERM)


if __name__ == "__main__":
    main()
