"""The monthly report and statistics over HTTP, and the daily and monthly reports made on
their schedule: archived, browsable, sent by webhook and by mail with the HTML inline.
Readings go through the real pipeline (Mosquitto, the gateway's batches)."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import TOKENS, Publisher, Running, gateway_config, start
from tests.support.receivers import SmtpReceiver, WebhookReceiver
from warden.clock import ManualClock
from warden.config import BrokerConfig
from warden.events import Reading, stable_event_id

#: 2026-11-17 08:00 Berlin (CET, UTC+1): the daily report's day starts here.
DAY_START = datetime(2026, 11, 17, 7, 0, tzinfo=timezone.utc)


def register(k: int) -> Reading:
    """ac-a204's import register every 15 min from DAY_START: 500 kWh + 0.5 kWh a reading."""
    at = DAY_START + k * timedelta(minutes=15)
    return Reading(id=stable_event_id("riverside", "ac-a204", "import_energy", at.isoformat()), site="riverside",
                   device="ac-a204", event_time=at, quantity="energy", value=500 + 0.5 * k, unit="kWh",
                   cumulative=True, channel="import_energy")


def publish_day(running: Running, broker: BrokerConfig) -> None:
    """97 readings, k = 0..96 (the last at 2026-11-18 07:00 UTC = 08:00 local), in batches."""
    publisher = Publisher(broker)
    try:
        for first in range(0, 97, 20):
            publisher.events(*(register(k) for k in range(first, min(first + 20, 97))))
        assert running.gateway.wait_until(lambda: running.gateway.events_stored >= 97, timeout=10)
    finally:
        publisher.close()


def test_the_monthly_csv_gives_each_meters_register_difference(running: Running, broker_config: BrokerConfig) -> None:
    publish_day(running, broker_config)
    with running.client("manager") as client:
        response = client.get("/api/reports/month/2026-11", params={"format": "csv"}).raise_for_status()
        html = client.get("/api/reports/month/2026-11").raise_for_status().text
        bad = client.get("/api/reports/month/2026-13")
    [row] = list(csv.DictReader(io.StringIO(response.text)))
    # Nothing before the month: start is the first reading, 500; end the last, k = 96: 500 + 48 = 548.
    assert (row["device"], row["channel"], row["start_reading"], row["end_reading"], row["consumption"]) == (
        "ac-a204", "import_energy", "500.0", "548.0", "48.0")
    assert "attachment" in response.headers["content-disposition"]
    assert "ac-a204" in html and "monthly report 2026-11" in html
    assert bad.status_code == 422 and "YYYY-MM" in bad.json()["detail"]


def test_statistics_by_hour_and_by_local_day(running: Running, broker_config: BrokerConfig) -> None:
    publish_day(running, broker_config)
    with running.client("maintenance") as client:
        params = {"since": "2026-11-17T07:00:00Z", "until": "2026-11-17T09:00:00Z", "device": "ac-a204"}
        hours = client.get("/api/statistics", params=params).raise_for_status().json()
        days = client.get("/api/statistics", params={**params, "until": "2026-11-18T08:00:00Z", "period": "day"}).json()
        naive = client.get("/api/statistics", params={**params, "since": "2026-11-17T07:00:00"})
    # 07:00 UTC hour: k = 0..3 -> first 500, last 501.5; 08:00 hour: k = 4..7 -> 502 .. 503.5.
    assert [(h["hour"], h["n"], h["first"], h["last"]) for h in hours] == [
        ("2026-11-17T07:00:00+00:00", 4, 500.0, 501.5), ("2026-11-17T08:00:00+00:00", 4, 502.0, 503.5)]
    # Local days: 2026-11-17 from 08:00 (07:00 UTC) to midnight (23:00 UTC) = 16 h, 64 readings;
    # 2026-11-18 from 00:00 local (23:00 UTC) through the hour of 07:00 UTC = 9 h, k = 64..96: 33 readings.
    assert [(d["day"], d["hours"], d["n"]) for d in days] == [("2026-11-17", 16, 64), ("2026-11-18", 9, 33)]
    assert naive.status_code == 422


