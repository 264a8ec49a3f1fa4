"""The dashboard of a gateway serving two schools (issue 21), in a real headless Chromium,
in zh-CN, at a phone's 390 x 844 (and a desktop's 1366 x 900): the district's token gets a
site picker and the overview of both schools; picking one scopes every view to it; a
school's token gets no picker and only its own school.

The night and the figures by hand: tests/api/test_sites.py (its module docstring)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import Publisher
from tests.api.test_phone_browser import DESKTOP
from tests.api.test_sites import RIVERSIDE, TOKENS, District, run_the_night, start_district
from tests.support.browser import PHONE, signed_in_pages
from warden.config import BrokerConfig

#: Riverside in Chinese, first: the overview page speaks the first site's language.
RIVERSIDE_ZH = RIVERSIDE.model_copy(update={"name": "河畔学校", "locale": "zh-CN"})


@pytest.fixture
def district(broker_config: BrokerConfig, tmp_path: Path, publisher: Publisher) -> Iterator[District]:
    server = start_district(broker_config, tmp_path, riverside=RIVERSIDE_ZH)
    run_the_night(server, publisher)
    yield server
    server.api.stop()
    server.gateway.stop()


@pytest.fixture
def browser(district: District) -> Iterator[Callable[..., Any]]:
    """browser(who, viewport) -> a page signed in with that token, at "/"."""
    with signed_in_pages(district.api.url) as open_page:
        yield lambda who, viewport: open_page(TOKENS[who], viewport)


def fits(page: Any) -> None:
    """As assert_fits (test_phone_browser.py): nothing scrolls sideways, and every visible button
    lies wholly inside the viewport once scrolled to; scrolled to its middle here, because
    Playwright's scroll-if-needed leaves a button cut by a fraction of a pixel at the lower
    edge where it is (two-line overview rows put one there)."""
    size = page.viewport_size
    assert page.evaluate("document.documentElement.scrollWidth") <= size["width"]
    buttons = page.locator("button:visible, td.actions a:visible")
    for index in range(buttons.count()):
        button = buttons.nth(index)
        button.evaluate("node => node.scrollIntoView({block: 'center'})")
        box = button.bounding_box()
        assert box is not None
        assert 0 <= box["x"] and box["x"] + box["width"] <= size["width"], f"{button.inner_text()!r} sticks out: {box}"
        assert 0 <= box["y"] and box["y"] + box["height"] <= size["height"], f"{button.inner_text()!r} outside: {box}"


def expect_the_nights_overview(river: Any, hill: Any) -> None:
    """The overview's rows of test_sites.py's night in zh-CN, by hand: riverside 1 open warning (cp-hall
    missed); 1.2 kW x 0.5 h = 0.6 kWh at 0.30 EUR = 0.18 EUR; 1 of 2 checkpoints on time; nothing silent.
    Hillside (the view's harbour): a warning (ac-h101 silent) and an info (cp-roof late); no waste; 2 of 3
    on time; 1 silent."""
    from playwright.sync_api import expect

    expect(river.locator("td.alerts")).to_have_text("1 (警告 1)")
    expect(river.locator("td.waste")).to_have_text("0.6 kWh · €0.18")
    expect(river.locator("td.patrols")).to_have_text("2 个巡检点中 1 个准时")
    expect(river.locator("td.silent")).to_have_text("0")
    expect(hill.locator("td.alerts")).to_have_text("2 (警告 1 · 提示 1)")
    expect(hill.locator("td.waste")).to_have_text("0 kWh · ¥0.00")
    expect(hill.locator("td.patrols")).to_have_text("3 个巡检点中 2 个准时")
    expect(hill.locator("td.silent")).to_have_text("1")


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390x844", "1366x900"])
def test_the_district_sees_the_overview_and_picks_a_school(browser: Any, viewport: dict[str, int]) -> None:
    from playwright.sync_api import expect

    page = browser("district", viewport)
    picker = page.locator("#site-picker")
    expect(page.locator("#site-picker-label")).to_be_visible()
    expect(picker.locator("option")).to_have_text(["全部校区", "河畔学校", "山坡中学"])
    expect(page.locator("#overview-section h2")).to_have_text("全部校区")
    rows = page.locator("#overview tbody tr")
    expect(rows).to_have_count(2)
    river, hill = rows.nth(0), rows.nth(1)
    expect(river.locator("td.site")).to_have_text("河畔学校")
    expect_the_nights_overview(river, hill)
    # The overview lists both schools' open alerts, each saying whose; a school's own views wait for a pick.
    expect(page.locator("#alerts tbody tr")).to_have_count(3)
    expect(page.locator("#alerts tbody tr", has_text="ac-h101")).to_contain_text("山坡中学 · deadman")
    expect(page.locator("#devices-section")).to_be_hidden()
    expect(page.locator("#patrols-section")).to_be_hidden()
    fits(page)
    # Picking hillside: the page is hillside's, every view scoped to it.
    picker.select_option("hillside")
    page.wait_for_url("**/?site=hillside")
    expect(page.locator("h1")).to_have_text("山坡中学")
    expect(page.locator("#site-picker")).to_have_value("hillside")
    expect(page.locator("#overview-section")).to_be_hidden()
    expect(page.locator("#devices tbody tr")).to_have_count(2)
    expect(page.locator("#devices tbody tr[data-device='ac-h101'] td.status-silent")).to_have_text("无数据")
    expect(page.locator("#alerts tbody tr")).to_have_count(2)
    # At 07:00 the board still shows the night just ended: hillside's east round, cp-roof late.
    expect(page.locator("#rounds .round")).to_have_count(1)
    expect(page.locator("#rounds .round .cp")).to_have_class(["cp cp-visited", "cp cp-visited", "cp cp-late"])
    expect(page.locator("#energy tbody tr")).to_have_count(0)
    assert "site=hillside" in (page.locator("#reports a").first.get_attribute("href") or "")
    fits(page)


def test_a_school_s_token_gets_no_picker_and_only_its_school(browser: Any) -> None:
    from playwright.sync_api import expect

    page = browser("hillside", PHONE)
    page.wait_for_url("**/?site=hillside")  # "/" shows the first site: the page turns to the token's own
    expect(page.locator("h1")).to_have_text("山坡中学")
    expect(page.locator("#devices tbody tr")).to_have_count(2)
    expect(page.locator("#site-picker-label")).to_be_hidden()
    expect(page.locator("#overview-section")).to_be_hidden()
    expect(page.locator("#alerts tbody tr")).to_have_count(2)
    fits(page)
    # The work-order page too turns to the token's school: its rooms, its orders.
    page.goto(page.url.split("/?")[0] + "/work-orders")
    page.wait_for_url("**/work-orders?site=hillside")
    expect(page.locator("body")).to_have_attribute("data-site", "hillside")
    expect(page.locator("#rooms option[value='H-101']")).to_have_count(1)
