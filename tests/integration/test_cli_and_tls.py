"""The `serverctl` commands operators script against, and serving HTTPS to the agent."""

from __future__ import annotations

import httpx2 as httpx

from support.agent import Agent, download_zipapp
from support.server import serverctl_cli, start_server, stop_process
from support.tls import make_ca_and_server_cert
from support.util import wait_until


def test_token_made_while_serving_is_accepted_at_once(server):
    made = server.cli("tokens", "create", "--name", "ci", "--role", "viewer")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("sct_") and " " not in token
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{server.url}/api/pools", headers=headers).status_code == 200
    refused = httpx.post(f"{server.url}/api/pools", headers=headers, json={"name": "x"})
    assert refused.status_code == 403


def test_tokens_create_makes_admin_tokens_by_default(server):
    token = server.cli("tokens", "create", "--name", "ops").stdout.strip().splitlines()[-1]
    answer = httpx.post(
        f"{server.url}/api/users",
        json={"name": "newbie"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 201


def test_users_create_prints_a_password_that_logs_in(server):
    made = server.cli("users", "create", "olga", "--role", "operator")
    assert made.returncode == 0, made.stderr
    password = made.stdout.strip().splitlines()[-1]
    with httpx.Client(base_url=server.url, follow_redirects=True) as browser:
        answer = browser.post("/login", data={"name": "olga", "password": password})
        assert answer.status_code == 200 and "Log out" in answer.text


def test_cli_errors_are_one_clear_line_and_exit_1(tmp_path):
    made = serverctl_cli("users", "create", "Bad Name", data_dir=tmp_path / "var")
    assert made.returncode == 1
    assert "user name 'Bad Name' is not valid" in made.stderr
    bad_role = serverctl_cli(
        "tokens", "create", "--name", "x", "--role", "root", data_dir=tmp_path / "var"
    )
    assert bad_role.returncode == 1 and "role must be one of" in bad_role.stderr


def test_migrate_creates_the_database_in_the_data_dir(tmp_path):
    done = serverctl_cli("migrate", data_dir=tmp_path / "instance")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "instance" / "serverctl.db").exists()
    again = serverctl_cli("migrate", data_dir=tmp_path / "instance")
    assert again.returncode == 0


def test_first_admin_password_is_printed_once_and_works(tmp_path, server):
    assert len(server.admin_password) == 20
    with httpx.Client(base_url=server.url, follow_redirects=True) as browser:
        answer = browser.post("/login", data={"name": "admin", "password": server.admin_password})
        assert "Log out" in answer.text
    stop_process(server.process)
    restarted = server.cli("migrate")
    assert restarted.returncode == 0
    assert "with password" not in restarted.stdout


def test_state_survives_a_restart(tmp_path):
    first = start_server(tmp_path)
    try:
        with first.api() as api:
            pool = api.post("/api/pools", json={"name": "kept"}).json()
    finally:
        stop_process(first.process)
    second = start_server(tmp_path)
    try:
        assert "with password" not in second.log()
        with second.api() as api:
            assert api.get(f"/api/pools/{pool['id']}").json()["name"] == "kept"
    finally:
        stop_process(second.process)


def test_agent_talks_https_to_a_server_with_a_pinned_ca(tmp_path):
    ca, cert, key = make_ca_and_server_cert(tmp_path / "tls")
    srv = start_server(
        tmp_path, "--tls-cert", str(cert), "--tls-key", str(key), scheme="https", ca_file=ca
    )
    agent = None
    try:
        with srv.api() as api:
            pool = api.post("/api/pools", json={"name": "tls-edge", "template": "linux"}).json()
            member = api.post(
                f"/api/pools/{pool['id']}/members",
                json={"hostname": "edge-1", "allowed_ips": ["127.0.0.2"]},
            ).json()
        assert member["install_command"].startswith(f"curl -fsSL {srv.url}/agent/install.sh")
        pyz = download_zipapp(srv.url, tmp_path / "balctl.pyz", verify=srv.verify)
        agent = Agent(pyz, tmp_path / "host")
        unpinned = agent.enrol(srv.url, member["secret"], "edge-1", "--source-ip", "127.0.0.2")
        assert unpinned.returncode == 3
        assert "certificate" in unpinned.stderr.lower()
        pinned = agent.enrol(
            srv.url, member["secret"], "edge-1", "--source-ip", "127.0.0.2", "--ca-file", str(ca)
        )
        assert pinned.returncode == 0, pinned.stderr
        assert (tmp_path / "host/etc/balctl/ca.pem").read_bytes() == ca.read_bytes()
        agent.start()

        def healthy() -> bool:
            with srv.api() as api:
                url = f"/api/pools/{pool['id']}/members/{member['id']}"
                return bool(api.get(url).json()["health"]["state"] == "healthy")

        wait_until(healthy, 5, what="a healthy member over HTTPS")
    finally:
        if agent is not None:
            agent.stop()
        stop_process(srv.process)
