"""The view across partitions in a real headless Chromium (issue 21): the district's token
gets the dashboard's overview of both partitions' schools, read only, and a step recorded
at a partition reaches the page live.

The district, its partitions and the night's figures by hand: tests/gateway/test_view.py.
The page speaks the first site's language: Harbour's, zh-CN (it is test_sites' Hillside)."""

from __future__ import annotations

from typing import Any

from tests.api.test_phone_browser import DESKTOP
from tests.api.test_sites_browser import expect_the_nights_overview
from tests.gateway.test_view import TOKENS, Running, by_subject, databases, publisher, running  # noqa: F401 (fixtures)
from tests.support.browser import signed_in_pages


def test_the_district_s_overview_of_both_partitions_live_and_read_only(running: Running) -> None:  # noqa: F811
    from playwright.sync_api import expect

    roof = by_subject(running.client("district").get("/api/alerts").json())["cp-roof"]
    with signed_in_pages(running.view.url) as open_page:
        page: Any = open_page(TOKENS["district"], DESKTOP, "/")
        rows = page.locator("#overview tbody tr")
        expect(rows).to_have_count(2)
        harbour, river = rows.nth(0), rows.nth(1)  # partition 0's school first
        expect_the_nights_overview(river, harbour)  # harbour is test_sites' hillside: the figures by hand there
        # The open alerts of both partitions (cp-hall; cp-roof, ac-h101), and no button that would change one.
        expect(page.locator("#alerts tbody tr")).to_have_count(3)
        expect(page.locator("#alerts button")).to_have_count(0)
        expect(page.locator(f'#alerts tr[data-alert-id="{roof["id"]}"]')).to_have_attribute("data-state", "open")
        # Acknowledged at its partition: the page shows it without a reload.
        running.gateway_of("harbour").acknowledge(roof["partition"]["alert_id"], "harbour-desk")
        expect(page.locator(f'#alerts tr[data-alert-id="{roof["id"]}"]')).to_have_attribute(
            "data-state", "acknowledged"
        )
        expect(page.locator("#stream-status")).to_have_class("pill live")
