"""Hourly statistics written as the gateway commits a batch (gateway/statistics.py), the
monthly meter readings made from them, and raw retention in the SQLite historian.

Expected values come from the generators' inputs by arithmetic written next to them."""

from __future__ import annotations

import csv
import io
import subprocess
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from gateway import statistics
from gateway.historian.sqlite import SqliteHistorian
from gateway.monthly import build_monthly_report, month_period, monthly_csv
from gateway.service import Gateway
from gateway.store import StateStore
from tests.support.gateway_config import local_gateway_config
from tests.support.scripts import console_script
from tests.support.state_db import state_db  # noqa: F401  (the fixture: once per engine)
from warden import topics
from warden.clock import ManualClock
from warden.config import BrokerConfig, SiteConfig
from warden.events import Event, Reading, encode_events, stable_event_id
from warden.mqtt import make_client

SITE = SiteConfig.model_validate({
    "id": "campus",
    "timezone": "Europe/Berlin",  # clocks go back on Sunday 2026-10-25 at 03:00 CEST
    "schedules": {"office": [{"days": "mon-fri", "hours": "08:00-18:00"}]},
    "buildings": [
        {"id": "A", "rooms": [
            {"id": "A-101", "schedule": "office", "group": "tenant-north", "devices": ["em-1", "wm-1"]},
            {"id": "A-102", "group": "tenant-south", "devices": ["em-2", "t-1"]},
        ]},
    ],
})  # fmt: skip

START = datetime(2026, 9, 29, tzinfo=timezone.utc)  # the generators start two days before October
STEP = timedelta(minutes=15)


def reading(device: str, at: datetime, quantity: str, value: float, unit: str, cumulative: bool = False) -> Reading:
    return Reading(id=stable_event_id("campus", device, quantity, at.isoformat()), site="campus", device=device,
                   event_time=at, quantity=quantity, value=value, unit=unit, cumulative=cumulative)


def water_increment(k: int) -> float:
    """Litres-free irregular use, in m3, multiples of 1/8 (exact in binary floats)."""
    return ((k * 5) % 11) * 0.125


@pytest.fixture
def store(state_db: str | Path) -> Iterator[StateStore]:
    """The state database, once on SQLite and once on PostgreSQL (tests/support/state_db.py)."""
    s = StateStore(state_db)
    s.read(statistics.create_schema)
    yield s
    s.close()


def commit(store: StateStore, events: list[Event]) -> None:
    """What the gateway does with a batch: statistics in the commit of its seen ids."""
    prepared = statistics.StatisticsWriter(on_watts=60.0).prepare(store.write, events)
    store.commit_batch([e.id for e in events], [], None, also=lambda db: statistics.apply(db, prepared))


def october(store: StateStore) -> tuple[int, list[float]]:
    """Every 15 min from 2026-09-29 00:00 UTC to 2026-11-02 00:00 UTC (34 days = 3 264
    readings), in batches of 500: em-1 counts 0.25 kWh a reading from 1000 kWh; wm-1
    (m3) grows by water_increment(k) from 50 m3. Returns the count and wm-1's registers."""
    count = 34 * 24 * 4
    water = [50.0]
    for k in range(1, count):
        water.append(water[-1] + water_increment(k))
    events: list[Event] = []
    for k in range(count):
        at = START + k * STEP
        events += [reading("em-1", at, "energy", 1000 + 0.25 * k, "kWh", True),
                   reading("wm-1", at, "volume", water[k], "m3", True)]
    for i in range(0, len(events), 500):
        commit(store, events[i:i + 500])
    return count, water


def test_monthly_csv_of_a_dst_month_matches_the_registers_exactly(store: StateStore) -> None:
    _, water = october(store)
    report = build_monthly_report(store, SITE, "2026-10")
    # October in Berlin: 2026-10-01 00:00 CEST = 09-30 22:00 UTC to 11-01 00:00 CET = 10-31 23:00 UTC,
    # 31 days * 24 h + the hour repeated on 10-25 = 745 h.
    assert report["period"] == {"start": "2026-09-30T22:00:00+00:00", "end": "2026-10-31T23:00:00+00:00", "hours": 745.0}
    rows = {r["device"]: r for r in csv.DictReader(io.StringIO(monthly_csv(report)))}
    # em-1: last reading before the month is 09-30 21:45 UTC, k = (24 + 21.75) * 4 = 183 -> 1000 + 45.75;
    # last in the month 10-31 22:45 UTC, k = (32 * 24 + 22.75) * 4 = 3163 -> 1000 + 790.75; difference 745 kWh.
    assert (float(rows["em-1"]["start_reading"]), float(rows["em-1"]["end_reading"])) == (1045.75, 1790.75)
    assert float(rows["em-1"]["consumption"]) == 745.0
    # wm-1: the same readings k = 183 and k = 3163 of the generator's own list.
    assert (float(rows["wm-1"]["start_reading"]), float(rows["wm-1"]["end_reading"])) == (water[183], water[3163])
    assert float(rows["wm-1"]["consumption"]) == water[3163] - water[183]
    assert rows["em-1"]["group"] == "tenant-north" and rows["em-1"]["resets"] == "0"
    groups = {g["group"]: g for g in report["groups"]}
    assert groups["tenant-north"]["energy_kwh"] == 745.0
    assert groups["tenant-north"]["water_litres"] == (water[3163] - water[183]) * 1000  # m3 -> L


