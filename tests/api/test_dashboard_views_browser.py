"""The dashboard's issue-19 views in a real headless Chromium, at 390 x 844 and 1366 x 900,
in English and zh-CN: the alert history narrows to the rows its filters select (computed by
hand below), a device shows a chart of its hourly means, the energy view shows today's and
this week's waste by building, and the report archive links to each archived report."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from gateway.report_schedule import Made, ReportScheduler, ReportSendConfig, connections
from rules.alerts import AlertSignal, Severity, SignalAction
from tests.api.conftest import EVENING, TOKENS, Publisher, Running, power
from tests.api.test_phone_browser import DESKTOP, PHONE, SITE, assert_fits, browser, start_named  # noqa: F401 - browser: a fixture
from warden.config import BrokerConfig, SiteConfig

VIEWPORTS = pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390x844", "1366x900"])
ZH_SITE = SiteConfig.model_validate({**SITE.model_dump(exclude_unset=True), "locale": "zh-CN"})
UTC = timezone.utc


@pytest.fixture(params=["en", "zh-CN"])
def named(broker_config: BrokerConfig, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Running]:
    """The phone tests' named site, in English and in zh-CN; clock at EVENING + 12 h
    (2026-11-18 06:00 UTC, Wednesday 07:00 in Berlin)."""
    yield from start_named(broker_config, tmp_path, SITE if request.param == "en" else ZH_SITE, None)


def _zh(running: Running) -> bool:
    return running.gateway.site.locale == "zh-CN"


def signal(rule: str, subject: str, action: SignalAction, at: datetime, severity: Severity = Severity.WARNING,
           **details: float | str) -> AlertSignal:
    return AlertSignal("riverside", rule, subject, action, at, severity, f"{rule} {subject}", dict(details))


# --------------------------------------------------------------------------- alert history

#: Three alerts. Berlin is UTC+1 in November.
#: A: ac_after_hours on room A-204, opened 2026-11-16 23:30 UTC (= 17 Nov 00:30 Berlin), open.
#: B: door_forced (critical) on door gate-main, whose reader patrol-reader-1 is in A-GATE,
#:    opened 2026-11-16 22:30 UTC (= 16 Nov 23:30 Berlin), open.
#: C: deadman on device ac-a204 (listed in A-204), 2026-11-15 09:00-11:00 UTC, resolved.
A_AT = datetime(2026, 11, 16, 23, 30, tzinfo=UTC)
B_AT = datetime(2026, 11, 16, 22, 30, tzinfo=UTC)
C_AT, C_END = datetime(2026, 11, 15, 9, 0, tzinfo=UTC), datetime(2026, 11, 15, 11, 0, tzinfo=UTC)


def three_alerts(running: Running) -> None:
    running.gateway.store.commit_batch([], [
        signal("ac_after_hours", "A-204", SignalAction.RAISE, A_AT, building="A", room="A-204"),
        signal("door_forced", "gate-main", SignalAction.RAISE, B_AT, Severity.CRITICAL, device="patrol-reader-1", door="gate-main"),
        signal("deadman", "ac-a204", SignalAction.RAISE, C_AT, device="ac-a204"),
    ], {})  # fmt: skip
    running.gateway.store.commit_batch([], [signal("deadman", "ac-a204", SignalAction.RESOLVE, C_END, device="ac-a204")], {})


def shown(page: Any) -> list[str]:
    """The subjects of the history's rows, top to bottom."""
    return [text.split(" · ")[-1] for text in page.locator("#history tbody tr small").all_inner_texts()]


def filter_by(page: Any, **fields: str) -> None:
    from playwright.sync_api import expect

    form = page.locator("#history-filters")
    form.locator("button[type=reset]").click()
    expect(page.locator("#history tbody tr")).to_have_count(3)
    for name, value in fields.items():
        field = form.locator(f"[name={name}]")
        if name in ("since", "until"):
            field.fill(value)
        else:
            field.select_option(value)
    form.locator("button[type=submit]").click()


