"""Work orders in a real headless Chromium at phone size (390 x 844, each person on their
own phone: a browser context each): a guard reports a fault with a photo, maintenance takes
it and hands it over, the plumber finishes it, the guard closes and rates it; and a leak
alert becomes a work order in one tap. Every button tapped must be inside the viewport.
On a zh-CN site the page speaks Chinese: its words, states and buttons, rooms by name, dates."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import NAMES, TOKENS, Running, gateway_config, start
from tests.api.test_locale import ZH_SITE
from tests.api.test_workorders import GUARD, NOW, PLUMBER, PLUMBER_TOKEN, desk, leak, png  # noqa: F401 - fixtures
from tests.support.browser import PHONE, signed_in_pages
from warden.config import BrokerConfig

DESKTOP = {"width": 1280, "height": 800}
SECRETS = {**TOKENS, PLUMBER: PLUMBER_TOKEN}


@pytest.fixture
def phone(desk: Running) -> Iterator[Callable[[str], Any]]:  # noqa: F811
    """phone(who, path, viewport) -> a page on a new context (a phone by default), signed in as `who` on `path`."""
    yield from _phones(desk)


@pytest.fixture
def zh_desk(broker_config: BrokerConfig, tmp_path: Path) -> Iterator[Running]:
    """The API tests' gateway on the zh-CN site (rooms with Chinese names), clock fixed at NOW."""
    server = start(gateway_config(broker_config, tmp_path), NOW, site=ZH_SITE)
    yield server
    server.api.stop()
    server.gateway.stop()


@pytest.fixture
def zh_phone(zh_desk: Running) -> Iterator[Callable[[str], Any]]:
    """phone(), on the zh-CN site's gateway."""
    yield from _phones(zh_desk)


def _phones(desk: Running) -> Iterator[Callable[[str], Any]]:  # noqa: F811
    with signed_in_pages(desk.url) as open_page:
        yield lambda who, path="/work-orders", viewport=PHONE: open_page(SECRETS[who], viewport, path)


def tap(page: Any, locator: Any) -> None:
    """Click `locator` after checking it lies wholly inside the viewport once scrolled to,
    and that the page does not scroll sideways."""
    inside(page, locator)
    locator.click()


def inside(page: Any, locator: Any) -> None:
    """`locator` lies wholly inside the viewport once scrolled to; the page does not scroll sideways."""
    size = page.viewport_size
    locator.scroll_into_view_if_needed()
    box = locator.bounding_box()
    assert box is not None, "not rendered"
    assert 0 <= box["x"] and box["x"] + box["width"] <= size["width"], f"sticks out sideways: {box}"
    assert 0 <= box["y"] and box["y"] + box["height"] <= size["height"], f"outside the viewport: {box}"
    assert page.evaluate("document.documentElement.scrollWidth") <= size["width"], "the page scrolls sideways"