def test_a_dst_day_has_25_hours_of_statistics(store: StateStore) -> None:
    october(store)
    day = datetime(2026, 10, 25, tzinfo=SITE.zone)
    since, until = day.astimezone(timezone.utc), (day + timedelta(days=1)).astimezone(timezone.utc)
    assert (since.hour, until.hour) == (22, 23)  # 10-24 22:00 UTC to 10-25 23:00 UTC: 25 hours
    days = store.read(lambda db: statistics.daily(statistics.StatisticsReader(db, SITE.id), SITE, since, until, ["em-1"]))
    assert [(d["day"], d["hours"], d["n"]) for d in days] == [("2026-10-25", 25, 100)]  # 4 readings an hour
    totals = store.read(lambda db: statistics.device_totals(statistics.StatisticsReader(db, SITE.id), SITE, since, until))
    assert totals["em-1"].energy_kwh == 25.0  # 1 kWh an hour (0.25 every 15 min) for 25 h
    assert totals["em-1"].after_hours_kwh == 25.0  # a Sunday: the office schedule never runs


def test_after_hours_energy_uses_the_room_schedule(store: StateStore) -> None:
    october(store)
    day = datetime(2026, 10, 27, tzinfo=SITE.zone)  # a Tuesday, CET (UTC+1)
    since, until = day.astimezone(timezone.utc), (day + timedelta(days=1)).astimezone(timezone.utc)
    totals = store.read(lambda db: statistics.device_totals(statistics.StatisticsReader(db, SITE.id), SITE, since, until))
    # 24 kWh in 24 h; the office runs 08:00-18:00 local: 10 scheduled hours, 14 after hours.
    assert (totals["em-1"].energy_kwh, totals["em-1"].after_hours_kwh) == (24.0, 14.0)


def test_late_data_updates_its_hour(store: StateStore) -> None:
    ten = datetime(2026, 11, 3, 10, tzinfo=timezone.utc)
    commit(store, [reading("t-1", ten + timedelta(minutes=10), "temperature", 20.0, "°C"),
                   reading("t-1", ten + timedelta(minutes=40), "temperature", 22.0, "°C")])
    commit(store, [reading("t-1", ten + timedelta(minutes=5), "temperature", 18.0, "°C"),  # late: an earlier time
                   reading("t-1", ten + timedelta(hours=1), "temperature", 30.0, "°C")])  # the next hour
    rows = store.read(lambda db: statistics.StatisticsReader(db, SITE.id).hours(ten, ten + timedelta(hours=2), ["t-1"]))
    first, second = (statistics.hour_json(r) for r in rows)
    # 10:00 hour: 20, 22, then 18 late -> n 3, min 18, max 22, mean (18 + 20 + 22) / 3 = 20, first the 10:05 one.
    assert (first["n"], first["min"], first["max"], first["mean"]) == (3, 18.0, 22.0, 20.0)
    assert (first["first"], first["last"]) == (18.0, 22.0)
    assert (second["n"], second["mean"]) == (1, 30.0)


def test_on_minutes_count_the_share_of_samples_above_standby(store: StateStore) -> None:
    ten = datetime(2026, 11, 3, 10, tzinfo=timezone.utc)
    watts = [900.0] * 9 + [5.0] * 3  # 12 samples, every 5 min: 9 on
    commit(store, [reading("em-2", ten + timedelta(minutes=5 * i), "power", w, "W") for i, w in enumerate(watts)])
    totals = store.read(lambda db: statistics.device_totals(statistics.StatisticsReader(db, SITE.id), SITE, ten, ten + timedelta(hours=1)))
    assert totals["em-2"].on_minutes == 45.0  # 60 min * 9 / 12
    assert totals["em-2"].readings == 12


def test_a_batch_that_fails_to_commit_counts_nothing(store: StateStore) -> None:
    ten = datetime(2026, 11, 3, 10, tzinfo=timezone.utc)
    events: list[Event] = [reading("t-1", ten, "temperature", 20.0, "°C")]
    prepared = statistics.StatisticsWriter(60.0).prepare(store.write, events)

    def apply_then_fail(db: object) -> None:
        statistics.apply(db, prepared)  # type: ignore[arg-type]
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        store.commit_batch([e.id for e in events], [], None, also=apply_then_fail)
    assert store.read(lambda db: statistics.StatisticsReader(db, SITE.id).hours(ten, ten + timedelta(hours=1))) == []
    assert store.unseen([events[0].id]) == {events[0].id}  # neither the id: the redelivery counts once


