"""SqliteHistorian against a real SQLite file: what goes in comes back, once."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import SqliteHistorianConfig
from gateway.historian import Historian, open_historian
from gateway.historian import sqlite as sqlite_historian
from gateway.historian.points import Point, event_point
from gateway.historian.sqlite import SqliteHistorian
from warden.config import DeviceLocation, SiteConfig
from warden.events import (
    DeviceState,
    DeviceStatus,
    DoorAction,
    DoorEvent,
    PatrolTap,
    Quantity,
    Reading,
    TapSource,
    stable_event_id,
)

T0 = datetime(2026, 11, 17, 21, 30, 0, 123456, tzinfo=timezone.utc)


def reading(site: str, device: str, at: datetime, value: float, quantity: Quantity = Quantity.POWER) -> Reading:
    unit = {Quantity.POWER: "W", Quantity.ENERGY: "kWh"}.get(quantity, "m3/h")
    return Reading(
        id=stable_event_id(device, at, quantity), site=site, device=device, event_time=at,
        quantity=quantity, value=value, unit=unit, cumulative=quantity is Quantity.ENERGY,
    )  # fmt: skip


def door(site: str, at: datetime, card: str | None = "04A1B2C3") -> DoorEvent:
    return DoorEvent(
        id=stable_event_id("door", at, card), site=site, device="door-ctl-1", event_time=at,
        action=DoorAction.GRANTED, door="office-101-main", card=card,
    )  # fmt: skip


def tap(site: str, at: datetime) -> PatrolTap:
    return PatrolTap(
        id=stable_event_id("tap", at), site=site, device="reader-lobby", event_time=at,
        reader="lobby-wall", tag="cp-0042", guard="g-17", source=TapSource.WAND,
    )  # fmt: skip


def status(site: str, at: datetime) -> DeviceStatus:
    return DeviceStatus(
        id=stable_event_id("status", at), site=site, device="agent-store", event_time=at,
        state=DeviceState.HEARTBEAT, counters={"events": 812, "error_bad_checksum": 3},
    )  # fmt: skip


@pytest.fixture
def historian(tmp_path: Path, site: SiteConfig) -> Iterator[SqliteHistorian]:
    h = SqliteHistorian(tmp_path / "history.db", site)
    yield h
    h.close()


def tags(site: SiteConfig, building: str, room: str, device: str, **extra: str) -> dict[str, str]:
    return {"site": site.id, "building": building, "room": room, "device": device, **extra}


def test_each_kind_comes_back_with_location_tags_fields_and_exact_time(
    historian: SqliteHistorian, site: SiteConfig
) -> None:
    events = [
        reading(site.id, "meter-101", T0, 1234.5),
        reading(site.id, "meter-101", T0 + timedelta(seconds=1), 98765.25, Quantity.ENERGY),
        door(site.id, T0 + timedelta(seconds=2)),
        tap(site.id, T0 + timedelta(seconds=3)),
        status(site.id, T0 + timedelta(seconds=4)),
        reading(site.id, "ghost-meter", T0, 7.0),
    ]
    historian.write(events)

    office = ("hq", "office-101")
    assert historian.series("meter-101") == [
        Point("power", tags(site, *office, "meter-101", unit="W"), {"value": 1234.5}, T0, events[0].id),
        Point("energy", tags(site, *office, "meter-101", unit="kWh"), {"value": 98765.25},
              T0 + timedelta(seconds=1), events[1].id),
    ]  # fmt: skip
    assert historian.series("door-ctl-1") == [
        Point("door", tags(site, *office, "door-ctl-1", action="granted", door="office-101-main"),
              {"count": 1, "card": "04A1B2C3"}, T0 + timedelta(seconds=2), events[2].id),
    ]  # fmt: skip
    assert historian.series("reader-lobby") == [
        Point("patrol_tap", tags(site, "hq", "lobby", "reader-lobby", source="wand", reader="lobby-wall"),
              {"count": 1, "tag_id": "cp-0042", "guard": "g-17"}, T0 + timedelta(seconds=3), events[3].id),
    ]  # fmt: skip
    assert historian.series("agent-store") == [
        Point("device_status", tags(site, "store", "cold-room", "agent-store", state="heartbeat"),
              {"events": 812.0, "error_bad_checksum": 3.0, "count": 1}, T0 + timedelta(seconds=4), events[4].id),
    ]  # fmt: skip
    assert historian.series("ghost-meter") == [
        Point("power", tags(site, "unknown", "unknown", "ghost-meter", unit="W"), {"value": 7.0}, T0, events[5].id)
    ]
    assert historian.series("ghost-meter")[0].time.tzinfo is not None
    assert historian.count() == 6
    assert historian.stats() == {"points_written": 6.0, "duplicates_ignored": 0.0}


def test_high_cardinality_values_are_fields_never_tags(site: SiteConfig) -> None:
    location = DeviceLocation(building="hq", room="lobby", schedule=None)
    for event in (door(site.id, T0), tap(site.id, T0)):
        point = event_point(event, location)
        high_cardinality = {"04A1B2C3", "cp-0042", "g-17", event.id}
        assert not high_cardinality & set(point.tags.values()), point.tags
        assert set(point.fields.values()) & high_cardinality


def test_status_counters_never_clash_with_tags_or_count(site: SiteConfig) -> None:
    event = DeviceStatus(
        id="evt-status-clash", site=site.id, device="agent-store", event_time=T0, state=DeviceState.ONLINE,
        counters={"count": 5, "state": 2, "uptime_s": 60},
    )  # fmt: skip

    point = event_point(event, None)

    assert point.fields == {"counter_count": 5.0, "counter_state": 2.0, "uptime_s": 60.0, "count": 1}
    assert point.tags["state"] == "online"


def test_event_of_another_site_is_not_placed_in_this_sites_rooms(
    historian: SqliteHistorian, site: SiteConfig
) -> None:
    historian.write([reading("elsewhere", "meter-101", T0, 5.0)])

    [point] = historian.series("meter-101")
    assert (point.tags["site"], point.tags["building"], point.tags["room"]) == ("elsewhere", "unknown", "unknown")


def test_discard_after_a_position_drops_only_later_writes(historian: SqliteHistorian, site: SiteConfig) -> None:
    kept = historian.write([reading(site.id, "meter-101", T0, 1.0), reading(site.id, "meter-101", T0 + timedelta(seconds=1), 2.0)])
    historian.write([reading(site.id, "meter-101", T0 + timedelta(seconds=2), 3.0)])
    historian.write([reading(site.id, "flow-7", T0, 4.0)])

    assert historian.discard_after(kept) == 2
    assert [p.fields["value"] for p in historian.series("meter-101")] == [1.0, 2.0]
    assert historian.series("flow-7") == []
    assert historian.write([]) == kept  # an empty write leaves the position where it was
    later = historian.write([reading(site.id, "flow-7", T0, 5.0)])
    assert later != kept and historian.discard_after(later) == 0


def test_a_position_of_another_history_file_discards_nothing(historian: SqliteHistorian, site: SiteConfig, tmp_path: Path) -> None:
    other = SqliteHistorian(tmp_path / "other.db", site)
    foreign = other.write([])
    historian.write([reading(site.id, "meter-101", T0, 1.0)])

    assert historian.discard_after(foreign) == 0
    assert historian.discard_after("garbage") == 0
    assert historian.count() == 1


def test_a_file_from_before_positions_still_stores_an_event_id_once(site: SiteConfig, tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the schema of earlier releases: event ids UNIQUE
        db.execute(
            "CREATE TABLE points (id INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, time_ns INTEGER NOT NULL, "
            "measurement TEXT NOT NULL, site TEXT NOT NULL, building TEXT NOT NULL, room TEXT NOT NULL, "
            "device TEXT NOT NULL, tags TEXT NOT NULL, fields TEXT NOT NULL)"
        )
    historian = SqliteHistorian(path, site)
    first = reading(site.id, "meter-101", T0, 100.0)

    historian.write([first])
    historian.write([first.model_copy(update={"value": 999.0}), reading(site.id, "meter-101", T0 + timedelta(seconds=1), 101.0)])

    assert [p.fields["value"] for p in historian.series("meter-101")] == [100.0, 101.0]
    assert historian.stats() == {"points_written": 2.0, "duplicates_ignored": 1.0}


def test_door_without_card_has_no_card_field(historian: SqliteHistorian, site: SiteConfig) -> None:
    historian.write([door(site.id, T0, card=None)])

    assert historian.series("door-ctl-1")[0].fields == {"count": 1}


def test_series_filters_by_measurement_and_half_open_time_range(
    historian: SqliteHistorian, site: SiteConfig
) -> None:
    minutes = [T0 + timedelta(minutes=m) for m in range(10)]
    historian.write([reading(site.id, "meter-101", at, float(i)) for i, at in enumerate(minutes)])
    historian.write([reading(site.id, "meter-101", minutes[5], 500.0, Quantity.ENERGY)])

    power = historian.series("meter-101", "power", since=minutes[2], until=minutes[6])
    assert [p.time for p in power] == minutes[2:6]
    assert [p.measurement for p in historian.series("meter-101", since=minutes[5], until=minutes[6])] == [
        "power",
        "energy",
    ]
    assert historian.series("meter-101", "flow") == []
    assert historian.series("flow-7") == []


def test_series_limit_keeps_the_latest_points_oldest_first(historian: SqliteHistorian, site: SiteConfig) -> None:
    minutes = [T0 + timedelta(minutes=m) for m in range(10)]
    historian.write([reading(site.id, "meter-101", at, float(i)) for i, at in enumerate(minutes)])

    assert [p.fields["value"] for p in historian.series("meter-101", limit=3)] == [7.0, 8.0, 9.0]


def test_series_refuses_naive_datetimes(historian: SqliteHistorian) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        historian.series("meter-101", since=datetime(2026, 11, 17))


def test_concurrent_writers_and_readers_lose_nothing(historian: SqliteHistorian, site: SiteConfig) -> None:
    errors: list[BaseException] = []

    def writer(device: str) -> None:
        try:
            for batch in range(20):
                at = T0 + timedelta(minutes=batch)
                historian.write([reading(site.id, device, at + timedelta(seconds=s), float(s)) for s in range(10)])
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(50):
                historian.series("meter-101", limit=5)
                historian.count()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(d,)) for d in ("meter-101", "flow-7", "ghost-meter")]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert historian.count() == 3 * 20 * 10
    assert len(historian.series("flow-7", limit=10_000)) == 200


def test_points_survive_reopening_and_the_file_is_in_wal_mode(tmp_path: Path, site: SiteConfig) -> None:
    path = tmp_path / "nested" / "history.db"
    first = SqliteHistorian(path, site)
    first.write([reading(site.id, "meter-101", T0, 42.0)])
    first.close()

    again = SqliteHistorian(path, site)
    try:
        assert [p.fields for p in again.series("meter-101")] == [{"value": 42.0}]
    finally:
        again.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_write_after_close_is_an_error(tmp_path: Path, site: SiteConfig) -> None:
    historian = SqliteHistorian(tmp_path / "history.db", site)
    historian.close()

    with pytest.raises(RuntimeError, match="closed"):
        historian.write([reading(site.id, "meter-101", T0, 1.0)])


def test_open_historian_builds_sqlite_from_config(tmp_path: Path, site: SiteConfig) -> None:
    historian = open_historian(SqliteHistorianConfig(type="sqlite", path=tmp_path / "h.db"), site)
    try:
        assert isinstance(historian, SqliteHistorian)
        assert isinstance(historian, Historian)
        historian.write([reading(site.id, "meter-101", T0, 1.0)])
        historian.flush()
        assert historian.count() == 1
    finally:
        historian.close()


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_reading_value_is_stored_as_the_json_encoder_writes_it(value: float) -> None:
    """Readings skip the JSON encoder for speed; the text must be the encoder's own."""
    assert sqlite_historian._encode_fields({"value": value}) == json.dumps({"value": value})
    assert json.loads(sqlite_historian._encode_fields({"value": value}))["value"] == value