def test_daily_and_monthly_reports_are_made_archived_and_sent_on_schedule(broker_config: BrokerConfig, tmp_path: Path) -> None:
    hooks, mail = WebhookReceiver(), SmtpReceiver()
    config = gateway_config(broker_config, tmp_path)
    config = config.model_validate({
        **config.model_dump(mode="json", exclude={"api"}), "api": config.api.model_dump(mode="json"),
        "alerts": {"sinks": {
            "office-hook": {"type": "webhook", "url": hooks.url("/reports")},
            "office-mail": {"type": "smtp", "host": "127.0.0.1", "port": mail.port, "sender": "warden@example.org",
                            "to": ["facilities@example.org"]},
        }},
        "report": {"send": {"daily_at": "08:05", "monthly_at": "08:00", "sinks": ["office-hook", "office-mail"],
                            "archive_dir": str(tmp_path / "reports"), "retry_seconds": 0.2}},
    })
    # 2026-11-18 08:30 Berlin: the day of 11-17 (08:00 to 08:00) has ended, and October too.
    hooks.respond("/reports", 503)  # the first delivery fails: it stays queued and is sent again
    running = start(config, clock_at=datetime(2026, 11, 18, 7, 30, tzinfo=timezone.utc))
    try:
        publish_day(running, broker_config)  # may land after the first pass: the statistics are then read later
        posts = [p for p in hooks.wait_for(3, "/reports") if p.status == 200]
        mails = mail.wait_for(2)
        with running.client("manager") as client:
            archive = client.get("/api/reports/archive").raise_for_status().json()
            page = client.get("/api/reports/archive/daily/2026-11-17")
            missing = client.get("/api/reports/archive/daily/2026-11-01")
    finally:
        running.api.stop()
        running.gateway.stop()
        hooks.close()
        mail.close()
    assert sorted((p.json()["kind"], p.json()["label"]) for p in posts) == [("daily", "2026-11-17"), ("monthly", "2026-10")]
    assert running.gateway.reports is not None and running.gateway.reports.pending() == 0  # all delivered
    assert all(p.json()["idempotency_key"] == p.headers.get("Idempotency-Key") for p in posts)
    assert sorted(m.subject for m in mails) == ["[warden] riverside daily report 2026-11-17",
                                                "[warden] riverside monthly report 2026-10"]
    html_part = mails[0].message.get_body(("html",))
    assert html_part is not None and "<html" in str(html_part.get_content()).lower()
    assert {(a["kind"], a["label"]) for a in archive} == {("daily", "2026-11-17"), ("monthly", "2026-10")}
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert missing.status_code == 404
    assert TOKENS  # the manager token reads the archive


def test_report_sinks_must_be_alert_sinks(broker_config: BrokerConfig, tmp_path: Path) -> None:
    from gateway.config import GatewayConfig

    config = gateway_config(broker_config, tmp_path)
    with pytest.raises(ValueError, match=r"report.send.sinks\[0\]: unknown sink 'nowhere' \(known: none defined\)"):
        GatewayConfig.model_validate({**config.model_dump(mode="json"), "report": {"send": {"sinks": ["nowhere"]}}})