# --------------------------------------------------------------------------- retention


def test_retention_prunes_old_points_in_bounded_steps(tmp_path: Path) -> None:
    historian = SqliteHistorian(tmp_path / "history.db", SITE)
    day0 = datetime(2026, 10, 1, tzinfo=timezone.utc)
    # 40 days, one reading an hour: 960 points; then one late point stamped day 1, written last.
    historian.write([reading("t-1", day0 + timedelta(hours=h), "temperature", 20.0, "°C") for h in range(40 * 24)])
    historian.write([reading("t-1", day0 + timedelta(days=1, minutes=30), "temperature", 21.0, "°C")])
    cutoff = day0 + timedelta(days=10)  # retention 30 days at day 40
    steps = []
    while (n := historian.prune(cutoff, max_rows=100)) > 0:
        steps.append(n)
    # 10 days * 24 = 240 points older than the cutoff in write order: 100, 100, 40.
    assert steps == [100, 100, 40]
    # The late point (written after newer ones) stays until the rows before it expire.
    assert historian.count() == 960 - 240 + 1
    # Everything has expired: all but the newest row (the late one), which keeps the ids growing.
    assert historian.prune(day0 + timedelta(days=41), max_rows=10_000) == 720
    assert historian.count() == 1
    historian.write([reading("t-1", day0 + timedelta(days=41), "temperature", 22.0, "°C")])
    assert historian.position().endswith(f":{960 + 2}")  # ids carry on after the pruned ones
    historian.close()


def test_month_period_of_a_spring_forward_month() -> None:
    march = month_period(SITE, "2026-03")  # clocks go forward on 2026-03-29
    assert march.hours == 31 * 24 - 1
    assert (march.start.date(), march.end.date()) == (date(2026, 2, 28), date(2026, 3, 31))


# --------------------------------------------------------------------------- through the gateway


def test_the_gateway_counts_a_resent_reading_once(broker_config: BrokerConfig, tmp_path: Path) -> None:
    config = local_gateway_config(broker_config, tmp_path)
    ten = datetime(2026, 11, 3, 10, tzinfo=timezone.utc)
    gateway = Gateway(config, SITE, ManualClock(ten + timedelta(hours=2)), tick_every=None)
    gateway.start()
    publisher = make_client(broker_config, f"agent-{tmp_path.name}"[:60])
    publisher.connect(broker_config.host, broker_config.port)
    publisher.loop_start()
    first = [reading("em-1", ten + timedelta(minutes=m), "energy", 100.0 + m, "kWh", True) for m in (0, 30)]
    late = reading("em-1", ten + timedelta(minutes=15), "energy", 115.0, "kWh", True)
    try:
        assert gateway.subscribed.wait(10)
        topic = topics.events_topic("campus", "agent-a")
        publisher.publish(topic, encode_events(first), qos=1).wait_for_publish(5)
        publisher.publish(topic, encode_events([first[1], late]), qos=1).wait_for_publish(5)  # a re-sent copy and a late one
        assert gateway.wait_until(lambda: gateway.events_stored >= 3 and gateway.counts().get("duplicates", 0) >= 1, 10)
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        gateway.stop()
    store = StateStore(config.state_db)
    rows = store.read(lambda db: statistics.StatisticsReader(db, SITE.id).hours(ten, ten + timedelta(hours=1), ["em-1"]))
    store.close()
    # Three distinct readings at 10:00 (100), 10:15 (115), 10:30 (130): the copy of 10:30 is not counted.
    assert [(r.n, r.first, r.last, r.lo, r.hi) for r in rows] == [(3, 100.0, 130.0, 100.0, 130.0)]