@VIEWPORTS
def test_the_alert_history_narrows_to_the_filtered_rows(named: Running, browser: Any, viewport: dict[str, int]) -> None:
    from playwright.sync_api import expect

    three_alerts(named)
    page = browser(TOKENS["maintenance"], viewport)
    rows = page.locator("#history tbody tr")
    expect(rows).to_have_count(3)
    assert shown(page) == ["A-204", "gate-main", "ac-a204"]  # newest first: A (23:30), B (22:30), C (15 Nov)
    expect(page.locator("#history tbody tr[data-state='resolved'] .state")).to_have_text("已解决" if _zh(named) else "resolved")
    assert_fits(page)
    cases: list[tuple[dict[str, str], list[str]]] = [
        ({"room": "A-204"}, ["A-204", "ac-a204"]),  # A by subject, C by its device listed in A-204
        ({"room": "A-GATE"}, ["gate-main"]),  # B by its reader's room
        ({"severity": "critical"}, ["gate-main"]),
        ({"state": "resolved"}, ["ac-a204"]),
        ({"rule": "deadman", "room": "A-204"}, ["ac-a204"]),
        # To 16 Nov: until 17 Nov 00:00 Berlin = 16 Nov 23:00 UTC; A opened 23:30 UTC is after it,
        # B (22:30 UTC) and C before it. (Midnight UTC instead of Berlin would let A in.)
        ({"until": "2026-11-16"}, ["gate-main", "ac-a204"]),
        # From 17 Nov: since 16 Nov 23:00 UTC; C ended on 15 Nov, A and B are still open.
        ({"since": "2026-11-17"}, ["A-204", "gate-main"]),
    ]
    for fields, expected in cases:
        filter_by(page, **fields)
        expect(rows).to_have_count(len(expected))
        assert shown(page) == expected, fields
    assert_fits(page)


def test_filters_that_match_nothing_say_so(named: Running, browser: Any) -> None:
    from playwright.sync_api import expect

    three_alerts(named)
    page = browser(TOKENS["maintenance"], PHONE)
    expect(page.locator("#history tbody tr")).to_have_count(3)
    filter_by(page, severity="info")  # all three are warning or critical
    expect(page.locator("#history tbody tr")).to_have_count(0)
    expect(page.locator("#no-history")).to_be_visible()
    expect(page.locator("#no-history")).to_have_text("没有符合筛选条件的告警。" if _zh(named) else "No alert matches these filters.")


# --------------------------------------------------------------------------- devices


@VIEWPORTS
def test_a_device_shows_a_chart_of_its_hourly_means(named: Running, publisher: Publisher, browser: Any, viewport: dict[str, int]) -> None:
    from playwright.sync_api import expect

    gateway = named.gateway
    readings = [power(0, 300), power(10, 500), power(60, 1200), power(70, 1000)]  # 18:00 UTC hour, then 19:00 UTC hour
    before = gateway.counts().get("events_stored_reading", 0)
    publisher.events(*readings)
    assert gateway.wait_until(lambda: gateway.counts().get("events_stored_reading", 0) >= before + 4, timeout=10)
    page = browser(TOKENS["maintenance"], viewport)
    row = page.locator("#devices tbody tr[data-device='ac-a204']")
    chart = row.locator("svg.spark")
    # Hourly means: 18:00 (300 + 500) / 2 = 400 W; 19:00 (1200 + 1000) / 2 = 1100 W. Both within
    # the 24 h before the gateway's clock (06:00 UTC next day): two points, the highest 1100 W.
    expect(chart).to_have_attribute("data-points", "2")
    expect(row.locator(".spark-max")).to_have_text(("最大" if _zh(named) else "max") + " 1,100 W")
    expect(chart).to_have_attribute("aria-label", "power，每小时平均：400 至 1,100 W" if _zh(named) else "power, hourly mean: 400 to 1,100 W")
    # The device without readings says so rather than drawing nothing.
    expect(page.locator("#devices tbody tr[data-device='patrol-reader-1'] td.trend")).to_have_text("无数据" if _zh(named) else "no data")
    # Last seen in words: the last reading 19:10 UTC, the clock 06:00 UTC: 10 h 50 min -> "10 h ago" (>= 10 h: hours only).
    expect(row.locator("td.last-seen")).to_have_text("10 小时前" if _zh(named) else "10 h ago")
    assert_fits(page)


# --------------------------------------------------------------------------- energy

