"""An operator in a real browser: log in, create a pool, add a member, run the install command
it shows on a host, and watch the member card turn green without reloading the page."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from support.agent import stop_background_agent
from support.browser import chromium, login
from support.haproxy import HAProxy
from support.util import free_port

pytestmark = pytest.mark.browser
MEMBER_IP = "127.0.0.2"


def test_enrol_a_member_from_the_browser_and_see_it_turn_green(server, tmp_path):
    haproxy = HAProxy("edge-1", tmp_path / "haproxy", f"{MEMBER_IP}:{free_port(MEMBER_IP)}")
    haproxy.start()
    host_root = tmp_path / "host"
    shots = Path(os.environ.get("SERVERCTL_TEST_ARTIFACTS", tmp_path))
    try:
        with chromium(tmp_path) as browser:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            login(page, server.url, server.admin_password)

            page.check("input[name=template][value=haproxy]")
            page.fill("#add-pool input[name=name]", "production-edge")
            page.click("#add-pool button[type=submit]")
            page.wait_for_selector("#setup-banner")

            page.fill("#add-member input[name=hostname]", "edge-1")
            page.fill("#add-member input[name=allowed_ips]", MEMBER_IP)
            page.click("#add-member button[type=submit]")
            command = page.inner_text("#install-command-text").strip()
            assert "will not be shown again" in page.inner_text("#install-command")
            card = page.locator('.member-card[data-member="edge-1"]')
            assert card.get_attribute("data-state") == "pending"

            # Marks this page: a reload would lose the mark.
            page.evaluate("window.__sameDocument = true")
            done = subprocess.run(
                [
                    "bash",
                    "-c",
                    command.replace("| sudo bash", "| bash") + f" --source-ip {MEMBER_IP}",
                ],
                env={
                    **os.environ,
                    "BALCTL_ROOT": str(host_root),
                    "BALCTL_HAPROXY_PIDFILE": str(haproxy.pidfile),
                },
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr

            page.wait_for_selector(
                '.member-card[data-member="edge-1"][data-state="healthy"]', timeout=10_000
            )
            assert page.evaluate("window.__sameDocument") is True
            # The tab bar follows too, through HTMX's out-of-band swap.
            page.wait_for_selector("nav.tabs .dot.healthy", timeout=5_000)
            assert "running" in card.inner_text()
            assert "Active" in card.inner_text()
            page.screenshot(path=str(shots / "overview-member-healthy.png"), full_page=True)

            page.click("nav.tabs >> text=edge-1")
            page.wait_for_selector("#member-health")
            assert page.inner_text("#member-health").lower() == "healthy"
            page.screenshot(path=str(shots / "member-tab.png"), full_page=True)
    finally:
        stop_background_agent(host_root)
        haproxy.kill()
