"""Reports on odd days, through the real statistics on both state-database engines
(tests/support/state_db.py): a meter replaced or rolled over mid-month, the last second of
a month in a zone ahead of UTC, a 23-hour day. Expected values are worked by hand from
each scenario's facts, in the comments next to them."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway import statistics
from gateway.monthly import build_monthly_report, monthly_csv
from gateway.store import StateStore
from tests.support.state_db import state_db  # noqa: F401  (the fixture: once per engine)
from warden.config import SiteConfig
from warden.events import Event, Reading, stable_event_id

SHOP = SiteConfig.model_validate({
    "id": "tower",
    "timezone": "Asia/Shanghai",  # UTC+8 all year
    "buildings": [{"id": "T", "rooms": [{"id": "T-7", "group": "shop-7",
                                         "devices": ["em-9", "wm-9", "wm-j", "em-r"]}]}],
})  # fmt: skip

BERLIN = SiteConfig.model_validate({
    "id": "campus",
    "timezone": "Europe/Berlin",  # clocks go forward on Sunday 2026-03-29 at 02:00 CET
    "buildings": [{"id": "A", "rooms": [{"id": "A-1", "devices": ["em-1"]}]}],
})  # fmt: skip


def reading(site: SiteConfig, device: str, local: datetime, quantity: str, value: float, unit: str) -> Reading:
    """A cumulative register's reading at a wall time of the site's zone."""
    at = local.replace(tzinfo=site.zone).astimezone(timezone.utc)
    return Reading(id=stable_event_id(site.id, device, quantity, at.isoformat()), site=site.id, device=device,
                   event_time=at, quantity=quantity, value=value, unit=unit, cumulative=True)


@pytest.fixture
def store(state_db: str | Path) -> Iterator[StateStore]:  # noqa: F811
    s = StateStore(state_db)
    s.read(statistics.create_schema)
    yield s
    s.close()


def commit(store: StateStore, events: list[Event]) -> None:
    """As the gateway commits a batch: its statistics in the commit of its seen ids."""
    for i in range(0, len(events), 500):
        batch = events[i:i + 500]
        prepared = statistics.StatisticsWriter(on_watts=60.0).prepare(store.write, batch)
        store.commit_batch([e.id for e in batch], [], None, also=lambda db, p=prepared: statistics.apply(db, p))


def shop_october() -> list[Event]:
    """Hourly readings at :30 local, k = 0 at 2026-09-30 22:30 local (k hours later: k),
    up to 2026-10-31 23:30 local (k = 745), and a few more named below."""
    first = datetime(2026, 9, 30, 22, 30)
    events: list[Event] = []
    for k in range(746):
        at = first + timedelta(hours=k)
        # em-9: the old meter counts 5000 + 2k up to 10-15 11:30 (k = 14 * 24 + 13 = 349: 5698 kWh);
        # the new one reads 0.5 at 11:45, then 2.0 at 12:30 and 2 kWh more each hour.
        if k <= 349:
            events.append(reading(SHOP, "em-9", at, "energy", 5000 + 2 * k, "kWh"))
        else:
            events.append(reading(SHOP, "em-9", at, "energy", 2.0 + 2 * (k - 350), "kWh"))
        # wm-9: the old meter counts 120 + 0.25k m3 up to 10-20 09:30 (k = 19 * 24 + 11 = 467: 236.75);
        # the new one reads 0.0 at 10:30 (k = 468) and 0.25 m3 more each hour.
        events.append(reading(SHOP, "wm-9", at, "volume", 120 + 0.25 * k if k <= 467 else 0.25 * (k - 468), "m3"))
        # wm-j: as wm-9, but the new meter reads 50 000 m3 at 10:30 (a jump of 49 763.25 m3 in an hour,
        # 829 387.5 L/min: faster than any meter runs, rules/water.py MAX_FLOW_L_PER_MIN 2500).
        replaced = 120 + 0.25 * k if k <= 467 else 50_000 + 0.25 * (k - 468)
        events.append(reading(SHOP, "wm-j", at, "volume", replaced, "m3"))
        # em-r: a register rolling over at 100 000 kWh: 99 980 + 2k up to k = 9 (99 998), then 2(k - 10).
        events.append(reading(SHOP, "em-r", at, "energy", 99_980 + 2 * k if k <= 9 else 2.0 * (k - 10), "kWh"))
    events.append(reading(SHOP, "em-9", datetime(2026, 10, 15, 11, 45), "energy", 0.5, "kWh"))
    events.append(reading(SHOP, "em-9", datetime(2026, 10, 31, 23, 59, 59), "energy", 793.0, "kWh"))  # still October
    events.append(reading(SHOP, "em-9", datetime(2026, 11, 1, 0, 30), "energy", 794.0, "kWh"))  # November's
    return events


def test_a_replaced_meter_counts_the_old_part_and_the_new_part(store: StateStore) -> None:
    commit(store, shop_october())
    report = build_monthly_report(store, SHOP, "2026-10")
    # October in Shanghai: 10-01 00:00 +08 = 09-30 16:00 UTC to 11-01 00:00 +08 = 10-31 16:00 UTC, 31 * 24 h.
    assert report["period"] == {"start": "2026-09-30T16:00:00+00:00", "end": "2026-10-31T16:00:00+00:00",
                                "hours": 744.0}
    meters = {m["device"]: m for m in report["meters"]}
    em = meters["em-9"]
    # Start: the last reading before the month, 09-30 23:30 (k = 1): 5002. End: 10-31 23:59:59 local, 793
    # (15:59:59 UTC, inside the month's last UTC hour), not November's 794.
    assert (em["start_reading"], em["end_reading"]) == (5002.0, 793.0)
    assert em["end_read_at"] == "2026-10-31T15:59:59+00:00"  # when finance's end register was read
    # Old meter 5698 - 5002 = 696; new meter 793 - 0.5 = 792.5; together 1488.5 (not 793 - 5002 = -4209).
    assert em["consumption"] == 1488.5 and em["resets"] >= 1
    wm = meters["wm-9"]
    # Old meter 236.75 - 120.25 (k = 1) = 116.5; new meter from 0.0 to k = 745: 0.25 * 277 = 69.25; 185.75 m3.
    # The use between 09:30 and the new meter's first reading at 10:30 is unknown and not counted.
    assert (wm["start_reading"], wm["end_reading"], wm["consumption"]) == (120.25, 69.25, 185.75)
    # wm-j: the same parts as wm-9, not 50 069.25 - 120.25 = 49 949 m3 (a new meter reading higher).
    assert (meters["wm-j"]["consumption"], meters["wm-j"]["resets"]) == (185.75, 1)
    rolled = meters["em-r"]
    # Before the wrap 99 998 - 99 982 (k = 1) = 16; after it 2 * (745 - 10) = 1470 from 0.0: 1486 kWh.
    # The 2 kWh between 99 998 and the wrap are not guessed (no register maximum is configured).
    assert (rolled["start_reading"], rolled["end_reading"], rolled["consumption"]) == (99_982.0, 1470.0, 1486.0)
    shop = {g["group"]: g for g in report["groups"]}["shop-7"]
    # Energy 1488.5 + 1486 = 2974.5 kWh; water 2 * 185.75 m3 = 371 500 L.
    assert (shop["energy_kwh"], shop["water_litres"], shop["meters_missing"]) == (2974.5, 371_500.0, [])


def test_the_daily_energy_of_a_replacement_day_counts_both_meters(store: StateStore) -> None:
    commit(store, shop_october())
    day = date(2026, 10, 15)
    since = datetime(2026, 10, 15, tzinfo=SHOP.zone)
    until = since + timedelta(days=1)
    reader = lambda db: statistics.StatisticsReader(db, SHOP.id)  # noqa: E731
    totals = store.read(lambda db: statistics.device_totals(reader(db), SHOP, since, until))
    # 10-15 local: before it the old meter read 5000 + 2 * 337 = 5674 at 10-14 23:30 (k = 337);
    # old part 5698 - 5674 = 24 (12 hours of 2 kWh); new part from 0.5 at 11:45 to 23:30 (k = 361):
    # 2 + 2 * (361 - 350) = 24, so 23.5; the day: 47.5 kWh (the swap hour is not 0: its 2 kWh count).
    assert totals["em-9"].energy_kwh == 47.5, day


def test_a_23_hour_day_counts_23_hours_of_energy(store: StateStore) -> None:
    # em-1 counts 1 kWh an hour, read at :00 UTC from 2026-03-28 00:00 UTC (100 kWh) for three days.
    start = datetime(2026, 3, 28, tzinfo=timezone.utc)
    events: list[Event] = [
        Reading(id=stable_event_id("campus", "em-1", "energy", str(h)), site="campus", device="em-1",
                event_time=start + timedelta(hours=h), quantity="energy", value=100.0 + h, unit="kWh", cumulative=True)
        for h in range(72)
    ]
    commit(store, events)
    since = datetime(2026, 3, 29, tzinfo=BERLIN.zone).astimezone(timezone.utc)
    until = datetime(2026, 3, 30, tzinfo=BERLIN.zone).astimezone(timezone.utc)
    # 03-29 00:00 CET = 03-28 23:00 UTC; 03-30 00:00 CEST = 03-29 22:00 UTC: 23 hours.
    assert (since.isoformat(), until.isoformat()) == ("2026-03-28T23:00:00+00:00", "2026-03-29T22:00:00+00:00")
    reader = lambda db: statistics.StatisticsReader(db, BERLIN.id)  # noqa: E731
    totals = store.read(lambda db: statistics.device_totals(reader(db), BERLIN, since, until))
    assert totals["em-1"].energy_kwh == 23.0  # 1 kWh an hour, 23 hours
    days = store.read(lambda db: statistics.daily(reader(db), BERLIN, since, until, ["em-1"]))
    assert [(d["day"], d["hours"]) for d in days] == [("2026-03-29", 23)]
    march = store.read(lambda db: statistics.meter_readings(reader(db), since, until))
    # Register before 23:00 UTC on 03-28 is the 22:00 reading (h = 22: 122), at the end 21:00 on 03-29 (h = 45: 145).
    assert [(m.start, m.end, m.consumption) for m in march] == [(122.0, 145.0, 23.0)]


def test_a_meter_with_no_reading_is_missing_data_not_zero(store: StateStore, tmp_path: Path) -> None:
    from gateway.report_jobs import daily_report, with_statistics
    from tests.support.gateway_config import local_gateway_config
    from warden.config import BrokerConfig

    commit(store, shop_october())  # the last readings: em-9 at 11-01 00:30 local, wm-9 and em-r at 10-31 23:30
    report = build_monthly_report(store, SHOP, "2026-11")
    november = {m["device"]: m for m in report["meters"]}
    # em-9 was read once in November: 794 - 793 = 1 kWh. wm-9 and em-r were not read at all: unknown, not 0
    # (their end is still their last reading, from October).
    assert november["em-9"]["consumption"] == 1.0
    assert (november["wm-9"]["end_reading"], november["wm-9"]["consumption"]) == (69.25, None)
    assert november["wm-9"]["end_read_at"] == "2026-10-31T15:30:00+00:00"  # 10-31 23:30 local: an October reading
    row = next(r for r in csv.DictReader(io.StringIO(monthly_csv(report))) if r["device"] == "wm-9")
    assert (row["end_reading"], row["consumption"], row["end_read_at"]) == ("69.25", "", "2026-10-31T15:30:00+00:00")
    assert november["em-r"]["consumption"] is None
    # shop-7's November: em-9's 1 kWh; no water reading at all, so its 0 L comes with the meters missing.
    shop = {g["group"]: g for g in report["groups"]}["shop-7"]
    assert (shop["energy_kwh"], shop["water_litres"], shop["meters_missing"]) == (1.0, 0.0, ["em-r", "wm-9", "wm-j"])
    config = local_gateway_config(BrokerConfig(), tmp_path)
    # The report of 11-01 runs 11-01 08:00 to 11-02 08:00 local: no meter has a reading in it.
    data = daily_report(store, None, SHOP, config, date(2026, 11, 1))
    assert data["statistics"]["silent_meters"] == ["em-9", "em-r", "wm-9", "wm-j"]
    page = with_statistics("<html><body></body></html>", data)
    assert "No readings from em-9, em-r, wm-9, wm-j: their data is missing, not 0." in page
    # The report of 10-31 (10-31 08:00 to 11-01 08:00): every meter was read; none missing.
    assert daily_report(store, None, SHOP, config, date(2026, 10, 31))["statistics"]["silent_meters"] == []


def test_patrol_rounds_scheduled_follow_holidays_and_make_up_days(store: StateStore) -> None:
    from warden.config import PatrolRoute

    school = SiteConfig.model_validate({
        "id": "school", "timezone": "Asia/Shanghai",
        "schedules": {"duty": [{"days": "mon-fri", "hours": "08:00-18:00"}]},
        "calendar": {"holidays": [{"name": "国庆节", "start": "2026-10-01", "end": "2026-10-07"}],
                     "workdays": [{"date": "2026-10-10", "follows": "tue"}]},
        "buildings": [{"id": "B", "rooms": [{"id": "B-1", "schedule": "duty", "devices": []}]}],
    })  # fmt: skip
    route = PatrolRoute.model_validate({"id": "day", "checkpoints": ["cp-1"], "rounds": ["10:00"], "days": "mon-fri",
                                        "schedule": "duty", "guard": "guard-wu"})
    patrols = build_monthly_report(store, school, "2026-10", routes=[route])["patrols"]
    # October 2026 starts on a Thursday: weekdays 1-2, 5-9, 12-16, 19-23, 26-30 = 2 + 4 * 5 = 22. The holiday
    # 10-01..07 takes Thu 1, Fri 2, Mon 5, Tue 6, Wed 7 (5); the make-up Saturday 10-10 adds one: 22 - 5 + 1 = 18.
    assert [(r["route"], r["rounds_scheduled"], r["completion"]) for r in patrols["routes"]] == [("day", 18, 1.0)]
    assert patrols["guards"][0]["rounds_scheduled"] == 18


def test_a_dst_months_total_is_the_sum_of_its_days(store: StateStore) -> None:
    from gateway.monthly import month_period

    ny = SiteConfig.model_validate({"id": "nyc", "timezone": "America/New_York",  # clocks forward 2026-03-08 02:00
                                    "buildings": [{"id": "N", "rooms": [{"id": "N-1", "devices": ["em-5"]}]}]})
    # em-5 counts 1 kWh an hour, read on the UTC hour from 2026-02-28 00:00 UTC (0 kWh) for 33 days.
    start = datetime(2026, 2, 28, tzinfo=timezone.utc)
    commit(store, [Reading(id=stable_event_id("nyc", "em-5", "energy", str(h)), site="nyc", device="em-5",
                           event_time=start + timedelta(hours=h), quantity="energy", value=float(h), unit="kWh",
                           cumulative=True) for h in range(33 * 24)])
    month = month_period(ny, "2026-03")
    report = build_monthly_report(store, ny, "2026-03")
    # March in New York: 03-01 00:00 EST = 05:00 UTC to 04-01 00:00 EDT = 04:00 UTC: 31 * 24 - 1 = 743 h.
    assert (month.start.isoformat(), report["period"]["hours"]) == ("2026-03-01T05:00:00+00:00", 743.0)
    [meter] = report["meters"]
    assert meter["consumption"] == 743.0  # 1 kWh an hour
    reader = lambda db: statistics.StatisticsReader(db, ny.id)  # noqa: E731
    days = []
    for d in range(1, 32):
        since = datetime(2026, 3, d, tzinfo=ny.zone).astimezone(timezone.utc)
        until = (datetime(2026, 3, d, tzinfo=ny.zone) + timedelta(days=1)).astimezone(timezone.utc)
        days.append(store.read(lambda db, a=since, b=until: statistics.device_totals(reader(db), ny, a, b))["em-5"].energy_kwh)
    # Every day 24 kWh but 03-08, 23 kWh; no hour counted twice or lost: 30 * 24 + 23 = 743.
    assert days[7] == 23.0 and all(kwh == 24.0 for i, kwh in enumerate(days) if i != 7)
    assert sum(days) == meter["consumption"]
