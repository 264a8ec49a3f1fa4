"""Sites repeat device ids (issue 21): two schools both have `meter-main` and `ac-1`, and
nothing may mix them: hourly statistics, after-hours energy, the report archive. One real
gateway serving both schools through the session's Mosquitto, on SQLite and on PostgreSQL;
and state databases from before sites upgraded with their rows kept as the one site's.

The scenario, Tuesday 17 November 2026, readings every 15 minutes from 16:00 to 19:45 UTC
(16 readings, k = 0..15, in the UTC hours 16, 17, 18 and 19):

- north (Europe/London, UTC+0 in November; school day 07:30-18:00 Monday to Friday):
  meter-main reads 1000 + 1 * k kWh, ac-1 draws 1000 W.
- south (Asia/Shanghai, UTC+8; the same school day): meter-main reads 5000 + 0.5 * k kWh,
  ac-1 draws 30 W.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from gateway import db as engines
from gateway import report_schedule, statistics
from gateway.api import ApiServer, create_app
from gateway.auth import hash_token
from gateway.monthly import build_monthly_report
from gateway.report_jobs import report_history
from gateway.report_schedule import Made, ReportScheduler, ReportSendConfig, connections
from gateway.service import Gateway
from gateway.store import StateStore
from rules.alerts import AlertSignal, SignalAction
from rules.config import RulesConfig
from tests.api.conftest import Publisher
from tests.support.gateway_config import local_gateway_config
from tests.support.state_db import state_db  # noqa: F401  (the fixture: once per engine)
from warden import topics
from warden.clock import ManualClock
from warden.config import BrokerConfig, SiteConfig
from warden.events import Reading, stable_event_id

UTC = timezone.utc
FIRST = datetime(2026, 11, 17, 16, 0, tzinfo=UTC)
STEP = timedelta(minutes=15)
READINGS = 16


def school(site_id: str, zone: str) -> SiteConfig:
    return SiteConfig.model_validate({
        "id": site_id, "timezone": zone,
        "schedules": {"school-day": [{"days": "mon-fri", "hours": "07:30-18:00"}]},
        "buildings": [{"id": "main", "rooms": [{"id": "hall", "schedule": "school-day",
                                                  "devices": ["meter-main", "ac-1"]}]}],
    })  # fmt: skip


NORTH = school("north", "Europe/London")
SOUTH = school("south", "Asia/Shanghai")
#: Per site: meter-main's register at k = 0, its step per reading, and ac-1's watts.
FACTS = {"north": (1000.0, 1.0, 1000.0), "south": (5000.0, 0.5, 30.0)}

SECRETS = {
    "district": "wdn_test-district-0123456789abcdefghijklmnopqrs",
    "north": "wdn_test-northoffice-0123456789abcdefghijklmnop",
    "south": "wdn_test-southoffice-0123456789abcdefghijklmnop",
}
TOKENS = [
    {"name": "district-manager", "role": "manager", "sha256": hash_token(SECRETS["district"])},
    {"name": "north-office", "role": "manager", "sites": ["north"], "sha256": hash_token(SECRETS["north"])},
    {"name": "south-office", "role": "manager", "sites": ["south"], "sha256": hash_token(SECRETS["south"])},
]


def readings(site: str) -> list[Reading]:
    start, step, watts = FACTS[site]
    out = []
    for k in range(READINGS):
        at = FIRST + k * STEP
        out.append(Reading(id=stable_event_id(site, "meter-main", at.isoformat()), site=site, device="meter-main",
                           event_time=at, quantity="energy", value=start + step * k, unit="kWh", cumulative=True))
        out.append(Reading(id=stable_event_id(site, "ac-1", at.isoformat()), site=site, device="ac-1",
                           event_time=at, quantity="power", value=watts, unit="W"))
    return out


@dataclass
class District:
    gateway: Gateway
    api: ApiServer

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(base_url=self.api.url, headers={"Authorization": f"Bearer {SECRETS[who]}"}, timeout=10)


@pytest.fixture
def district(broker_config: BrokerConfig, tmp_path: Path, state_db: str | Path) -> Iterator[District]:  # noqa: F811
    """Both schools on one gateway (the state database on either engine), both sites' readings stored."""
    config = local_gateway_config(broker_config, tmp_path, state_db=str(state_db),
                                  work_orders={"photo_dir": str(tmp_path / "photos")},
                                  api={"host": "127.0.0.1", "port": 0, "tokens": TOKENS})
    rules = RulesConfig()
    gateway = Gateway(config, [(NORTH, rules), (SOUTH, rules)], ManualClock(FIRST + timedelta(hours=5)), tick_every=None)
    gateway.start()
    assert gateway.subscribed.wait(10), "the gateway did not subscribe"
    server = ApiServer(create_app(gateway), "127.0.0.1", 0)
    server.start()
    publisher = Publisher(broker_config)
    try:
        for site in ("north", "south"):
            publisher.events(*readings(site), topic=topics.events_topic(site, f"agent-{site}"))
        # 2 sites * 16 readings * 2 devices
        assert gateway.wait_until(lambda: gateway.events_stored == 64, timeout=15), gateway.counts()
        yield District(gateway, server)
    finally:
        publisher.close()
        server.stop()
        gateway.stop()


