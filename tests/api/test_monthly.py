"""The monthly report and statistics over HTTP, and the daily and monthly reports made on
their schedule: archived, browsable, sent by webhook and by mail with the HTML inline.
Readings go through the real pipeline (Mosquitto, the gateway's batches)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.api.conftest import TOKENS, Publisher, Running, gateway_config, start
from tests.support.receivers import SmtpReceiver, WebhookReceiver
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


@pytest.fixture
def server(broker_config: BrokerConfig, tmp_path: Path) -> Iterator[Running]:
    running = start(gateway_config(broker_config, tmp_path))
    yield running
    running.api.stop()
    running.gateway.stop()


def test_the_monthly_csv_gives_each_meters_register_difference(server: Running, broker_config: BrokerConfig) -> None:
    publish_day(server, broker_config)
    with server.client("manager") as client:
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


def test_statistics_by_hour_and_by_local_day(server: Running, broker_config: BrokerConfig) -> None:
    publish_day(server, broker_config)
    with server.client("maintenance") as client:
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


def test_repair_requests_are_counted_only_where_the_table_exists(tmp_path: Path) -> None:
    import sqlite3

    from gateway.report_schedule import work_order_counts

    db = sqlite3.connect(tmp_path / "state.db")
    start, end = datetime(2026, 11, 17, 7, tzinfo=timezone.utc), datetime(2026, 11, 18, 7, tzinfo=timezone.utc)
    assert work_order_counts(db, start, end) is None  # no work orders (the feature is not there): no section
    db.execute("CREATE TABLE work_orders (id INTEGER PRIMARY KEY, created_at TEXT, closed_at TEXT)")
    db.executemany("INSERT INTO work_orders (created_at, closed_at) VALUES (?, ?)", [
        ("2026-11-17T06:59:00+00:00", "2026-11-17T09:00:00+00:00"),  # opened before the day, closed in it
        ("2026-11-17T10:00:00+00:00", None),                         # opened in the day
        ("2026-11-18T06:00:00+00:00", "2026-11-18T08:00:00+00:00"),  # opened in it, closed after
    ])
    assert work_order_counts(db, start, end) == {"opened": 2, "closed": 1}
    db.close()


def test_the_daily_report_carries_the_days_statistics(server: Running, broker_config: BrokerConfig) -> None:
    publish_day(server, broker_config)
    with server.client("manager") as client:
        data = client.get("/api/reports/2026-11-17", params={"format": "json"}).raise_for_status().json()
        page = client.get("/api/reports/2026-11-17").raise_for_status().text
    # The day: 11-17 08:00 to 11-18 08:00 Berlin = 07:00 to 07:00 UTC, readings k = 0..95 (k = 96 is the next day's).
    # No reading before it: the first hour counts from its own first, 501.5 - 500 = 1.5 kWh; 23 more hours of 2 kWh
    # (4 x 0.5): 47.5 kWh. A-204's school day (mon-fri 07:30-18:00) holds the hours whose middle is in it:
    # Tue 08:00-18:00 (10 h) and Wed 07:00-08:00 (middle 07:30); after hours Tue 18:00-24:00 and Wed 00:00-07:00,
    # 13 h x 2 kWh = 26 kWh.
    assert (data["statistics"]["energy_kwh"], data["statistics"]["after_hours_kwh"]) == (47.5, 26.0)
    assert "Energy from registers 47.5 kWh, of it after hours 26.0 kWh" in page
