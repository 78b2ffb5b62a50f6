"""install.sh, run the way operators run it: the install command shown once, piped to bash."""

from __future__ import annotations

import http.server
import os
import shutil
import stat
import subprocess
import threading
from functools import partial
from pathlib import Path

import pytest

from support.agent import stop_background_agent
from support.haproxy import HAProxy
from support.util import free_port, wait_until

MEMBER_IP = "127.0.0.2"


@pytest.fixture
def member(server):
    with server.api() as api:
        pool = api.post("/api/pools", json={"name": "production-edge"}).json()
        made = api.post(
            f"/api/pools/{pool['id']}/members",
            json={"hostname": "edge-1", "allowed_ips": [MEMBER_IP]},
        ).json()
    made["pool"] = pool
    return made


def _run_install(
    command: str,
    root: Path,
    extra_env: dict[str, str] | None = None,
    path_prefix: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    # We are root here and sudo may be missing: run the rest of the command as shown.
    assert " | sudo bash -s -- " in command
    command = command.replace(" | sudo bash -s -- ", " | bash -s -- ")
    env = {**os.environ, "BALCTL_ROOT": str(root), **(extra_env or {})}
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}:{env['PATH']}"
    return subprocess.run(
        ["bash", "-c", f"{command} --source-ip {MEMBER_IP}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _health(server, member):
    with server.api() as api:
        url = f"/api/pools/{member['pool']['id']}/members/{member['id']}"
        return api.get(url).json()["health"]["state"]


def test_install_without_systemd_starts_the_agent_in_the_background(server, member, tmp_path):
    root = tmp_path / "host"
    haproxy = HAProxy("edge-1", tmp_path / "haproxy", f"{MEMBER_IP}:{free_port(MEMBER_IP)}")
    haproxy.start()
    try:
        done = _run_install(
            member["install_command"], root, {"BALCTL_HAPROXY_PIDFILE": str(haproxy.pidfile)}
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "systemd is not running here" in done.stdout
        assert member["secret"] not in done.stdout + done.stderr
        agent_env = root / "etc/balctl/agent.env"
        assert stat.S_IMODE(agent_env.stat().st_mode) == 0o600
        text = agent_env.read_text()
        assert "BALCTL_HOSTNAME=edge-1" in text.replace("'", "").replace('"', "")
        assert f"BALCTL_HAPROXY_PIDFILE={haproxy.pidfile}" in text.replace("'", "").replace('"', "")
        assert (root / "usr/local/lib/balctl/balctl.pyz").exists()
        assert (root / "run/balctl/balctl.pid").exists()
        wait_until(lambda: _health(server, member) == "healthy", 10, what="a healthy member")
    finally:
        stop_background_agent(root)
        haproxy.kill()


SYSTEMCTL_STAND_IN = """#!/bin/bash
# Records its arguments; knows only what install.sh asks of it.
echo "$*" >> "{log}"
case "$1" in
  enable) touch "{state}" ;;
  is-active) [ -f "{state}" ] ;;
esac
"""


def test_install_with_systemd_writes_the_unit_and_enables_it(server, member, tmp_path):
    root = tmp_path / "host"
    (root / "run/systemd/system").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "systemctl.calls"
    stand_in = bin_dir / "systemctl"
    stand_in.write_text(SYSTEMCTL_STAND_IN.format(log=calls, state=tmp_path / "active"))
    stand_in.chmod(0o755)

    done = _run_install(member["install_command"], root, path_prefix=bin_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert stat.S_IMODE((root / "etc/balctl/agent.env").stat().st_mode) == 0o600
    unit = (root / "etc/systemd/system/balctl-heartbeat.service").read_text()
    assert f"EnvironmentFile={root}/etc/balctl/agent.env" in unit
    assert f"{root}/usr/local/lib/balctl/balctl.pyz run" in unit
    assert "Restart=always" in unit and "WantedBy=multi-user.target" in unit
    recorded = calls.read_text().splitlines()
    assert "daemon-reload" in recorded
    assert "enable --now balctl-heartbeat.service" in recorded
    assert recorded.index("daemon-reload") < recorded.index("enable --now balctl-heartbeat.service")
    assert not (root / "run/balctl/balctl.pid").exists()


def test_install_refuses_to_run_as_non_root(server, member, tmp_path):
    script = subprocess.run(
        ["curl", "-fsS", f"{server.url}/agent/install.sh"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    env = {k: v for k, v in os.environ.items() if k != "BALCTL_ROOT"}
    done = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "bash",
            "-s",
            "--",
            "--server",
            server.url,
            "--key",
            member["secret"],
            "--hostname",
            "edge-1",
        ],
        input=script,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd="/",
    )
    assert done.returncode == 1
    assert "must run as root" in done.stderr


def test_install_refuses_a_zipapp_whose_checksum_does_not_match(server, member, tmp_path):
    served = tmp_path / "served/agent"
    served.mkdir(parents=True)
    for name in ("install.sh", "balctl.pyz", "balctl.pyz.sha256"):
        subprocess.run(
            ["curl", "-fsS", "-o", str(served / name), f"{server.url}/agent/{name}"], check=True
        )
    with (served / "balctl.pyz").open("ab") as tampered:
        tampered.write(b"\n# tampered\n")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served.parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        fake = f"http://127.0.0.1:{httpd.server_address[1]}"
        command = member["install_command"].replace(server.url, fake)
        root = tmp_path / "host"
        done = _run_install(command, root)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert done.returncode == 1
    assert "does not match its SHA-256" in done.stderr
    assert not (root / "usr/local/lib/balctl/balctl.pyz").exists()
    assert not (root / "etc/balctl/agent.env").exists()


def test_install_needs_curl_sha256sum_and_python_named_clearly(server, member, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "id", "mktemp", "rm", "dirname", "basename", "tr", "awk"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    script = subprocess.run(
        ["curl", "-fsS", f"{server.url}/agent/install.sh"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    done = subprocess.run(
        [
            str(bin_dir / "bash"),
            "-s",
            "--",
            "--server",
            server.url,
            "--key",
            member["secret"],
            "--hostname",
            "edge-1",
        ],
        input=script,
        env={"PATH": str(bin_dir), "BALCTL_ROOT": str(tmp_path / "host")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert "python3 is not installed" in done.stderr
