"""An operator watches the traffic-flow diagram, makes the standby active from the Overview, and
reads the record on the Managed DNS tab: real agents, a real `serverctl serve`, PowerDNS and
headless Chromium. Screenshots of the pages are left in the test's tmp_path."""

from __future__ import annotations

import pytest

from support.browser import chromium, login
from support.fleet import Fleet
from support.server import start_server, stop_process

pytestmark = pytest.mark.browser
EDGE_1, EDGE_2 = "127.0.0.2", "127.0.0.3"
ACTIVE_NODE = 'svg.flow g[data-role="active"][data-member-id="{id}"]'


@pytest.fixture
def fleet(tmp_path):
    server = start_server(tmp_path / "cp")
    try:
        with Fleet(tmp_path / "f", server) as built:  # short: haproxy socket paths max 97
            built.add_member("edge-1", EDGE_1)
            built.add_member("edge-2", EDGE_2)
            built.link_dns(ttl=30)
            yield built
    finally:
        stop_process(server.process)


def test_make_active_from_the_overview_moves_the_diagram_and_the_record(fleet, tmp_path):
    edge_1, edge_2 = fleet.members
    server, pool_id = fleet.server, fleet.pool["id"]
    with chromium(tmp_path) as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        login(page, server.url, server.admin_password)

        page.goto(f"{server.url}/pools/{pool_id}")
        page.wait_for_selector(ACTIVE_NODE.format(id=edge_1.id) + '[data-state="healthy"]')
        page.wait_for_selector('#dns-state:text("propagated in")', timeout=15_000)
        assert "lb.demo.example" in page.text_content("svg.flow")
        page.screenshot(path=str(tmp_path / "overview-before.png"), full_page=True)

        page.click(f'.member-card[data-member-id="{edge_2.id}"] button[data-action="make-active"]')
        page.wait_for_url(f"{server.url}/pools/{pool_id}?done=activated*")
        active = page.locator(ACTIVE_NODE.format(id=edge_2.id))
        active.wait_for()
        assert "edge-2" in (active.text_content() or "")
        assert "edge-2 is now the active member" in page.inner_text("#notice")
        page.wait_for_selector('#dns-state:text("propagated in")', timeout=15_000)
        assert fleet.answer() == [EDGE_2]
        assert "edge-1 → edge-2" in page.inner_text('[data-kpi="last-failover"]')
        page.screenshot(path=str(tmp_path / "overview-after.png"), full_page=True)

        page.goto(f"{server.url}/pools/{pool_id}/dns")
        page.wait_for_selector(f'#current-record[data-target="{EDGE_2}"][data-matches="true"]')
        page.wait_for_selector('select[name="zone"] option[value="demo.example"]', state="attached")
        page.fill("input[name=label]", "edge")
        page.wait_for_selector('#fqdn-value:text("edge.demo.example")')
        page.screenshot(path=str(tmp_path / "managed-dns.png"), full_page=True)

        page.goto(f"{server.url}/pools/{pool_id}/settings")
        page.fill("input[name=delay_s]", "60")
        assert page.inner_text("#worst-case-total") == str(60 + 1 + 30)
        page.screenshot(path=str(tmp_path / "settings.png"), full_page=True)

        page.goto(f"{server.url}/settings/providers")
        page.select_option("select[name=kind]", "cpanel")
        page.wait_for_selector('input[name="cfg_username"]')
        page.screenshot(path=str(tmp_path / "providers.png"), full_page=True)
