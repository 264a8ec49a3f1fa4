"""The dashboard's device view of a cut-off campus (issue 21), in a real headless Chromium at
a phone's 390 x 844: every device of the campus says the campus link is down since when, in
the site's language (Hillside zh-CN, Riverside en); a campus whose link is up says nothing.

The facts: tests/api/test_sites_links.py's gateway; Hillside's bridge says down at 22:00 UTC
and Riverside's at 22:10 UTC on Tuesday 17 November 2026, i.e. 23:00 and 23:10 in Berlin
(UTC+1), the schools' zone. The dashboard writes the weekday and the local time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.api.conftest import Publisher
from tests.api.test_sites import TOKENS, District
from tests.api.test_sites_links import at, bridge, district  # noqa: F401 (district: the fixture)
from tests.support.browser import PHONE, signed_in_pages


@pytest.fixture
def phone(district: District) -> Iterator[Callable[[str], Any]]:  # noqa: F811 (the fixture imported above)
    """phone(who) -> a phone-sized page signed in with that school's token (it turns to its school)."""
    with signed_in_pages(district.api.url) as open_page:
        yield lambda who: open_page(TOKENS[who], PHONE)


def test_each_campus_s_devices_say_its_link_is_down_in_its_language(
    district: District, publisher: Publisher, phone: Callable[[str], Any]  # noqa: F811
) -> None:
    from playwright.sync_api import expect

    bridge(district, publisher, "hillside", False, at(22, 0))
    bridge(district, publisher, "riverside", False, at(22, 10))
    page = phone("hillside")
    page.wait_for_url("**/?site=hillside")
    rows = page.locator("#devices tbody tr")
    expect(rows).to_have_count(2)  # ac-h101 and patrol-reader-h, as its site file lists
    for device in ("ac-h101", "patrol-reader-h"):
        marker = page.locator(f"#devices tbody tr[data-device='{device}'] .link-down")
        expect(marker).to_be_visible()
        expect(marker).to_have_text("校区链路自 周二23:00 起中断")  # 22:00 UTC + 1 h, a Tuesday (zh writes no space)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # nothing scrolls sideways

    english = phone("riverside")
    expect(english.locator("h1")).to_have_text("Riverside School")  # the first site: "/" is its page already
    expect(english.locator("#devices tbody tr")).to_have_count(3)
    expect(english.locator("#devices tbody tr .link-down")).to_have_text(["campus link down since Tue 23:10"] * 3)

    bridge(district, publisher, "riverside", True, at(22, 30))
    english.reload()
    expect(english.locator("#devices tbody tr")).to_have_count(3)
    expect(english.locator("#devices tbody tr .link-down")).to_have_count(0)  # up again: nothing to say