def hours(client: httpx.Client, site: str | None, device: str) -> list[dict[str, object]]:
    params = {"since": FIRST.isoformat(), "until": (FIRST + timedelta(hours=4)).isoformat(), "device": device}
    return client.get("/api/statistics", params={**params, **({"site": site} if site else {})}).raise_for_status().json()


def test_each_sites_meter_main_and_ac_1_keep_their_own_hourly_statistics(district: District) -> None:
    with district.client("north") as north, district.client("south") as south, district.client("district") as manager:
        north_meter, south_meter = hours(north, None, "meter-main"), hours(south, None, "meter-main")
        north_ac, south_ac = hours(north, None, "ac-1"), hours(south, None, "ac-1")
        managers_south = hours(manager, "south", "meter-main")
        refused = north.get("/api/statistics", params={"since": FIRST.isoformat(), "until": FIRST.isoformat(),
                                                         "site": "south"})
    # Each hour's last register is k = 3, 7, 11, 15 (the readings at :45):
    # north 1000 + k = 1003, 1007, 1011, 1015; south 5000 + 0.5 k = 5001.5, 5003.5, 5005.5, 5007.5.
    # Four readings an hour each; mixed series would show 8 an hour.
    assert [(h["last"], h["n"]) for h in north_meter] == [(1003.0, 4), (1007.0, 4), (1011.0, 4), (1015.0, 4)]
    assert [(h["last"], h["n"]) for h in south_meter] == [(5001.5, 4), (5003.5, 4), (5005.5, 4), (5007.5, 4)]
    assert managers_south == south_meter
    # ac-1: north 1000 W, above the 60 W on threshold in all 4 readings of each hour; south 30 W, never on.
    assert [(h["min"], h["max"], h["on_n"]) for h in north_ac] == [(1000.0, 1000.0, 4)] * 4
    assert [(h["min"], h["max"], h["on_n"]) for h in south_ac] == [(30.0, 30.0, 0)] * 4
    assert refused.status_code == 403


