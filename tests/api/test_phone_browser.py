"""The dashboard in a real headless Chromium at a phone's 390 x 844 and a desktop's
1366 x 900, for each role (issue 19): the page never scrolls sideways and every action
button lies inside the viewport once scrolled to; names are shown beside ids; a guard
whose id matches no route is told why the board is empty; device health says when a
device was last seen in words, and a silent device's last seen is its alert's."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.api import ApiServer, create_app
from gateway.auth import hash_token
from gateway.service import Gateway
from rules.alerts import AlertSignal, Severity, SignalAction
from tests.api.conftest import EVENING, NAMES, ROUTES, TOKENS, Publisher, Running, left_on
from tests.support.browser import PHONE, signed_in_pages
from tests.support.gateway_config import local_gateway_config
from warden.clock import ManualClock
from warden.config import BrokerConfig, SiteConfig
from warden.events import DeviceState, DeviceStatus, stable_event_id

DESKTOP = {"width": 1366, "height": 900}
ROLES = ["guard", "maintenance", "manager", "admin"]
LOST_GUARD_TOKEN = "wdn_test-lost-guard-0123456789abcdefghijklmnopq"

#: The test site with display names (Chinese, as the teams' sites have them).
SITE = SiteConfig.model_validate({
    "id": "riverside", "name": "河畔学校", "timezone": "Europe/Berlin",
    "schedules": {"school-day": [{"days": "mon-fri", "hours": "07:30-18:00"}]},
    "buildings": [{"id": "A", "name": "教学楼", "rooms": [
        {"id": "A-204", "name": "科学实验室", "schedule": "school-day", "devices": ["ac-a204"], "device_names": {"ac-a204": "空调"}},
        {"id": "A-GATE", "name": "东门", "devices": ["patrol-reader-1"]},
    ]}],
})  # fmt: skip


@pytest.fixture
def named(broker_config: BrokerConfig, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Running]:
    """A gateway on the named site; one more guard token whose guard walks no route. Its
    clock stands at EVENING + 12 h, or (indirect parameter) at a time the test ticks itself."""
    yield from start_named(broker_config, tmp_path, SITE, getattr(request, "param", None))


def start_named(broker_config: BrokerConfig, tmp_path: Path, site: SiteConfig, at: datetime | None) -> Iterator[Running]:
    """`named`'s gateway on `site` (another test module passes a zh-CN copy of SITE)."""
    tokens = [{"name": NAMES[role], "role": role, "sha256": hash_token(secret)} for role, secret in TOKENS.items()]
    tokens[0]["guard"] = "guard-lee"
    tokens.append({"name": "guard-new-phone", "role": "guard", "guard": "guard-new", "sha256": hash_token(LOST_GUARD_TOKEN)})
    config = local_gateway_config(
        broker_config, tmp_path, api={"host": "127.0.0.1", "port": 0, "tokens": tokens},
        rules={"ac_after_hours": {"standby_watts": 60, "grace_minutes": 15}, "deadman": {"enabled": False},
               "patrol": {"routes": [{**ROUTES[0], "name": "夜间巡逻", "checkpoints": [{"tag": "cp-gate", "name": "东门岗"}, "cp-hall"]},
                                     ROUTES[1]]}},
    )  # fmt: skip
    gateway = Gateway(config, site, ManualClock(at or EVENING + timedelta(hours=12)), **({"tick_every": None} if at else {}))
    gateway.start()
    assert gateway.subscribed.wait(10), "gateway did not subscribe"
    api = ApiServer(create_app(gateway), "127.0.0.1", 0)
    api.start()
    server = Running(gateway, api)
    yield server
    server.api.stop()
    server.gateway.stop()


@pytest.fixture
def browser(named: Running) -> Iterator[Callable[..., Any]]:
    """browser(secret, viewport) -> a page of a new context, signed in with `secret`."""
    with signed_in_pages(named.url) as open_page:
        yield open_page


def assert_fits(page: Any) -> int:
    """No sideways scrolling, and every visible button (and button-like link) wholly inside
    the viewport once scrolled to. Returns how many were checked."""
    size = page.viewport_size
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= size["width"], f"the page is {width} px wide in a {size['width']} px viewport"
    buttons = page.locator("button:visible, td.actions a:visible")
    for index in range(buttons.count()):
        button = buttons.nth(index)
        button.scroll_into_view_if_needed()
        box = button.bounding_box()
        label = button.inner_text()
        assert box is not None, label
        assert 0 <= box["x"] and box["x"] + box["width"] <= size["width"], f"{label!r} sticks out sideways: {box}"
        assert 0 <= box["y"] and box["y"] + box["height"] <= size["height"], f"{label!r} outside the viewport: {box}"
    return buttons.count()