def test_the_daily_report_counts_repair_requests_opened_closed_and_overdue(tmp_path: Path) -> None:
    import sqlite3

    from gateway.workorders import WorkOrderConfig, WorkOrders, day_counts

    start, end = datetime(2026, 11, 17, 7, tzinfo=timezone.utc), datetime(2026, 11, 18, 7, tzinfo=timezone.utc)
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    assert day_counts(db, start, end) is None  # a state.db without work orders (the feature never ran): no section
    clock = ManualClock(datetime(2026, 11, 10, 9, tzinfo=timezone.utc))
    orders = WorkOrders(path, WorkOrderConfig(), "riverside", clock)  # default deadlines: taken in 2 h, done in 24 h

    def at(day: int, hour: int, minute: int = 0) -> None:
        clock.advance(datetime(2026, 11, day, hour, minute, tzinfo=timezone.utc) - clock.now())

    def new() -> int:
        return orders.create(room="A-204", text="leak", by="guard").order.id

    try:
        old = new()  # 11-10, closed 11-11: before the day, counts nowhere
        orders.act(old, "take", "wu")
        orders.act(old, "done", "wu")
        at(11, 9)
        orders.act(old, "close", "guard", rating=5)
        at(16, 6)
        behind = new()  # resolve by 11-17 06:00, still not done at the day's end: overdue
        at(16, 7)
        orders.act(behind, "take", "wu")
        at(16, 20)
        finished = new()  # taken 21:00 (by 22:00), done 11-17 09:00 (by 11-17 20:00), closed 10:00: closed in the day
        at(16, 21)
        orders.act(finished, "take", "wu")
        at(17, 9)
        orders.act(finished, "done", "wu")
        at(17, 10)
        orders.act(finished, "close", "guard", rating=4)
        new()  # opened in the day, take by 12:00, never taken: overdue ("untaken" below)
        at(17, 12)
        in_time = new()  # opened, taken 13:00 (by 14:00), resolve by 11-18 12:00: not yet overdue
        at(17, 13)
        orders.act(in_time, "take", "wu")
        at(18, 6)
        late_night = new()  # opened 06:00, done 06:50, closed 08:00, after the day's end: opened only
        at(18, 6, 30)
        orders.act(late_night, "take", "wu")
        at(18, 6, 50)
        orders.act(late_night, "done", "wu")
        at(18, 8)
        orders.act(late_night, "close", "guard", rating=5)
        # opened: untaken, in_time, late_night; closed: finished; overdue at 07:00 on the 18th: behind, untaken
        assert day_counts(db, start, end) == {"opened": 3, "closed": 1, "overdue": 2}
    finally:
        orders.close()
        db.close()


def test_a_chinese_sites_daily_statistics_and_repair_requests_are_in_chinese() -> None:
    from gateway.report_jobs import with_statistics

    device = {"device": "em-1", "energy_kwh": 47.5, "after_hours_kwh": 26.0, "water_litres": 0.0, "on_minutes": 600.0, "readings": 96}
    data = {"site": {"locale": "zh-CN"}, "statistics": {"energy_kwh": 47.5, "after_hours_kwh": 26.0, "water_litres": 1234.0,
                                                         "devices": [device]},
            "repair_requests": {"opened": 3, "closed": 1, "overdue": 2}}  # fmt: skip
    page = with_statistics("<html><body></body></html>", data)
    # the zh-CN catalogue's texts, filled in by hand
    assert "电表读数计得用电 47.5 千瓦时，其中非工作时间 26.0 千瓦时；用水 1234 升。" in page
    assert "<th>设备</th><th>千瓦时</th><th>非工作时间千瓦时</th>" in page
    assert "<h2>报修</h2><p>新报 3，关闭 1，日终超时 2</p>" in page
    assert page.endswith("</section></body></html>")


def test_the_daily_report_carries_the_days_statistics(running: Running, broker_config: BrokerConfig) -> None:
    publish_day(running, broker_config)
    with running.client("manager") as client:
        data = client.get("/api/reports/2026-11-17", params={"format": "json"}).raise_for_status().json()
        page = client.get("/api/reports/2026-11-17").raise_for_status().text
    # The day: 11-17 08:00 to 11-18 08:00 Berlin = 07:00 to 07:00 UTC, readings k = 0..95 (k = 96 is the next day's).
    # No reading before it: the first hour counts from its own first, 501.5 - 500 = 1.5 kWh; 23 more hours of 2 kWh
    # (4 x 0.5): 47.5 kWh. A-204's school day (mon-fri 07:30-18:00) holds the hours whose middle is in it:
    # Tue 08:00-18:00 (10 h) and Wed 07:00-08:00 (middle 07:30); after hours Tue 18:00-24:00 and Wed 00:00-07:00,
    # 13 h x 2 kWh = 26 kWh.
    assert (data["statistics"]["energy_kwh"], data["statistics"]["after_hours_kwh"]) == (47.5, 26.0)
    assert "Energy from registers 47.5 kWh, of it after hours 26.0 kWh" in page


