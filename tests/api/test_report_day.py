"""The morning report covers a whole day (08:00 to 08:00 local by default), issue 16.

Each expected number is derived by hand from the facts written next to it, never read from
the code under test. Energy and patrols run through the real rules (rules.engine), fed
minute by minute as the gateway would, into a real state DB and SQLite historian; the
arithmetic of the report itself (shares, litres, periods) is also checked on alerts whose
details are written here.

Site: Europe/Berlin (UTC+1 in winter, UTC+2 in summer), tariff 0.25 EUR/kWh, room A-101 on
a school-day schedule (mon-fri 07:30-18:00), holiday 2026-12-25 (a Friday).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from gateway.config import ReportConfig
from gateway.historian.sqlite import SqliteHistorian
from gateway.report import ReportFiles, report_period, when, write_morning_report
from gateway.store import StateStore
from rules.alerts import AlertSignal, Severity, SignalAction
from rules.config import RulesConfig
from rules.engine import RuleEngine
from tests.api.conftest import gateway_config, start
from tests.test_cli import output, warden
from warden.config import BrokerConfig, SiteConfig
from warden.events import Event, PatrolTap, Reading, TapSource, stable_event_id

SITE = SiteConfig.model_validate({
    "id": "hill",
    "name": "Hill School",
    "timezone": "Europe/Berlin",
    "holidays": ["2026-12-25"],
    "tariff": {"energy_per_kwh": 0.25, "currency": "EUR"},
    "schedules": {"school-day": [{"days": "mon-fri", "hours": "07:30-18:00"}]},
    "buildings": [{"id": "A", "rooms": [
        {"id": "A-101", "schedule": "school-day", "devices": ["ac-1", "light-1"],
         "circuits": {"ac-1": "ac", "light-1": "lighting"}},
        {"id": "A-GATE", "devices": ["reader-1", "wand-1"]},
    ]}, {"id": "B", "rooms": [{"id": "B-WC", "devices": ["wm-reg"]}]}],
})
UTC = timezone.utc


def berlin(day: int, hour: int, minute: int = 0, month: int = 12) -> datetime:
    """A December (UTC+1) local time, in UTC."""
    return datetime(2026, month, day, hour, minute, tzinfo=UTC) - timedelta(hours=1)


def every(start: datetime, end: datetime, minutes: int = 5) -> Iterator[datetime]:
    at = start
    while at < end:
        yield at
        at += timedelta(minutes=minutes)


def power(device: str, at: datetime, watts: float) -> Reading:
    return Reading(id=stable_event_id("hill", device, "p", at.isoformat()), site="hill", device=device,
                   event_time=at, quantity="power", value=watts, unit="W")


@dataclass
class Feed:
    """Events by arrival time: live ones arrive at their event time, an `upload` (wand
    taps) arrives at its dock time, after that minute's live events."""

    live: list[Event]
    uploads: list[tuple[datetime, list[Event]]] = field(default_factory=list)


def run(folder: Path, feed: Feed, start: datetime, end: datetime, rules: RulesConfig) -> tuple[Path, Path]:
    """The feed through the real rules, minute by minute, into a state DB and a historian."""
    folder.mkdir(parents=True, exist_ok=True)
    state_db, history_db = folder / "state.db", folder / "history.db"
    store, history = StateStore(state_db), SqliteHistorian(history_db, SITE)
    engine = RuleEngine(SITE, rules)
    lateness = timedelta(seconds=rules.allowed_lateness_seconds)
    pending = sorted(feed.live, key=lambda e: e.event_time)
    uploads = sorted(feed.uploads, key=lambda u: u[0])
    try:
        for now in every(start, end, minutes=1):
            batches = []
            due = [e for e in pending if e.event_time <= now]
            pending = pending[len(due):]
            batches.append(due)
            while uploads and uploads[0][0] <= now:
                batches.append(uploads.pop(0)[1])
            for batch in batches:
                history.write(batch)
                signals = [s for e in batch for s in engine.on_event(e)]
                store.commit_batch([e.id for e in batch], signals, engine.snapshot())
            # The gateway ticks at its clock less the allowed lateness (gateway/service.py).
            store.commit_batch([], engine.on_tick(now - lateness), engine.snapshot())
    finally:
        store.close()
        history.close()
    return state_db, history_db


