"""An operator backs a member up from its Restore Backups tab, the host's configuration changes,
and the operator restores the snapshot from the tab: the browser follows the restore job to its
end and the file is back on disk, served by the reloaded haproxy. A real `serverctl serve` with
its default local store, a real agent beside a real haproxy, and headless Chromium."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import httpx2 as httpx
import pytest
from playwright.sync_api import Page

from support.agent import Agent, download_zipapp
from support.browser import chromium, login
from support.haproxy import HAProxy
from support.util import free_port, wait_until

pytestmark = pytest.mark.browser
MEMBER_IP = "127.0.0.2"
CONFIG = "/etc/haproxy/haproxy.cfg"


def _served(haproxy: HAProxy) -> str:
    return httpx.get(f"http://{haproxy.bind}/", timeout=5).text.strip()


def _wait_for_diff(page: Page, path: str) -> None:
    """Reload the review page until the member's reported files show `path` changed (the agent
    reports them with its heartbeats)."""

    def shown() -> bool:
        page.reload()
        diff = page.locator("#restore-diff")
        return diff.get_attribute("data-known") == "true" and path in diff.inner_text()

    wait_until(shown, 40, interval=1, what=f"the review to show {path} changed")


def test_back_up_change_a_file_and_restore_it_from_the_restore_backups_tab(server, tmp_path):
    # haproxy refuses admin socket paths over 97 characters: the host lives under a short path.
    root = Path(tempfile.mkdtemp(dir="/tmp", prefix="bk"))
    haproxy = HAProxy("edge-1", root, f"{MEMBER_IP}:{free_port(MEMBER_IP)}")
    haproxy.start()
    original = haproxy.config.read_bytes()
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
                env={"BALCTL_HAPROXY_PIDFILE": str(haproxy.pidfile)},
            )
            enrolled = agent.enrol(server.url, member["secret"], "edge-1", "--source-ip", MEMBER_IP)
            assert enrolled.returncode == 0, enrolled.stderr
            agent.start()
            member_url = f"/api/pools/{pool['id']}/members/{member['id']}"
            wait_until(
                lambda: api.get(member_url).json()["health"]["state"] == "healthy",
                15,
                what="edge-1 healthy",
            )
        tab = f"{server.url}/pools/{pool['id']}/members/{member['id']}/backups"
        with chromium(tmp_path) as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("dialog", lambda dialog: dialog.accept())  # the Restore confirmation
            login(page, server.url, server.admin_password)

            # Back up now: the tab follows the job, and the snapshot appears in the list.
            page.goto(tab)
            page.click("#back-up-now")
            page.wait_for_url(f"{tab}?job=*")
            page.wait_for_selector('#job-follow[data-job-state="completed"]', timeout=60_000)
            row = page.locator('#snapshots tr[data-state="completed"]').first
            row.wait_for(timeout=15_000)
            snapshot_id = row.get_attribute("data-snapshot-id")
            assert snapshot_id is not None
            page.screenshot(path=str(tmp_path / "backed-up.png"), full_page=True)

            # The host changes: its configuration is edited behind ServerCTL's back.
            haproxy.config.write_text(
                haproxy.config.read_text().replace("served by edge-1", "served by someone")
            )
            assert haproxy.config.read_bytes() != original

            # Review & restore: the diff names the changed file; Restore, then follow the job.
            row.locator('a[data-action="review"]').click()
            page.wait_for_url(f"{tab}/{snapshot_id}")
            _wait_for_diff(page, CONFIG)
            assert page.locator("#restore-diff").get_attribute("data-changed") == "1"
            page.click("#restore-button")
            page.wait_for_url(f"{tab}/{snapshot_id}?job=*")
            done = page.locator("#job-follow")
            page.wait_for_selector(
                '#job-follow[data-job-state="completed"], #job-follow[data-job-state="failed"]',
                timeout=90_000,
            )
            assert done.get_attribute("data-job-state") == "completed", done.inner_text()
            result = page.inner_text("#job-follow .restore-result")
            assert "1 changed" in result and "HAProxy reloaded" in result
            page.screenshot(path=str(tmp_path / "restored.png"), full_page=True)

        # The file is back on disk, and the reloaded haproxy serves it.
        assert haproxy.config.read_bytes() == original
        wait_until(lambda: _served(haproxy) == "served by edge-1", 10, what="the old answer")
    finally:
        if agent is not None:
            agent.stop()
        haproxy.kill()
        shutil.rmtree(root, ignore_errors=True)