# --------------------------------------------------------------------------- repair requests and supervision

#: 2026-10-31 22:30 UTC = 23:30 Berlin (CET since Oct 25): an order of October, not of November.
OCTOBER_LAST = datetime(2026, 10, 31, 22, 30, tzinfo=timezone.utc)
#: 2026-11-17 18:00 UTC = 19:00 Berlin: the first November order.
T0 = datetime(2026, 11, 17, 18, 0, tzinfo=timezone.utc)


def test_the_monthly_report_gives_repair_requests_by_category_and_the_three_level_view(
    broker_config: BrokerConfig, tmp_path: Path
) -> None:
    from rules.alerts import AlertSignal, Severity, SignalAction

    config = gateway_config(broker_config, tmp_path)
    data = config.model_dump(mode="json")
    data["work_orders"] = {"teams": {"caretakers": ["plumbing", "general"]}}  # electrical, hvac: teams of their own
    running = start(type(config).model_validate(data), clock_at=OCTOBER_LAST)
    clock = running.gateway.clock

    def at(when: datetime) -> None:
        clock.advance(when - clock.now())  # type: ignore[attr-defined]

    guard, desk, manager = running.client("guard"), running.client("maintenance"), running.client("manager")
    try:
        def post(client: Any, path: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
            response = client.post(path, json=body)
            assert response.status_code == status, response.text
            return dict(response.json())

        post(guard, "/api/work-orders", {"room": "A-204", "text": "October drip", "category": "plumbing"}, 201)
        at(T0)
        o1 = post(guard, "/api/work-orders", {"room": "A-204", "text": "Tap runs", "category": "plumbing"}, 201)["id"]
        at(T0 + timedelta(minutes=10))
        o2 = post(guard, "/api/work-orders", {"room": "A-GATE", "text": "Lamp out", "category": "electrical"}, 201)["id"]
        at(T0 + timedelta(minutes=30))
        post(desk, f"/api/work-orders/{o1}/take", {})
        at(T0 + timedelta(hours=2))
        post(desk, f"/api/work-orders/{o1}/done", {})
        at(T0 + timedelta(hours=2, minutes=30))
        post(guard, f"/api/work-orders/{o1}/close", {"rating": 5})
        at(T0 + timedelta(hours=2, minutes=40))
        post(desk, f"/api/work-orders/{o2}/take", {})
        at(T0 + timedelta(hours=3, minutes=10))
        post(desk, f"/api/work-orders/{o2}/done", {})
        at(T0 + timedelta(hours=3, minutes=40))
        post(guard, f"/api/work-orders/{o2}/close", {"rating": 3})
        post(desk, "/api/work-orders", {"room": "roof", "text": "Gutter blocked"}, 201)  # general, never taken
        signal = AlertSignal("riverside", "ac_after_hours", "ac-a204", SignalAction.RAISE, T0, Severity.WARNING, "AC on")
        running.gateway.store.commit_batch([], [signal], {})
        at(datetime(2026, 11, 18, 7, 0, tzinfo=timezone.utc))  # the report is made now, on the gateway's clock
        report = manager.get("/api/reports/month/2026-11", params={"format": "json"}).raise_for_status().json()
        html = manager.get("/api/reports/month/2026-11").raise_for_status().text
    finally:
        for c in (guard, desk, manager):
            c.close()
        running.api.stop()
        running.gateway.stop()

    def rows(key: str, *fields: str) -> list[tuple[Any, ...]]:
        return [tuple(row[f] for f in ("key", *fields)) for row in report[key]]

    fields = ("work_orders", "taken", "take_median_min", "take_p90_min", "closed", "close_median_min", "close_p90_min",
              "overdue", "ratings", "rating_mean", "satisfied_share")
    # The October order is not November's. O1 (plumbing, A-204): created 18:00, taken 18:30 (30 min), closed 20:30
    # (150 min), rated 5; its take-by 20:00 (2 h), resolve-by 18:00 next day: on time. O2 (electrical, A-GATE):
    # created 18:10, taken 20:40 (150 min, after its take-by 20:10: overdue), closed 21:40 (210 min), rated 3.
    # O3 (general, "roof": no building of the site): created 21:40, never taken; take-by 23:40 is before the report
    # (11-18 07:00): overdue. Default deadlines: 2 h to take, 24 h to resolve (normal priority).
    assert rows("work_orders_by_category", *fields) == [
        ("electrical", 1, 1, 150, 150, 1, 210, 210, 1, 1, 3, 0.0),
        ("general", 1, 0, None, None, 0, None, None, 1, 0, None, None),
        ("plumbing", 1, 1, 30, 30, 1, 150, 150, 0, 1, 5, 1.0),
    ]
    # Site: takes [30, 150]: median 90, p90 the 2nd of 2 (nearest rank ceil(1.8) = 2): 150; closes [150, 210]:
    # median 180, p90 210; ratings 5 and 3: mean 4, one of two is 4-5.
    assert rows("work_orders_site", *fields) == [("riverside", 3, 2, 90, 150, 2, 180, 210, 2, 2, 4, 0.5)]
    # Teams: caretakers do plumbing and general (O1, O3); electrical is its own.
    assert rows("work_orders_by_team", "work_orders", "take_median_min", "overdue", "rating_mean") == [
        ("caretakers", 2, 30, 1, 5), ("electrical", 1, 150, 1, 3)]
    assert rows("work_orders_by_building", "work_orders", "overdue") == [("A", 2, 1), ("unknown", 1, 1)]
    # The AC alert (rule ac_after_hours): category hvac, which no team lists: team hvac; ac-a204 is in building A.
    assert rows("alerts_by_category", "alerts") == [("hvac", 1)]
    view = report["supervision"]
    level = ("alerts", "work_orders", "work_orders_closed", "work_orders_overdue", "satisfied_share")
    assert [tuple(r[f] for f in ("key", *level)) for r in view["building"]] == [("A", 1, 2, 2, 1, 0.5),
                                                                             ("unknown", 0, 1, 0, 1, None)]
    assert [tuple(r[f] for f in ("key", *level)) for r in view["team"]] == [
        ("caretakers", 0, 2, 1, 1, 1.0), ("electrical", 0, 1, 1, 1, 0.0), ("hvac", 1, 0, 0, 0, None)]
    assert [tuple(r[f] for f in ("key", *level)) for r in view["site"]] == [("riverside", 1, 3, 2, 2, 0.5)]
    assert "Repair requests by team" in html and "Per team" in html and "caretakers" in html and "50 %" in html


def test_a_team_must_do_known_work(broker_config: BrokerConfig, tmp_path: Path) -> None:
    from gateway.config import GatewayConfig

    data = gateway_config(broker_config, tmp_path).model_dump(mode="json")
    with pytest.raises(ValueError, match=r"teams\.crew: unknown category 'plumbng'"):
        GatewayConfig.model_validate({**data, "work_orders": {"teams": {"crew": ["plumbng"]}}})
    with pytest.raises(ValueError, match=r"teams\.b: category 'doors' is already team 'a'"):
        GatewayConfig.model_validate({**data, "work_orders": {"teams": {"a": ["doors"], "b": ["doors"]}}})