def test_warden_report_month_writes_the_csv(store: StateStore, tmp_path: Path) -> None:
    october(store)
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(SITE.model_dump(mode="json", exclude_none=True)), encoding="utf-8")
    out = tmp_path / "out"
    run = subprocess.run([console_script("warden"), "report", "--month", "2026-10", "--state-db", str(store.path),
                          "--site", str(site_file), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = {r["device"]: r for r in csv.DictReader((out / "month-2026-10.csv").open(encoding="utf-8"))}
    assert rows["em-1"]["consumption"] == "745.0"  # as in the DST test above: 1790.75 - 1045.75
    bad = subprocess.run([console_script("warden"), "report", "--month", "2026-13", "--state-db", str(store.path),
                          "--site", str(site_file)], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "YYYY-MM" in bad.stdout + bad.stderr


# --------------------------------------------------------------------------- patrols and response times


def test_monthly_patrol_completion_and_response_times(tmp_path: Path) -> None:
    from rules.alerts import AlertSignal, SignalAction
    from warden.config import PatrolRoute

    clock = ManualClock(datetime(2026, 11, 1, tzinfo=timezone.utc))
    store = StateStore(tmp_path / "state.db", clock=clock)
    routes = [PatrolRoute.model_validate({"id": "north", "checkpoints": ["cp-gate", "cp-hall"], "rounds": ["23:30"],
                                          "guard": "guard-lee"}),
              PatrolRoute.model_validate({"id": "south", "checkpoints": ["cp-yard"], "rounds": ["23:30", "02:00"],
                                          "days": "mon-fri", "guard": "guard-kim"})]  # fmt: skip

    def raise_at(rule: str, subject: str, at: datetime) -> int:
        clock.advance(at - clock.now())
        [change] = store.commit_batch([], [AlertSignal("campus", rule, subject, SignalAction.RAISE, at, message=subject)], None)
        return change.alert.id

    night = datetime(2026, 11, 4, 0, 30, tzinfo=timezone.utc)
    for subject, day in (("north:2026-11-03T23:30", 0), ("north:2026-11-10T23:30", 7), ("south:2026-11-30T23:30", 27),
                         ("north:2026-10-31T23:30", -3)):  # the last is October's round, raised on 11-01
        at = night + timedelta(days=day) if day >= 0 else datetime(2026, 11, 1, 0, 5, tzinfo=timezone.utc)
        raise_at("patrol_round", subject, at)
    raise_at("patrol_checkpoint", "north:2026-11-12T23:30:cp-hall", datetime(2026, 11, 13, 0, tzinfo=timezone.utc))
    opened = datetime(2026, 11, 20, 22, 0, tzinfo=timezone.utc)
    for n, ack_minutes in enumerate((5, 10, 30)):  # three forced doors, acknowledged after 5, 10 and 30 minutes
        alert_id = raise_at("door_forced", f"gate-{n}", opened + timedelta(hours=n))
        store.acknowledge(alert_id, "guard-lee", at=opened + timedelta(hours=n, minutes=ack_minutes))
    report = build_monthly_report(store, SITE, "2026-11", routes=routes)
    store.close()
    # November 2026 has 30 days, 21 of them mon-fri (Sat/Sun: 1, 7, 8, 14, 15, 21, 22, 28, 29).
    # north: 30 rounds, 2 not completed -> 28/30; south: 21 * 2 = 42 rounds, 1 not completed (the round of 11-30,
    # raised 12-01 00:30 UTC: still November's round) -> 41/42. October's round, raised on 11-01, is not November's.
    routes_out = {r["route"]: r for r in report["patrols"]["routes"]}
    assert (routes_out["north"]["rounds_scheduled"], routes_out["north"]["rounds_not_completed"]) == (30, 2)
    assert routes_out["north"]["rounds_with_checkpoint_alerts"] == 1
    assert (routes_out["south"]["rounds_scheduled"], routes_out["south"]["rounds_not_completed"]) == (42, 1)
    assert {g["guard"]: g["completion"] for g in report["patrols"]["guards"]} == {"guard-lee": 28 / 30, "guard-kim": 41 / 42}
    doors = next(r for r in report["alerts_by_rule"] if r["key"] == "door_forced")
    # Minutes to acknowledge 5, 10, 30: median 10; nearest-rank p90 = the ceil(0.9 * 3) = 3rd = 30.
    assert (doors["alerts"], doors["ack_median_min"], doors["ack_p90_min"], doors["overdue"]) == (3, 10.0, 30.0, 0)


def test_the_gateway_prunes_by_the_datas_own_now(broker_config: BrokerConfig, tmp_path: Path) -> None:
    config = local_gateway_config(broker_config, tmp_path, statistics={"raw_retention_days": 30, "prune_rows": 100})
    day0 = datetime(2026, 10, 1, tzinfo=timezone.utc)
    gateway = Gateway(config, SITE, ManualClock(day0 + timedelta(days=400)), tick_every=None)  # not started: no threads
    try:
        # 40 days of hourly readings: 960 points, the newest at day 40 minus an hour.
        gateway.historian.write([reading("t-1", day0 + timedelta(hours=h), "temperature", 20.0, "°C") for h in range(40 * 24)])
        # The clock is a year ahead, but the data's now is its newest point (day 40 - 1 h): points before
        # day 10 - 1 h go, 9 * 24 + 23 = 239 of them, in steps of 100.
        assert gateway.prune_history() == 239
        assert gateway.historian.count() == 960 - 239  # type: ignore[attr-defined]
    finally:
        gateway.historian.close()
        gateway.store.close()