def test_a_fault_reported_from_a_phone_is_taken_handed_over_done_closed_and_rated(desk: Running, phone) -> None:  # noqa: F811
    from playwright.sync_api import expect

    guard = phone("guard")
    expect(guard.locator("#who-name")).to_have_text(f"{GUARD} (guard)")
    tap(guard, guard.locator("#tab-new"))
    guard.fill("#new-room", "A-204")
    guard.fill("#new-text", "Tap in the washroom drips all night")
    guard.select_option("#new-category", "plumbing")
    image = png(8, 8)
    guard.set_input_files("#new-photo", {"name": "tap.png", "mimeType": "image/png", "buffer": image})
    tap(guard, guard.locator("#report"))
    expect(guard.locator("#detail-title")).to_contain_text("A-204")
    expect(guard.locator("#detail-title .wo-state")).to_have_text("new")
    photo = guard.locator("#detail-photos img")
    expect(photo).to_have_count(1)
    guard.wait_for_function("document.querySelector('#detail-photos img').naturalWidth === 8")  # 8 px wide, as made
    [order] = desk.gateway.work_orders.search()
    assert (order.requested_by, order.category, order.state) == (GUARD, "plumbing", "new")

    maint = phone("maintenance")
    row = maint.locator(f"#orders li[data-order-id='{order.id}'] a")
    expect(row).to_contain_text("Tap in the washroom drips all night")
    tap(maint, row)
    tap(maint, maint.get_by_role("button", name="Take"))
    expect(maint.locator("#detail-title .wo-state")).to_have_text("taken")
    maint.select_option("#hand-over-to", PLUMBER)
    maint.fill("#hand-over-note", "plumber has the washers")
    tap(maint, maint.locator("#hand-over-button"))
    expect(maint.locator("#detail-facts")).to_contain_text(f"Owner{PLUMBER}")
    expect(maint.get_by_role("button", name="Done")).to_have_count(0)  # no longer theirs

    plumber = phone(PLUMBER, f"/work-orders#{order.id}")
    expect(plumber.locator("#detail-title .wo-state")).to_have_text("taken")
    tap(plumber, plumber.get_by_role("button", name="Start work"))
    expect(plumber.locator("#detail-title .wo-state")).to_have_text("in progress")
    tap(plumber, plumber.get_by_role("button", name="Done"))
    expect(plumber.locator("#detail-title .wo-state")).to_have_text("done")

    guard.reload()
    expect(guard.locator("#closing")).to_be_visible()
    guard.select_option("#rating", "4")
    guard.fill("#rating-comment", "fixed the same day")
    tap(guard, guard.locator("#close-button"))
    expect(guard.locator("#detail-title .wo-state")).to_have_text("closed")
    expect(guard.locator("#detail-facts")).to_contain_text("4/5 - fixed the same day")

    history = desk.gateway.work_orders.history(order.id)
    assert [(h["action"], h["who"]) for h in history] == [
        ("created", GUARD), ("photo", GUARD), ("take", NAMES["maintenance"]), ("hand_over", NAMES["maintenance"]),
        ("start", PLUMBER), ("done", PLUMBER), ("close", GUARD)]
    closed = desk.gateway.work_orders.get(order.id)
    assert (closed.state, closed.owner, closed.rating, closed.rating_comment) == ("closed", PLUMBER, 4, "fixed the same day")


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_a_leak_alert_becomes_a_work_order_in_one_tap(desk: Running, phone, viewport: dict[str, int]) -> None:  # noqa: F811
    from playwright.sync_api import expect

    alert_id = leak(desk)
    maint = phone("maintenance", "/", viewport)
    row = maint.locator(f"#alerts tbody tr[data-alert-id='{alert_id}']")
    expect(row).to_contain_text("Flow 18 L/min")
    tap(maint, row.get_by_role("button", name="Work order"))
    expect(maint.locator("#detail-title .wo-state")).to_have_text("new")
    expect(maint.locator("#detail-facts")).to_contain_text(f"From alert#{alert_id}")
    expect(maint.locator("#detail-facts")).to_contain_text("plumbing, urgent")  # from water_burst, critical
    order = desk.gateway.work_orders.for_alert(alert_id)
    assert order is not None and order.room == "A-204"  # ac-a204's room in the site
    tap(maint, maint.get_by_role("button", name="Take"))
    expect(maint.locator("#detail-title .wo-state")).to_have_text("taken")
    maint.goto(desk.url + "/")
    link = maint.locator(f"#alerts tbody tr[data-alert-id='{alert_id}'] a.work-order")
    expect(link).to_have_text(f"Work order #{order.id}")