def test_each_sites_ac_1_points_and_repair_requests_are_its_own(district: District) -> None:
    """The historian's raw points (/api/devices/ac-1/series, the morning report's history) and the
    monthly report's repair requests, where both schools have a room `hall`."""
    gateway = district.gateway
    params = {"since": FIRST.isoformat(), "measurement": "power"}
    with district.client("north") as north, district.client("south") as south:
        watts = {site: {p["fields"]["value"] for p in client.get("/api/devices/ac-1/series", params=params).json()}
                 for site, client in (("north", north), ("south", south))}
        counts = {site: len(client.get("/api/devices/ac-1/series", params=params).json())
                  for site, client in (("north", north), ("south", south))}
    assert watts == {"north": {1000.0}, "south": {30.0}} and counts == {"north": 16, "south": 16}
    history = report_history(gateway.config, gateway.historian, SOUTH)
    south_points = history.points("energy", FIRST, FIRST + timedelta(hours=4))
    # south's meter-main only: 16 readings, 5000 to 5007.5 kWh.
    assert [p.fields["value"] for p in south_points] == [5000.0 + 0.5 * k for k in range(READINGS)]
    gateway.work_orders.create(room="hall", text="north's lights", by="desk", site="north")
    gateway.work_orders.create(room="hall", text="north's door", by="desk", site="north")
    gateway.work_orders.create(room="hall", text="south's tap", by="desk", site="south")
    now = FIRST + timedelta(hours=5)
    orders = {site.id: build_monthly_report(gateway.store, site, "2026-11", generated_at=now)["work_orders_site"]
              for site in (NORTH, SOUTH)}
    # two orders at north, one at south, each counted in its own school's month only
    assert {site: [(row["key"], row["work_orders"]) for row in rows] for site, rows in orders.items()} == {
        "north": [("north", 2)], "south": [("south", 1)]}


def test_each_sites_device_list_counts_its_own_ac_1(district: District, broker_config: BrokerConfig) -> None:
    """South's ac-1 reports 4 more readings (20:00-20:45 UTC): 20 against north's 16."""
    gateway = district.gateway
    more = [Reading(id=stable_event_id("south", "ac-1", "more", str(k)), site="south", device="ac-1",
                    event_time=FIRST + timedelta(hours=4) + k * STEP, quantity="power", value=30.0, unit="W")
            for k in range(4)]
    publisher = Publisher(broker_config)
    try:
        publisher.events(*more, topic=topics.events_topic("south", "agent-south"))
        assert gateway.wait_until(lambda: gateway.events_stored == 68, timeout=15), gateway.counts()
    finally:
        publisher.close()
    with district.client("north") as north, district.client("south") as south:
        counts = {site: {d["id"]: sum(d["events"].values()) for d in client.get("/api/devices").raise_for_status().json()}
                  for site, client in (("north", north), ("south", south))}
    assert counts == {"north": {"ac-1": 16, "meter-main": 16}, "south": {"ac-1": 20, "meter-main": 16}}


def test_each_sites_energy_and_after_hours_waste_are_its_own(district: District) -> None:
    store, until = district.gateway.store, FIRST + timedelta(hours=4)

    def totals(site: SiteConfig) -> statistics.DeviceDay:
        return store.read(lambda db: statistics.device_totals(statistics.StatisticsReader(db, site.id), site, FIRST, until))[
            "meter-main"]

    north, south = totals(NORTH), totals(SOUTH)
    # north: hour 16 from its first reading 1000 to 1003 = 3 kWh, then 4 kWh in each of hours 17, 18, 19:
    # 15 kWh (= 1015 - 1000). London is UTC+0: the hours' middles 16:30 and 17:30 fall in the school day
    # (07:30-18:00), 18:30 and 19:30 after it: 4 + 4 = 8 kWh after hours.
    assert (north.energy_kwh, north.after_hours_kwh, north.readings) == (15.0, 8.0, 16)
    # south: 1.5 kWh in hour 16 and 2 kWh in each later hour: 7.5 kWh (= 5007.5 - 5000). Shanghai is UTC+8:
    # the middles are 00:30-03:30 on Wednesday, all after hours: 7.5 kWh.
    assert (south.energy_kwh, south.after_hours_kwh, south.readings) == (7.5, 7.5, 16)
    # ac-1's on-minutes: north on in every reading, 60 min an hour for 4 hours; south never.
    ac = {site.id: store.read(lambda db, s=site: statistics.device_totals(statistics.StatisticsReader(db, s.id), s, FIRST,
                                                                           until))["ac-1"].on_minutes
          for site in (NORTH, SOUTH)}
    assert ac == {"north": 240.0, "south": 0.0}
    with pytest.raises(ValueError, match="statistics of site 'north' read with the site file of 'south'"):
        store.read(lambda db: statistics.device_totals(statistics.StatisticsReader(db, "north"), SOUTH, FIRST, until))


