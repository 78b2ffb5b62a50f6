"""An operator drains a backend server from the Control panel and sees it on the Status tab."""

from __future__ import annotations

import pytest

from support.agent import Agent, download_zipapp
from support.browser import chromium, login
from support.haproxy import HAProxy
from support.util import free_port, wait_until

pytestmark = pytest.mark.browser
MEMBER_IP = "127.0.0.2"


def test_drain_from_the_control_panel_shows_on_status(server, tmp_path):
    root = tmp_path / "host"
    haproxy = HAProxy(
        "edge-1", root, f"{MEMBER_IP}:{free_port(MEMBER_IP)}", backends={"app": ["app1", "app2"]}
    )
    haproxy.start()
    agent = None
    try:
        with server.api() as api:
            pool = api.post("/api/pools", json={"name": "production-edge"}).json()
            member = api.post(
                f"/api/pools/{pool['id']}/members",
                json={"hostname": "edge-1", "allowed_ips": [MEMBER_IP]},
            ).json()
        agent = Agent(
            download_zipapp(server.url, tmp_path / "balctl.pyz"),
            root,
            env={"BALCTL_HAPROXY_PIDFILE": str(haproxy.pidfile), "BALCTL_STATS_INTERVAL_S": "1"},
        )
        assert (
            agent.enrol(server.url, member["secret"], "edge-1", "--source-ip", MEMBER_IP).returncode
            == 0
        )
        agent.start()
        base = f"{server.url}/pools/{pool['id']}/members/{member['id']}"
        with chromium(tmp_path) as browser:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            login(page, server.url, server.admin_password)

            page.goto(f"{base}/control")
            drain = page.locator('tr[data-server="app/app1"] button[data-action="drain"]')
            drain.wait_for(timeout=15_000)
            drain.click()
            page.wait_for_url(f"{base}/control?queued=*")
            assert "queued" in page.inner_text("p.ok")

            page.goto(f"{base}/status")
            page.wait_for_selector(
                'tr.server-row[data-server="app/app1"][data-admin="drain"]', timeout=20_000
            )
            row = page.locator('tr.server-row[data-server="app/app1"]')
            assert row.get_attribute("data-status") == "DRAIN"
            other = page.locator('tr.server-row[data-server="app/app2"]')
            assert other.get_attribute("data-admin") == "ready"
            page.screenshot(path=str(tmp_path / "status-drained.png"), full_page=True)
        wait_until(lambda: "DRAIN" in haproxy.runtime("show stat"), 5, what="haproxy to agree")
    finally:
        if agent is not None:
            agent.stop()
        haproxy.kill()