def forced_door(publisher: Publisher) -> None:
    """A door alert: the guard's post sees it (doors), everyone else too."""
    from warden.events import DoorAction, DoorEvent

    at = EVENING + timedelta(minutes=40)
    publisher.events(DoorEvent(id=stable_event_id("riverside", "patrol-reader-1", "door", at.isoformat()), site="riverside",
                               device="patrol-reader-1", event_time=at, action=DoorAction.FORCED, door="gate-main"))  # fmt: skip


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390x844", "1366x900"])
@pytest.mark.parametrize("role", ROLES)
def test_every_action_button_is_inside_the_viewport(named: Running, publisher: Publisher, browser: Any, role: str, viewport: dict[str, int]) -> None:
    from playwright.sync_api import expect

    left_on(publisher, named.gateway)  # an ac_after_hours alert in 科学实验室
    forced_door(publisher)
    assert named.gateway.wait_until(lambda: len(named.gateway.store.alerts_live()) == 2, timeout=10)
    page = browser(TOKENS[role], viewport)
    expect(page.locator("#who-name")).to_contain_text(NAMES[role])
    if role == "guard":
        expect(page.locator("#alerts tbody tr")).to_have_count(1)  # the door alert of its post
        expect(page.locator("#alerts tbody tr").get_by_role("button", name="Acknowledge")).to_be_visible()
    else:
        expect(page.locator("#alerts tbody tr")).to_have_count(2)
        row = page.locator("#alerts tbody tr", has_text="A-204")
        expect(row).to_contain_text("科学实验室 (A-204)")  # the name, with the id an integrator needs
        if role != "manager":
            expect(row.get_by_role("button", name="Resolve")).to_be_visible()
        expect(page.locator("#devices tbody tr[data-device='ac-a204']")).to_contain_text("空调")
        expect(page.locator("#devices tbody tr[data-device='ac-a204']")).to_contain_text("科学实验室")
    checked = assert_fits(page)
    assert checked >= 2  # sign out and at least one action


def test_a_guard_without_a_route_is_told_why_the_board_is_empty(named: Running, browser: Any) -> None:
    from playwright.sync_api import expect

    page = browser(LOST_GUARD_TOKEN, PHONE)
    expect(page.locator("#who-name")).to_contain_text("guard-new-phone")
    note = page.locator("#no-rounds")
    expect(note).to_be_visible()
    expect(note).to_contain_text("guard-new")  # the guard id the routes do not name
    expect(note).to_contain_text("rules.patrol.routes")  # what an administrator sets
    expect(page.locator("#stream-status")).not_to_have_text("offline")  # no live stream for a guard: not "offline" for ever
    assert_fits(page)


@pytest.mark.parametrize("named", [EVENING + timedelta(hours=4, minutes=40)], indirect=True)  # 23:40 Berlin
def test_a_guard_sees_route_and_checkpoint_names(named: Running, browser: Any) -> None:
    from playwright.sync_api import expect

    gateway = named.gateway
    for at in (EVENING + timedelta(hours=4), EVENING + timedelta(hours=4, minutes=40)):  # 23:00, then 23:40: the 23:30 round
        gateway.tick(at)
        assert gateway.wait_until(lambda: gateway.last_tick == at, timeout=10)  # noqa: B023 - waited for at once
    assert gateway.wait_until(lambda: bool(gateway.patrol_rounds), timeout=10)
    page = browser(TOKENS["guard"], PHONE)
    board = page.locator("#rounds .round").first
    expect(board).to_contain_text("夜间巡逻")
    expect(board.locator(".cp").first).to_contain_text("东门岗")
    assert_fits(page)


def test_a_silent_device_was_last_seen_when_its_alert_says(named: Running, publisher: Publisher, browser: Any) -> None:
    """The meter's last reading at 19:00 Berlin; heartbeats go on until 22:50; the no-data
    alert says since 19:00. The device list must say 19:00 too, not the heartbeat's 22:50."""
    from playwright.sync_api import expect

    gateway = named.gateway
    last_data = EVENING  # 18:00 UTC = 19:00 Berlin (CET, UTC+1 in November)
    heartbeat = EVENING + timedelta(hours=3, minutes=50)  # 21:50 UTC = 22:50 Berlin
    publisher.events(DeviceStatus(id=stable_event_id("riverside", "ac-a204", "hb", heartbeat.isoformat()), site="riverside",
                                  device="ac-a204", event_time=heartbeat, state=DeviceState.HEARTBEAT))  # fmt: skip
    assert gateway.wait_until(lambda: "ac-a204" in gateway.devices.snapshot(), timeout=10)
    signal = AlertSignal("riverside", "deadman", "ac-a204", SignalAction.RAISE, last_data + timedelta(minutes=15), Severity.WARNING,
                         "No data from device 空调 (ac-a204) in 科学实验室 since 19:00 (expected at least every 15 min)",
                         {"device": "ac-a204", "minutes": 15.0, "last_event": last_data.isoformat()})  # as rules/deadman.py raises it
    gateway.store.commit_batch([], [signal], {})
    [view] = [d for d in named.client("maintenance").get("/api/devices").json() if d["id"] == "ac-a204"]
    assert (view["status"], view["last_seen"], view["last_heard"]) == ("silent", last_data.isoformat(), heartbeat.isoformat())
    # The gateway's clock is EVENING + 12 h (the fixture): 12 h after the last data.
    assert view["last_seen_seconds_ago"] == 12 * 3600
    page = browser(TOKENS["maintenance"], PHONE)
    cell = page.locator("#devices tbody tr[data-device='ac-a204'] td.last-seen")
    expect(cell).to_have_text("12 h ago")
    expect(cell).to_have_attribute("title", "Tue 19:00")  # local time, as the alert's message says it
    expect(page.locator("#devices tbody")).not_to_contain_text("last_seen=")


def test_on_a_phone_device_health_does_not_scroll_sideways(named: Running, publisher: Publisher, browser: Any) -> None:
    """Not the page, and not the device table inside its section either."""
    from playwright.sync_api import expect

    left_on(publisher, named.gateway)
    page = browser(TOKENS["maintenance"], PHONE)
    expect(page.locator("#devices tbody tr[data-device='ac-a204']")).to_be_visible()
    section = page.evaluate("(() => { const s = document.querySelector('#devices-section'); return [s.scrollWidth, s.clientWidth]; })()")
    assert section[0] <= section[1], f"the device table scrolls sideways inside its section: {section}"
    assert_fits(page)
