"""An admin sets up ACME in Settings → TLS with headless Chromium against a real `serverctl
serve`: Let's Encrypt staging, the contact email, saved and shown. Nothing is ordered, so no CA
is contacted. The page's screenshot is left in the test's tmp_path (and /tmp/acme_settings.png
when that can be written, for a look by eye)."""

from __future__ import annotations

import contextlib
import shutil

import httpx2 as httpx
import pytest

from serverctl.acme.settings import LETS_ENCRYPT_STAGING
from support.browser import chromium, login
from support.server import start_server, stop_process

pytestmark = pytest.mark.browser


@pytest.fixture
def server(tmp_path):
    srv = start_server(tmp_path / "cp")
    yield srv
    stop_process(srv.process)


def test_an_admin_picks_staging_and_sees_the_saved_settings(server, tmp_path):
    with chromium(tmp_path) as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        login(page, server.url, server.admin_password)

        page.click("header.top nav a:text-is('TLS')")
        page.wait_for_url(f"{server.url}/settings/tls")
        assert "Not configured yet" in page.inner_text("#acme-unset")
        assert page.is_checked("input[name=directory][value=production]")

        page.check("input[name=directory][value=staging]")
        page.fill("input[name=email]", "ops@example.com")
        page.fill("textarea[name=check_servers]", "192.0.2.53\nns2.example.net:5353")
        page.click("#acme-save")
        page.wait_for_url(f"{server.url}/settings/tls?saved=1")

        assert page.inner_text("#acme-saved") == "Saved."
        assert page.locator("#acme-unset").count() == 0
        now = page.inner_text("#acme-now")
        assert "Let's Encrypt staging" in now and LETS_ENCRYPT_STAGING in now
        assert "ops@example.com" in now and "192.0.2.53" in now
        assert "the first order registers one" in now
        assert page.is_checked("input[name=directory][value=staging]")
        assert page.input_value("input[name=email]") == "ops@example.com"
        shot = tmp_path / "acme_settings.png"
        page.screenshot(path=str(shot), full_page=True)
        with contextlib.suppress(OSError):
            shutil.copy(shot, "/tmp/acme_settings.png")

        # Typing a URL selects "Custom ACME server" (the page's small script), so what is typed
        # is what gets saved; a bad one comes back with the service's message and the input.
        page.fill("#acme-directory-url", "http://acme.example.net/dir")
        assert page.is_checked("input[name=directory][value=custom]")
        page.click("#acme-save")
        page.wait_for_selector("#acme-error")
        assert "must start with https://" in page.inner_text("#acme-error")
        assert page.input_value("#acme-directory-url") == "http://acme.example.net/dir"
        page.screenshot(path=str(tmp_path / "acme_settings_error.png"), full_page=True)

    # The saved settings are the API's too.
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}
    ) as api:
        shown = api.get("/api/settings/acme").json()
    assert shown["directory_url"] == LETS_ENCRYPT_STAGING and shown["email"] == "ops@example.com"
    assert shown["check_servers"] == ["192.0.2.53", "ns2.example.net:5353"]
    assert shown["updated_by"] == "user:admin"
