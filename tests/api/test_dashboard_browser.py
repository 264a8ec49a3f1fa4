"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): sign in with
a token, see an alert appear live from events published over the real broker, acknowledge
it, and see its state change."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.conftest import NAMES, TOKENS, Publisher, Running, left_on
from tests.support.browser import CHROMIUM_ARGS, chromium_path


@pytest.fixture
def page(running: Running) -> Iterator[object]:
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' installs playwright")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield page
            assert not errors, f"JavaScript errors on the page: {errors}"
        finally:
            browser.close()


def test_an_alert_appears_live_and_is_acknowledged(running: Running, publisher: Publisher, page) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page.goto(running.url + "/")
    expect(page.locator("#login")).to_be_visible()  # reads need a token on this gateway
    page.fill("#token", TOKENS["maintenance"])
    page.click("#login button[type=submit]")
    expect(page.locator("#who-name")).to_have_text(f"{NAMES['maintenance']} (maintenance)")
    expect(page.locator("#stream-status")).to_have_text("live")
    expect(page.locator("#no-alerts")).to_be_visible()
    expect(page.locator("#rounds .round")).to_have_count(0)
    expect(page.locator("#devices tbody tr[data-device='ac-a204']")).to_be_visible()

    left_on(publisher, running.gateway)  # the AC in A-204 runs after hours: the rule raises

    row = page.locator("#alerts tbody tr", has_text="A-204")
    expect(row).to_have_count(1)
    expect(row.locator(".state")).to_have_text("open")
    expect(row).to_contain_text("ac_after_hours")
    row.get_by_role("button", name="Acknowledge").click()

    expect(row.locator(".state")).to_have_text(f"acknowledged by {NAMES['maintenance']}")
    expect(row.get_by_role("button", name="Acknowledge")).to_have_count(0)
    [alert] = running.gateway.store.alerts(rule="ac_after_hours")
    assert (alert.state, alert.acknowledged_by) == ("acknowledged", NAMES["maintenance"])
    # After a reload the tab is still signed in (sessionStorage), and the device list
    # shows the meter the gateway heard.
    page.reload()
    expect(page.locator("#who-name")).to_have_text(f"{NAMES['maintenance']} (maintenance)")
    expect(page.locator("#alerts tbody tr", has_text="A-204").locator(".state")).to_contain_text("acknowledged")
    expect(page.locator("#devices tbody tr[data-device='ac-a204'] .status-ok")).to_have_text("ok")