#: Today (Berlin) began 18 Nov 00:00 = 17 Nov 23:00 UTC; the week on Monday 16 Nov 00:00 = 15 Nov 23:00 UTC.
#: E1 in A-204: 17 Nov 22:00 to 18 Nov 01:00 UTC (3 h), 3.0 kWh, 0.90: today 2 of its 3 h -> 2.0 kWh, 0.60;
#:    this week all of it.
#: E2 in A-GATE: 16 Nov 18:00-20:00 UTC, 1.5 kWh, 0.45: this week only.
#: Building A this week: 3.0 + 1.5 = 4.5 kWh, 0.90 + 0.45 = 1.35.
E1 = {"building": "A", "room": "A-204", "wasted_kwh": 3.0, "cost": 0.9,
      "since": "2026-11-17T22:00:00+00:00", "until": "2026-11-18T01:00:00+00:00"}
E2 = {"building": "A", "room": "A-GATE", "wasted_kwh": 1.5, "cost": 0.45,
      "since": "2026-11-16T18:00:00+00:00", "until": "2026-11-16T20:00:00+00:00"}


@VIEWPORTS
def test_the_energy_view_shows_today_and_this_week_by_building(named: Running, browser: Any, viewport: dict[str, int]) -> None:
    from playwright.sync_api import expect

    named.gateway.store.commit_batch([], [
        signal("ac_after_hours", "A-204", SignalAction.RAISE, datetime(2026, 11, 17, 22, 15, tzinfo=UTC), **E1),
        signal("lights_after_hours", "A-GATE", SignalAction.RAISE, datetime(2026, 11, 16, 18, 15, tzinfo=UTC), **E2),
    ], {})  # fmt: skip
    data = named.client("manager").get("/api/energy/waste").json()
    assert [(b["building"], b["kwh"], b["cost"]) for b in data["today"]["by_building"]] == [("A", 2.0, 0.6)]
    assert [(b["building"], b["kwh"], b["cost"]) for b in data["week"]["by_building"]] == [("A", 4.5, 1.35)]
    page = browser(TOKENS["manager"], viewport)
    row = page.locator("#energy tbody tr[data-building='A']")
    expect(row.locator("td").first).to_have_text("教学楼 (A)")
    currency = "¥" if _zh(named) else "€"  # the site's tariff: CNY for zh-CN, EUR otherwise
    expect(row.locator("td.today")).to_have_text(f"2 kWh · {currency}0.60")
    expect(row.locator("td.week")).to_have_text(f"4.5 kWh · {currency}1.35")
    assert_fits(page)


# --------------------------------------------------------------------------- report archive


def archive_two(running: Running, tmp_path: Path) -> None:
    """A daily and a monthly report archived through the real scheduler."""

    def make(kind: str, label: str) -> Made:
        folder = tmp_path / "reports" / label
        folder.mkdir(parents=True)
        page = folder / ("report.html" if kind == "daily" else f"month-{label}.html")
        page.write_text(f"<html><body><h1>archived {kind} {label}</h1></body></html>", encoding="utf-8")
        return Made(kind, label, folder, page.read_text(encoding="utf-8"), {})

    scheduler = ReportScheduler(connections(running.gateway.config.state_db), ReportSendConfig(), "riverside", make, {})
    scheduler.run_due([("monthly", "2026-10")], EVENING)
    scheduler.run_due([("daily", "2026-11-17")], EVENING + timedelta(hours=14))


@VIEWPORTS
def test_the_report_archive_lists_and_opens_each_report(named: Running, browser: Any, tmp_path: Path, viewport: dict[str, int]) -> None:
    from playwright.sync_api import expect

    archive_two(named, tmp_path)
    page = browser(TOKENS["manager"], viewport)
    links = page.locator("#archive li a")
    expect(links).to_have_count(2)
    daily = "日报" if _zh(named) else "daily report"
    monthly = "月报" if _zh(named) else "monthly report"
    expect(links).to_have_text([f"{daily} 2026-11-17", f"{monthly} 2026-10"])  # newest first
    assert links.first.get_attribute("href") == "/api/reports/archive/daily/2026-11-17"
    assert_fits(page)
    page.goto(named.url + str(links.nth(1).get_attribute("href")))  # the session cookie opens it
    expect(page.locator("h1")).to_have_text("archived monthly 2026-10")