def test_each_schools_token_reads_only_its_own_archived_reports(district: District, tmp_path: Path) -> None:
    """Both schools' daily report of the 17th, one label, archived by each site's scheduler."""
    for site in ("north", "south"):
        def make(kind: str, label: str, site: str = site) -> Made:
            folder = tmp_path / "reports" / site / label
            folder.mkdir(parents=True)
            (folder / "report.html").write_text(f"<h1>{site} {label}</h1>", encoding="utf-8")
            return Made(kind, label, folder, "", {})

        scheduler = ReportScheduler(connections(district.gateway.config.state_db), ReportSendConfig(), site, make, {},
                                    scoped=True)
        scheduler.run_due([("daily", "2026-11-17")], FIRST + timedelta(hours=15))
    path = "/api/reports/archive/daily/2026-11-17"
    with district.client("north") as north, district.client("south") as south, district.client("district") as manager:
        lists = {who: {(r["site"], r["label"]) for r in client.get("/api/reports/archive").raise_for_status().json()}
                 for who, client in (("north", north), ("south", south), ("district", manager))}
        pages = {"north": north.get(path).text, "south": south.get(path).text,
                 "district-south": manager.get(path, params={"site": "south"}).text}
        north_asks_south = north.get(path, params={"site": "south"}).status_code
        manager_names_none = manager.get(path).status_code
    assert lists == {"north": {("north", "2026-11-17")}, "south": {("south", "2026-11-17")},
                     "district": {("north", "2026-11-17"), ("south", "2026-11-17")}}
    assert pages == {"north": "<h1>north 2026-11-17</h1>", "south": "<h1>south 2026-11-17</h1>",
                     "district-south": "<h1>south 2026-11-17</h1>"}
    assert (north_asks_south, manager_names_none) == (403, 400)


# --------------------------------------------------------------------------- databases from before sites

#: The statistics and archive tables as the releases before issue 21 made them (keyed without the site).
OLD_SCHEMA = """
CREATE TABLE statistics_series (
    id {rowid}, device TEXT NOT NULL, quantity TEXT NOT NULL, unit TEXT NOT NULL,
    channel TEXT NOT NULL, cumulative INTEGER NOT NULL, UNIQUE (device, quantity, unit, channel, cumulative));
CREATE TABLE statistics_hour (
    series {int} NOT NULL, hour {int} NOT NULL,
    n {int} NOT NULL, total {real} NOT NULL, lo {real} NOT NULL, hi {real} NOT NULL, on_n {int} NOT NULL,
    first_us {int} NOT NULL, first {real} NOT NULL, last_us {int} NOT NULL, last {real} NOT NULL,
    PRIMARY KEY (series, hour)) {without_rowid};
CREATE TABLE report_archive (
    kind TEXT NOT NULL, label TEXT NOT NULL, folder TEXT NOT NULL, made_at TEXT NOT NULL, PRIMARY KEY (kind, label));
"""


def old_database(target: str | Path) -> None:
    """An old state database with north's meter-main series (id 7) and two hours of it, and two archived reports."""
    db = engines.connect(target)
    db.executescript(engines.render_schema(OLD_SCHEMA, engines.dialect(db)))
    db.execute("INSERT INTO statistics_series (id, device, quantity, unit, channel, cumulative)"
               " VALUES (7, 'meter-main', 'energy', 'kWh', '', 1)")
    hour = statistics.hour_index(FIRST)
    for h, (first, last) in enumerate([(1000.0, 1003.0), (1004.0, 1007.0)]):
        db.execute("INSERT INTO statistics_hour (series, hour, n, total, lo, hi, on_n, first_us, first, last_us, last)"
                   " VALUES (7, ?, 4, 0, ?, ?, 0, 0, ?, 0, ?)", (hour + h, first, last, first, last))
    db.execute("INSERT INTO report_archive (kind, label, folder, made_at) VALUES"
               " ('daily', '2026-11-16', '/r/a', '2026-11-17T07:00:00+00:00'),"
               " ('daily', 'south/2026-11-16', '/r/b', '2026-11-17T07:00:00+00:00')")
    db.close()