def report(state_db: Path, history_db: Path | None, day: str, out: Path, rules: RulesConfig | None = None) -> ReportFiles:
    return write_morning_report(state_db, history_db, SITE, day, out, rules=rules)


# --------------------------------------------------------------------------- periods


def test_a_day_runs_from_08_00_to_08_00_and_a_dst_day_is_23_or_25_hours() -> None:
    # 2026-12-01 08:00 UTC+1 = 07:00 UTC, to 2026-12-02 07:00 UTC: 24 h.
    dec = report_period(SITE, date(2026, 12, 1))
    assert (dec.start, dec.end, dec.hours) == (datetime(2026, 12, 1, 7, tzinfo=UTC), datetime(2026, 12, 2, 7, tzinfo=UTC), 24)
    # Clocks go back on Sunday 2026-10-25 at 03:00 CEST to 02:00 CET: Sat 24 Oct 08:00 CEST
    # (06:00 UTC) to Sun 25 Oct 08:00 CET (07:00 UTC) is 25 h.
    autumn = report_period(SITE, date(2026, 10, 24))
    assert (autumn.start, autumn.end) == (datetime(2026, 10, 24, 6, tzinfo=UTC), datetime(2026, 10, 25, 7, tzinfo=UTC))
    assert autumn.hours == 25 and autumn.clock_change
    # Clocks go forward on Sunday 2026-03-29 at 02:00 CET to 03:00 CEST: Sat 28 Mar 08:00 CET
    # (07:00 UTC) to Sun 29 Mar 08:00 CEST (06:00 UTC) is 23 h.
    spring = report_period(SITE, date(2026, 3, 28))
    assert (spring.start, spring.end, spring.hours) == (datetime(2026, 3, 28, 7, tzinfo=UTC), datetime(2026, 3, 29, 6, tzinfo=UTC), 23)
    # Another boundary: 06:30 local.
    early = report_period(SITE, date(2026, 12, 1), time(6, 30))
    assert (early.start, early.end) == (datetime(2026, 12, 1, 5, 30, tzinfo=UTC), datetime(2026, 12, 2, 5, 30, tzinfo=UTC))


def test_times_carry_their_offset_on_a_dst_day_and_their_date_outside_the_day() -> None:
    autumn = report_period(SITE, date(2026, 10, 24))
    # The second 02:30 of 25 Oct is 01:30 UTC (CET, +01:00); the first is 00:30 UTC (+02:00).
    assert when(datetime(2026, 10, 25, 1, 30, tzinfo=UTC), autumn) == "02:30+01:00"
    assert when(datetime(2026, 10, 25, 0, 30, tzinfo=UTC), autumn) == "02:30+02:00"
    december = report_period(SITE, date(2026, 12, 1))
    assert when(berlin(1, 23, 30), december) == "23:30"  # inside the day: the wall time alone
    assert when(berlin(2, 2, 0), december) == "02:00"
    assert when(berlin(30, 21, 0, month=11), december) == "21:00 on 2026-11-30"  # before the day
    assert when(berlin(2, 9, 0), december) == "09:00 on 2026-12-02"  # after it


def test_a_date_out_of_range_is_refused_with_the_key_named() -> None:
    with pytest.raises(ValueError, match="day: expected a date between"):
        report_period(SITE, date(9999, 12, 31))


# --------------------------------------------------------------------------- energy