def test_on_a_zh_cn_site_the_page_speaks_chinese_on_a_phone(zh_desk: Running, zh_phone) -> None:
    """The expected words are the zh_CN catalogue's entries for the page (typed from the .po)."""
    from playwright.sync_api import expect

    guard = zh_phone("guard")
    expect(guard.locator("#who-name")).to_have_text(f"{GUARD} (guard)")
    assert guard.evaluate("document.documentElement.lang") == "zh-CN"
    expect(guard.locator("h1")).to_have_text("工单")
    expect(guard.locator("#tab-list")).to_have_text("列表")
    expect(guard.locator("#tab-new")).to_have_text("报修")
    tap(guard, guard.locator("#tab-new"))
    form = guard.locator("#new-order")
    for label in ("房间或地点", "故障描述", "类别", "优先级", "照片（可选"):
        expect(form.locator("label", has_text=label)).to_have_count(1)
    expect(guard.locator("#new-category option:checked")).to_have_text("综合")  # general, the default
    expect(guard.locator("#new-priority option:checked")).to_have_text("普通")  # normal, the default
    expect(guard.locator("#new-category option[value=plumbing]")).to_have_text("水暖")
    guard.fill("#new-room", "A-204")
    guard.fill("#new-text", "洗手间水龙头整夜滴水")
    guard.select_option("#new-category", "plumbing")
    expect(guard.locator("#report")).to_have_text("提交")
    tap(guard, guard.locator("#report"))
    expect(guard.locator("#detail-title")).to_contain_text("科学实验室 (A-204)")  # the room's name in ZH_SITE
    expect(guard.locator("#detail-title .wo-state")).to_have_text("待接单")
    [order] = zh_desk.gateway.work_orders.search()
    assert (order.room, order.category, order.priority, order.state) == ("A-204", "plumbing", "normal", "new")  # ids, not words
    facts = guard.locator("#detail-facts")
    expect(facts).to_contain_text("类别水暖, 普通")
    # Reported at NOW, 06:00 UTC on Wed 18 Nov 2026 = 07:00 in Berlin (CET, UTC+1); a normal
    # plumbing order is to be taken within the default 2 h: by 09:00, still Wednesday (周三).
    reported = facts.locator("dt:text-is('报修') + dd")
    expect(reported).to_contain_text("周三")
    expect(reported).to_contain_text("07:00")
    take_by = facts.locator("dt:text-is('接单期限') + dd")
    expect(take_by).to_contain_text("周三")
    expect(take_by).to_contain_text("09:00")

    maint = zh_phone("maintenance")
    row = maint.locator(f"#orders li[data-order-id='{order.id}'] a")
    expect(row).to_contain_text("待接单")
    expect(row).to_contain_text("水暖 · 普通")
    tap(maint, row)
    tap(maint, maint.get_by_role("button", name="接单"))
    expect(maint.locator("#detail-title .wo-state")).to_have_text("已接单")
    actions = maint.locator("#detail-actions button")
    expect(actions).to_have_text(["开始维修", "等待配件", "完成"])  # start, wait, done: what an owner may do when taken
    for n in range(actions.count()):
        inside(maint, actions.nth(n))
    expect(maint.locator("#hand-over-button")).to_have_text("转交")
    tap(maint, maint.get_by_role("button", name="开始维修"))
    expect(maint.locator("#detail-title .wo-state")).to_have_text("维修中")
    tap(maint, maint.get_by_role("button", name="完成"))
    expect(maint.locator("#detail-title .wo-state")).to_have_text("已完成")
    expect(maint.locator("#detail-history")).to_contain_text("开始维修")

    guard.reload()
    expect(guard.locator("#detail-title .wo-state")).to_have_text("已完成")
    reopen = guard.get_by_role("button", name="重新打开")
    expect(guard.locator("#detail-actions button")).to_have_text(["重新打开"])  # the requester's one step once done
    inside(guard, reopen)
    close = guard.locator("#close-button")
    expect(close).to_have_text("关闭并评价")
    guard.select_option("#rating", "5")
    expect(guard.locator("#rating option:checked")).to_have_text("5 - 非常满意")
    tap(guard, close)
    expect(guard.locator("#detail-title .wo-state")).to_have_text("已关闭")
    assert zh_desk.gateway.work_orders.get(order.id).state == "closed"
