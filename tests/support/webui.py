"""Driving the web UI in process (the `app_env` fixture): a logged-in session with its CSRF
token, and heartbeats from a member's own address so its card turns healthy."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from serverctl.domain.principal import SYSTEM


def login(env: Any, name: str = "webadmin", role: str = "admin") -> str:
    """Log `env.client` in as a new user of `role` (dropping the API token); the CSRF token."""
    env.client.headers.pop("Authorization", None)
    env.client.cookies.clear()
    _, password = env.state.operators.create_user(SYSTEM, name, role)
    answer = env.client.post(
        "/login", data={"name": name, "password": password}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text
    page = env.client.get("/pools")
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def heartbeat(
    env: Any, secret: str, hostname: str, ip: str, haproxy_active: bool = True, **haproxy: Any
) -> dict[str, Any]:
    """One heartbeat through the real route, sent from `ip` (the member's allowed address);
    `haproxy` adds keys to its `haproxy` block (enrichment such as `certificates`)."""
    client = TestClient(env.client.app, client=(ip, 50000))
    try:
        answer = client.post(
            "/api/agents/heartbeat",
            json={
                "ip": ip,
                "hostname": hostname,
                "version": "0.1.0",
                "haproxy": {
                    "monitored": True,
                    "active": haproxy_active,
                    "source": "pidfile",
                    **haproxy,
                },
            },
            headers={"Authorization": f"Bearer {secret}"},
        )
    finally:
        client.close()
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result