@pytest.fixture(scope="module")
def holiday(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Christmas Day 2026 (a Friday, a holiday: no schedule all day) in room A-101:
    - the AC (ac-1) on a wall timer draws 2000 W from 09:00 to 13:00;
    - the lights (light-1) draw 400 W from 19:00 to 23:00.
    Readings every 5 minutes from 24 Dec 08:00 to 26 Dec 08:00."""
    start, end = berlin(24, 8), berlin(26, 8)
    live: list[Event] = []
    for at in every(start, end):
        live.append(power("ac-1", at, 2000 if berlin(25, 9) <= at < berlin(25, 13) else 0))
        live.append(power("light-1", at, 400 if berlin(25, 19) <= at < berlin(25, 23) else 0))
    return run(tmp_path_factory.mktemp("holiday"), Feed(live), start, end + timedelta(hours=2), RulesConfig())


def test_holiday_daytime_waste_is_in_that_days_report_by_kind(holiday: tuple[Path, Path], tmp_path: Path) -> None:
    files = report(*holiday, "2026-12-25", tmp_path / "25")
    energy = files.report["energy"]
    # AC: 2.0 kW x 4 h (09:00-13:00) = 8.0 kWh, x 0.25 = 2.00 EUR.
    # Lights: 0.4 kW x 4 h (19:00-23:00) = 1.6 kWh, x 0.25 = 0.40 EUR.
    # One reading interval (5 min) of the AC is 2.0 x 5/60 = 0.167 kWh: the tolerance.
    kinds = {k["kind"]: k for k in energy["by_kind"]}
    assert set(kinds) == {"ac", "lighting"}
    assert kinds["ac"]["kwh"] == pytest.approx(8.0, abs=0.17) and kinds["ac"]["alerts"] == 1
    assert kinds["ac"]["cost"] == pytest.approx(2.00, abs=0.05)
    assert kinds["lighting"]["kwh"] == pytest.approx(1.6, abs=0.034)  # 0.4 x 5/60 = 0.033 kWh
    assert [(r["building"], r["room"]) for r in energy["by_room"]] == [("A", "A-101")]
    assert energy["by_room"][0]["kwh"] == pytest.approx(9.6, abs=0.2)
    assert {e["rule"] for e in energy["episodes"]} == {"ac_after_hours", "lights_after_hours"}
    assert all(e["share"] == 1 for e in energy["episodes"])  # both wholly inside the day
    html = files.html.read_text()
    assert "air-conditioning" in html and "lighting" in html and "<svg" in html
    rows = files.csv.read_text()
    assert "energy_by_kind,,,ac,wasted_kwh," in rows and "energy_by_kind,,,lighting,wasted_kwh," in rows


def test_holiday_waste_is_not_in_the_day_before(holiday: tuple[Path, Path], tmp_path: Path) -> None:
    # The report of 24 Dec ends at 25 Dec 08:00, before the AC came on at 09:00.
    files = report(*holiday, "2026-12-24", tmp_path / "24")
    assert files.report["summary"]["energy_kwh"] == 0 and files.report["energy"]["by_kind"] == []


def _store_alerts(path: Path, *signals: AlertSignal) -> Path:
    store = StateStore(path)
    try:
        for signal in signals:
            store.commit_batch([], [signal], {})
    finally:
        store.close()
    return path


def _energy_alert(at: datetime, since: datetime, until: datetime, kwh: float, action: SignalAction = SignalAction.RAISE) -> AlertSignal:
    return AlertSignal("hill", "ac_after_hours", "A-101", action, at, Severity.WARNING, "AC in A-101 on after hours",
                       {"kind": "ac", "wasted_kwh": kwh, "cost": kwh * 0.25, "currency": "EUR", "since": since.isoformat(),
                        "until": until.isoformat(), "building": "A", "room": "A-101", "device": "ac-1"})


def test_an_alert_across_the_day_boundary_is_split_by_overlap(tmp_path: Path) -> None:
    # AC on from Mon 30 Nov 20:00 to Tue 1 Dec 12:00 (16 h), 16.0 kWh, 4.00 EUR in all.
    since, until = berlin(30, 20, month=11), berlin(1, 12)
    db = _store_alerts(tmp_path / "state.db", _energy_alert(since + timedelta(minutes=15), since, until, 16.0),
                       _energy_alert(until, since, until, 16.0, SignalAction.RESOLVE))
    # Day of 30 Nov (08:00 30 Nov to 08:00 1 Dec): 20:00-08:00 = 12 h of 16: 16 x 12/16 = 12.0 kWh, 3.00 EUR.
    first = report(db, None, "2026-11-30", tmp_path / "30").report
    assert (first["summary"]["energy_kwh"], first["summary"]["energy_cost"]) == (12.0, 3.0)
    [episode] = first["energy"]["episodes"]
    assert (episode["share"], episode["total_kwh"]) == (0.75, 16.0)
    # Day of 1 Dec: 08:00-12:00 = 4 h of 16: 16 x 4/16 = 4.0 kWh, 1.00 EUR. 12 + 4 = the alert's 16.
    second = report(db, None, "2026-12-01", tmp_path / "01").report
    assert (second["summary"]["energy_kwh"], second["summary"]["energy_cost"]) == (4.0, 1.0)
    assert any("in proportion" in note for note in second["notes"])
    assert "25% of 16.00" in (tmp_path / "01" / "report.html").read_text()


# --------------------------------------------------------------------------- water


def _register(at: datetime, m3: float) -> Reading:
    return Reading(id=stable_event_id("hill", "wm-reg", "v", at.isoformat()), site="hill", device="wm-reg",
                   event_time=at, quantity="volume", value=m3, unit="m3", cumulative=True)


def test_a_volume_only_meter_is_listed_with_its_minimum_flow_from_the_register(tmp_path: Path) -> None:
    """wm-reg sends only its register (m3), every 15 min from 1 Dec 08:00 to 2 Dec 07:45:
    10 L/min 08:00-18:00, 2 L/min 18:00-02:00, 0.6 L/min 02:00-05:00, 3 L/min 05:00-08:00."""
    def rate(at: datetime) -> float:
        if at < berlin(1, 18):
            return 10.0
        if at < berlin(2, 2):
            return 2.0
        return 0.6 if at < berlin(2, 5) else 3.0

    litres, points = 0.0, []
    for at in every(berlin(1, 8), berlin(2, 8), minutes=15):
        points.append(_register(at, 1234.0 + litres / 1000))
        litres += rate(at) * 15
    history = SqliteHistorian(tmp_path / "history.db", SITE)
    history.write(points)
    history.close()
    db = _store_alerts(tmp_path / "state.db")
    files = report(db, tmp_path / "history.db", "2026-12-01", tmp_path / "out")
    [meter] = files.report["water"]["meters"]
    # 96 readings; litres between the first (08:00) and the last (07:45):
    # 600 min x 10 + 480 min x 2 + 180 min x 0.6 + 165 min x 3 = 6000 + 960 + 108 + 495 = 7563 L.
    # Quiet window 02:00-05:00: 180 min x 0.6 = 108 L; its minimum flow 9 L per 15 min = 0.6 L/min.
    assert meter["meter"] == "wm-reg" and meter["source"] == "register" and meter["readings"] == 96
    assert meter["litres"] == pytest.approx(7563, abs=0.5)
    assert meter["quiet_litres"] == pytest.approx(108, abs=0.5)
    assert meter["quiet_min_flow_l_per_min"] == pytest.approx(0.6, abs=0.001)
    html = files.html.read_text()
    assert "No water meter reported" not in html and "No flow meter reported" not in html
    assert "volume register" in html


def _water_alert(rule: str, details: dict[str, object]) -> AlertSignal:
    return AlertSignal("hill", rule, "wm-reg", SignalAction.RAISE, berlin(2, 5), Severity.WARNING,
                       f"{rule} at wm-reg", {"building": "B", "room": "B-WC", "device": "wm-reg", **details})


def test_litres_lost_are_the_alerts_own_figure_not_a_recount(tmp_path: Path) -> None:
    # The night-flow alert states 2640 L lost (its `litres_lost`). A continuous-flow alert of an
    # older release on the same meter holds only `litres` = 6726, every litre since the flow
    # began, ordinary day use included: not a loss, so not read. The day's loss is 2640 L.
    db = _store_alerts(tmp_path / "state.db",
                       _water_alert("water_night_flow", {"litres_lost": 2640.0, "estimated_litres_lost": 270.0}),
                       _water_alert("water_continuous_flow", {"litres": 6726.0}))
    r = report(db, None, "2026-12-01", tmp_path / "out").report
    assert {leak["rule"]: leak["litres_lost"] for leak in r["water"]["leaks"]} == {
        "water_night_flow": 2640.0, "water_continuous_flow": None}
    assert r["water"]["litres_lost_by_meter"] == {"wm-reg": 2640.0}
    assert r["summary"]["litres_lost"] == 2640.0


# --------------------------------------------------------------------------- patrols


PATROL_RULES = RulesConfig.model_validate({"patrol": {"routes": [
    # 23:30 round, walked with a wand: deadlines 23:40 (cp-a) and 23:50 (cp-b), upload due
    # 240 min after the last deadline: 03:50.
    {"id": "north", "checkpoints": ["cp-a", "cp-b"], "rounds": ["23:30"], "wand": True},
    # 01:00 round, fixed reader: deadline 01:10 (cp-c).
    {"id": "south", "checkpoints": ["cp-c"], "rounds": ["01:00"]},
    # 03:00 round, wand: deadline 03:10, upload due 07:10.
    {"id": "east", "checkpoints": ["cp-e"], "rounds": ["03:00"], "wand": True},
]}})


def _tap(tag: str, at: datetime, source: TapSource, device: str) -> PatrolTap:
    return PatrolTap(id=stable_event_id("hill", "tap", tag, at.isoformat()), site="hill", device=device,
                     event_time=at, reader=device, tag=tag, guard="guard-lee", source=source)


@pytest.fixture(scope="module")
def patrol_night(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Night of Tue 1 Dec: the north round is walked in time (cp-a 23:32, cp-b 23:40) with
    a wand docked at 06:10; the south round starts 40 min late (cp-c at 01:50, its deadline
    01:10); the east round is walked in time (cp-e 03:05) with a wand docked at 04:00. A
    meter reports every 5 min all night (the live data the wand's taps follow)."""
    start, end = berlin(1, 18), berlin(2, 8)
    live: list[Event] = [power("ac-1", at, 0) for at in every(start, end)]
    live.append(_tap("cp-c", berlin(2, 1, 50), TapSource.ONLINE, "reader-1"))
    wand = [_tap("cp-a", berlin(1, 23, 32), TapSource.WAND, "wand-1"), _tap("cp-b", berlin(1, 23, 40), TapSource.WAND, "wand-1")]
    east = [_tap("cp-e", berlin(2, 3, 5), TapSource.WAND, "wand-1")]
    uploads = [(berlin(2, 6, 10), wand), (berlin(2, 4, 0), east)]
    return run(tmp_path_factory.mktemp("patrol"), Feed(live, uploads), start, end + timedelta(minutes=10), PATROL_RULES)


def test_a_wand_round_shows_when_it_was_uploaded_and_late_rounds_and_uploads_are_listed(
    patrol_night: tuple[Path, Path], tmp_path: Path,
) -> None:
    files = report(*patrol_night, "2026-12-01", tmp_path / "out", PATROL_RULES)
    p = files.report["patrols"]
    north = next(r for r in p["rounds"] if r["route"] == "north")
    # Walked whole and in time: done, nothing missed or late.
    assert (north["done"], north["missed"], north["late"], north["wand"], north["awaiting_upload"]) == (True, 0, 0, True, False)
    # Docked at 06:10 (05:10 UTC), after its upload deadline 03:50: one late-upload alert,
    # 06:10 - 03:50 = 140 min late. The report shows the upload time the alert states (the
    # rule dates an upload by its clock's tick, so within 5 min of the dock), not its own.
    [upload] = p["late_uploads"]
    assert upload["round"] == "north:2026-12-01T23:30" and upload["upload_deadline"] == "2026-12-02T02:50:00+00:00"
    assert upload["minutes_late"] == pytest.approx(140, abs=5)
    assert north["uploaded_at"] == upload["uploaded_at"] and north["uploaded_at_source"] == "alert"
    uploaded = datetime.fromisoformat(north["uploaded_at"])
    assert abs(uploaded - datetime(2026, 12, 2, 5, 10, tzinfo=UTC)) <= timedelta(minutes=5)
    # Last tap 23:40: 06:10 - 23:40 = 6 h 30 min = 390 min later (within the same 5 min).
    assert north["upload_delay_minutes"] == pytest.approx(390, abs=5)
    # South started 40 min late (01:50 against 01:10): one late round, its checkpoint not
    # counted late on its own.
    [late] = p["late_rounds"]
    assert (late["round"], late["minutes_late"]) == ("south:2026-12-02T01:00", 40)
    assert next(r for r in p["rounds"] if r["route"] == "south")["late"] == 0
    # East was uploaded in time (04:00, due 07:10): no alert, so its upload time comes from the
    # historian's write order: the newest live reading stored before its tap is the 04:00 one
    # (03:00 UTC); 04:00 - 03:05 = 55 min after its last tap.
    east = next(r for r in p["rounds"] if r["route"] == "east")
    assert (east["done"], east["wand"], east["upload_late"], east["awaiting_upload"]) == (True, True, False, False)
    assert (east["uploaded_at"], east["uploaded_at_source"], east["upload_delay_minutes"]) == ("2026-12-02T03:00:00+00:00", "write_order", 55)
    assert sorted(p["wand_rounds"]) == ["east:2026-12-02T03:00", "north:2026-12-01T23:30"]
    html = files.html.read_text()
    assert "walked with a wand" in html and "55 min after its last tap" in html and "uploaded ~04:00" in html
    assert "Wands uploaded late" in html and "Rounds walked late" in html


# --------------------------------------------------------------------------- a DST day, the API, the CLI


def test_the_report_of_the_autumn_clock_change_is_25_hours_with_offsets(tmp_path: Path) -> None:
    # A forced door at the second 02:30 of Sun 25 Oct 2026 (CET, 01:30 UTC).
    forced = AlertSignal("hill", "door_forced", "gate", SignalAction.RAISE, datetime(2026, 10, 25, 1, 30, tzinfo=UTC),
                         Severity.CRITICAL, "Door gate forced", {"door": "gate"})
    db = _store_alerts(tmp_path / "state.db", forced)
    files = report(db, None, "2026-10-24", tmp_path / "out")
    period = files.report["period"]
    # Sat 24 Oct 08:00 CEST (06:00 UTC) to Sun 25 Oct 08:00 CET (07:00 UTC): 25 h.
    assert (period["start"], period["end"], period["hours"], period["clock_change"]) == (
        "2026-10-24T06:00:00+00:00", "2026-10-25T07:00:00+00:00", 25, True)
    html = files.html.read_text()
    assert "02:30+01:00" in html and "25 h" in html
    # Open at the end of the day: 08:00 CET (07:00 UTC) - 01:30 UTC = 5.5 h, not 6.5.
    assert [o["age_hours"] for o in files.report["open_alerts"]] == [5.5]


def test_the_api_report_uses_the_configured_day_start(broker_config: BrokerConfig, tmp_path: Path) -> None:
    config = gateway_config(broker_config, tmp_path)
    config = config.model_copy(update={"report": ReportConfig(day_start=time(6, 0))})
    server = start(config)
    try:
        client = server.client("manager")
        data = client.get("/api/reports/2026-11-17", params={"format": "json"}).raise_for_status().json()
        # 06:00 local (UTC+1) on 17 Nov to 06:00 on 18 Nov: 05:00 UTC to 05:00 UTC.
        assert (data["period"]["start"], data["period"]["end"]) == ("2026-11-17T05:00:00+00:00", "2026-11-18T05:00:00+00:00")
        assert data["day"] == data["night"] == "2026-11-17"
        assert client.get("/api/reports/9999-12-31").status_code == 422
    finally:
        server.api.stop()
        server.gateway.stop()


def test_warden_report_takes_day_night_and_day_start(tmp_path: Path) -> None:
    # The 16 h alert of the split test, reported from the command line for 1 Dec with the day
    # starting at 10:00: 1 Dec 10:00-12:00 is 2 h of 16: 16 x 2/16 = 2.0 kWh.
    since, until = berlin(30, 20, month=11), berlin(1, 12)
    db = _store_alerts(tmp_path / "state.db", _energy_alert(since + timedelta(minutes=15), since, until, 16.0),
                       _energy_alert(until, since, until, 16.0, SignalAction.RESOLVE))
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump(SITE.model_dump(mode="json")))
    for option in ("--day", "--night"):
        out = tmp_path / option.strip("-")
        result = warden("report", "--state-db", db, "--site", site, option, "2026-12-01", "--day-start", "10:00", "--out", out)
        assert result.returncode == 0, output(result)
        assert json.loads((out / "report.json").read_text())["summary"]["energy_kwh"] == 2.0
    result = warden("report", "--state-db", db, "--site", site, "--day", "2026-12-01", "--day-start", "25:00")
    assert result.returncode == 2 and "--day-start: expected a local time like 08:00, got '25:00'" in result.stderr