def test_statistics_from_before_sites_refuse_a_reader_without_the_site(state_db: str | Path) -> None:  # noqa: F811
    old_database(state_db)
    db = engines.connect(state_db)
    try:
        with pytest.raises(ValueError, match="predate sites"):
            statistics.create_schema(db)
    finally:
        db.close()


def test_an_old_state_database_is_upgraded_and_its_rows_stay_the_one_sites(state_db: str | Path) -> None:  # noqa: F811
    old_database(state_db)
    store = StateStore(state_db)
    try:
        store.read(lambda db: statistics.create_schema(db, "north"))  # what the gateway does on start
        store.read(lambda db: statistics.create_schema(db, "north"))  # a second start: nothing more to do
        # south's readings of its own meter-main, 5000 and 5000.5 kWh, in hour 16: a series of its own.
        events = [Reading(id=stable_event_id("south", str(k)), site="south", device="meter-main", event_time=FIRST + k * STEP, quantity="energy",
                          value=5000.0 + 0.5 * k, unit="kWh", cumulative=True) for k in range(2)]
        prepared = statistics.StatisticsWriter(60.0).prepare(store.write, events)
        store.commit_batch([e.id for e in events], [], None, also=lambda db: statistics.apply(db, prepared))

        def meter(site: str) -> list[tuple[int, float, float]]:
            rows = store.read(lambda db: statistics.StatisticsReader(db, site).hours(FIRST, FIRST + timedelta(hours=2)))
            return [(r.series.id, r.first, r.last) for r in rows]

        north, south = meter("north"), meter("south")
        archive = store.read(lambda db: report_schedule.archive_list(db, ["north", "south"], "north"))
    finally:
        store.close()
    # north keeps series 7 and both its old hours as they were; south's two readings are a new series.
    assert north == [(7, 1000.0, 1003.0), (7, 1004.0, 1007.0)]
    assert [(first, last) for _, first, last in south] == [(5000.0, 5000.5)] and south[0][0] != 7
    # A plain label is the one site's (north); "south/..." names its site, listed without the prefix.
    assert sorted((a["site"], a["label"]) for a in archive) == [("north", "2026-11-16"), ("south", "2026-11-16")]


def test_the_overviews_one_query_reads_unresolved_and_recently_resolved_alerts(state_db: str | Path) -> None:  # noqa: F811
    """store.alerts_recent, which GET /api/overview reads once for every site."""
    store = StateStore(state_db)
    try:
        day = datetime(2026, 11, 1, 20, 0, tzinfo=UTC)
        opened = store.commit_batch([], [AlertSignal(site, "ac_after_hours", "ac-1", SignalAction.RAISE, day)
                                         for site in ("north", "south")], {})
        store.commit_batch([], [AlertSignal("north", "deadman", "meter-main", SignalAction.RAISE, day)], {})
        # north's ac-1 resolved on 1 Nov 21:00, south's on 10 Nov 21:00; north's meter-main stays open.
        store.commit_batch([], [AlertSignal("north", "ac_after_hours", "ac-1", SignalAction.RESOLVE,
                                            day + timedelta(hours=1))], {})
        store.commit_batch([], [AlertSignal("south", "ac_after_hours", "ac-1", SignalAction.RESOLVE,
                                            day + timedelta(days=9, hours=1))], {})
        # Since 5 Nov: the open one and south's (resolved 10 Nov), not north's ac-1 (resolved 1 Nov).
        recent = store.alerts_recent(datetime(2026, 11, 5, tzinfo=UTC))
    finally:
        store.close()
    assert len(opened) == 2
    assert sorted((a.site, a.subject, a.state) for a in recent) == [("north", "meter-main", "open"),
                                                                   ("south", "ac-1", "resolved")]
