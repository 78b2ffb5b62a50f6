"""An operator runs the recipe "Let's Encrypt (failover / HAProxy)" from a member's Recipes tab
in headless Chromium and finds the certificate in the inventory with its expiry: a real
`serverctl serve`, PowerDNS, Pebble, the real agent and haproxy (support.letsencrypt_rig).

The dates the pages show are the ones `GET /api/pools/{id}/certificates` gives for the
certificate Pebble issued. Screenshots are left in the test's tmp_path (and as
/tmp/tls_recipe_*.png when that can be written, for a look by eye)."""

from __future__ import annotations

from datetime import datetime

import pytest
from playwright.sync_api import Locator, Page

from support.browser import chromium, login
from support.letsencrypt_rig import FQDN, HOSTNAME, PEM_PATH, LetsEncryptRig

pytestmark = pytest.mark.browser
RECIPE = "section.recipe[data-recipe=letsencrypt]"
JOB_ENDED = "[data-job-state]:not([data-job-state=pending]):not([data-job-state=running])"


@pytest.fixture
def rig(tmp_path):
    with LetsEncryptRig(tmp_path) as built:
        yield built


def _shot(page: Page, tmp_path, name: str) -> None:
    shot = tmp_path / f"tls_recipe_{name}.png"
    page.screenshot(path=str(shot), full_page=True)


def _expiry(cert: dict) -> tuple[str, set[str]]:
    """The expiry as the pages print it, and the days left they may print: the API's count, or
    one less should a day boundary pass between the API's answer and the page's."""
    shown = datetime.fromisoformat(cert["not_after"]).strftime("%Y-%m-%d %H:%M:%S UTC")
    days = {cert["days_left"], cert["days_left"] - 1}
    return shown, {f"{d} day{'s' if d != 1 else ''}" for d in days}


def _row_shows(row: Locator, cert: dict) -> str:
    text = row.inner_text()
    shown, days = _expiry(cert)
    assert shown in text, text
    assert any(d in text for d in days), (days, text)
    return text


def test_the_recipe_from_the_recipes_tab_puts_the_certificate_in_the_inventory(rig, tmp_path):
    server, pool_id, member_id = rig.server, rig.pool["id"], rig.member["id"]
    member_page = f"{server.url}/pools/{pool_id}/members/{member_id}"
    with chromium(tmp_path) as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        login(page, server.url, server.admin_password)

        # The Recipes tab: the recipe, its one-time step for this pool's name, not done yet.
        page.goto(member_page)
        page.click("nav.subtabs a:text-is('Recipes')")
        page.wait_for_url(f"{member_page}/recipes")
        card = page.locator(RECIPE)
        assert card.locator("h2").inner_text() == "Let's Encrypt (failover / HAProxy)"
        assert card.locator("[data-recipe-unavailable]").count() == 0
        note = card.locator("p.recipe-note")
        assert f"One-time step on each member: add ssl crt {PEM_PATH} to the bind line" in (
            note.inner_text()
        )
        # The configuration lines are shown as code, not with their backticks.
        assert note.locator("code").all_inner_texts()[:2] == [
            f"ssl crt {PEM_PATH}",
            f"bind :443 ssl crt {PEM_PATH}",
        ]
        state = card.locator(".recipe-state")
        assert state.inner_text() == f"The configuration references {PEM_PATH}: no"
        state.locator("[data-completed=no]").wait_for()
        _shot(page, tmp_path, "recipes")

        # Apply: the live view (every 2 s) follows the run until it ends.
        card.locator("button[data-recipe-action=apply]").click()
        page.wait_for_url(f"{member_page}/recipes")
        card.locator(f".last-run h3 {JOB_ENDED}").wait_for(timeout=150_000)
        last_run = card.locator(".last-run").inner_text()
        ended = card.locator(".last-run h3 [data-job-state]").get_attribute("data-job-state")
        assert ended == "completed", last_run
        assert card.locator(".last-run li.step-completed").inner_text().startswith("tls.acme_issue")
        # The run's summary is the step's own: what was installed, until when.
        assert f"completed: installed /etc/haproxy/certs/{FQDN}.pem" in last_run
        run = rig.recipe()["last_job"]
        assert run["state"] == "completed" and run["result"]["names"] == [FQDN]

        # Cron & Jobs lists the recipe and its step, both completed.
        page.click("nav.subtabs a:text-is('Cron & Jobs')")
        for job_type in ("recipe", "tls.acme_issue"):
            job_row = page.locator(f"tr[data-job-type='{job_type}']").first
            assert (
                job_row.locator("[data-job-state]").get_attribute("data-job-state") == "completed"
            )

        # The inventory: the agent's next heartbeat reports the installed PEM (not loaded yet).
        cert = rig.wait_failover_cert(run["result"]["serial"])
        assert (cert["path"], cert["sans"], cert["status"]) == (PEM_PATH, [FQDN], "ok")
        assert cert["referenced"] is False and cert["days_left"] >= 30

        page.goto(f"{server.url}/pools/{pool_id}")
        row = page.locator(f"#certificates tr[data-member-id='{member_id}']")
        assert row.get_attribute("data-status") == "ok"
        text = _row_shows(row, cert)
        assert HOSTNAME in text and "not loaded by HAProxy yet" in text
        assert f"/etc/haproxy/certs/{FQDN}.pem" in page.inner_text("#certificates p.muted")
        assert page.locator("#certificate-warning").count() == 0  # nothing expiring
        _shot(page, tmp_path, "overview")

        # The operator's one-time step; then the Status tab lists the certificate as loaded...
        rig.add_tls_bind()
        cert = rig.wait_failover_cert(run["result"]["serial"], referenced=True)
        page.click(f"#certificates tr[data-member-id='{member_id}'] a")
        page.wait_for_url(f"{member_page}/status#member-certificates")
        row = page.locator(f"#certificates-table tr[data-path='{PEM_PATH}']")
        assert row.get_attribute("data-status") == "ok"
        text = _row_shows(row, cert)
        assert "failover certificate" in text and "loaded by HAProxy" in text
        assert FQDN in text and f"serial {cert['serial']}" in text
        assert cert["issuer"] and cert["issuer"] in text
        _shot(page, tmp_path, "status")

        # ...and the recipe reads as done.
        page.click("nav.subtabs a:text-is('Recipes')")
        page.locator(f"{RECIPE} .recipe-state [data-completed=yes]").wait_for(timeout=15_000)
        _shot(page, tmp_path, "recipes_done")
