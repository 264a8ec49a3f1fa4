"""InfluxHistorian against a real VictoriaMetrics speaking InfluxDB's /api/v2/write.

VictoriaMetrics names series `<measurement>_<field>`, keeps milliseconds and stores
string fields (card, tag_id, guard) as 0, so those are left out of the comparisons.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from gateway.historian import Historian, open_historian
from gateway.historian.influx import InfluxHistorian
from gateway.historian.points import to_epoch_ns
from tests.support.victoria import Sample, VictoriaMetrics, free_port, wait_until
from warden.config import InfluxHistorianConfig, SiteConfig
from warden.events import (
    DeviceState,
    DeviceStatus,
    DoorAction,
    DoorEvent,
    Event,
    PatrolTap,
    Quantity,
    Reading,
    TapSource,
    stable_event_id,
)

T0 = datetime(2026, 11, 17, 21, 30, 0, 123456, tzinfo=timezone.utc)
T0_MS = to_epoch_ns(T0) // 1_000_000  # VictoriaMetrics keeps milliseconds: ...123456 us -> ...123 ms

NUMERIC = '__name__!~".*_(card|tag_id|guard)"'


def config(url: str, **overrides: Any) -> InfluxHistorianConfig:
    return InfluxHistorianConfig.model_validate(
        {"type": "influxdb", "url": url, "token": "test-token", "org": "warden", "bucket": "warden", **overrides}
    )


@pytest.fixture
def historian(victoria_metrics: VictoriaMetrics, site: SiteConfig) -> Iterator[InfluxHistorian]:
    # A long flush interval: nothing is sent until flush(), so the tests see what flush() does.
    h = InfluxHistorian(config(victoria_metrics.url, flush_interval_ms=60_000), site)
    yield h
    h.close()


def readings(site: str, device: str, start: datetime, n: int, step: timedelta = timedelta(seconds=10)) -> list[Event]:
    return [
        Reading(
            id=stable_event_id(device, start + i * step), site=site, device=device, event_time=start + i * step,
            quantity=Quantity.POWER, value=1000.0 + i, unit="W",
        )  # fmt: skip
        for i in range(n)
    ]


def mixed_events(site: str) -> list[Event]:
    at = [T0 + timedelta(seconds=s) for s in range(6)]
    return [
        Reading(id="evt-power-0001", site=site, device="meter-101", event_time=at[0],
                quantity=Quantity.POWER, value=1234.5, unit="W"),
        Reading(id="evt-energy-0001", site=site, device="meter-101", event_time=at[1],
                quantity=Quantity.ENERGY, value=98765.25, unit="kWh", cumulative=True),
        DoorEvent(id="evt-door-0001", site=site, device="door-ctl-1", event_time=at[2],
                  action=DoorAction.FORCED, door="office-101-main", card="04A1B2C3"),
        PatrolTap(id="evt-tap-0001", site=site, device="reader-lobby", event_time=at[3],
                  reader="lobby-wall", tag="cp-0042", guard="g-17", source=TapSource.WAND),
        DeviceStatus(id="evt-status-0001", site=site, device="agent-store", event_time=at[4],
                     state=DeviceState.HEARTBEAT, counters={"events": 812, "error_bad_checksum": 3}),
        Reading(id="evt-ghost-0001", site=site, device="ghost-meter", event_time=at[5],
                quantity=Quantity.FLOW, value=2.5, unit="m3/h"),
    ]  # fmt: skip


def labels(site: SiteConfig, building: str, room: str, device: str, **extra: str) -> dict[str, str]:
    return {"site": site.id, "building": building, "room": room, "device": device, **extra}


def test_every_kind_arrives_as_series_with_low_cardinality_labels(
    historian: InfluxHistorian, victoria_metrics: VictoriaMetrics, site: SiteConfig
) -> None:
    historian.write(mixed_events(site.id))
    historian.flush()

    office = ("hq", "office-101")
    expected = [
        Sample("power_value", labels(site, *office, "meter-101", unit="W"), 1234.5, T0_MS),
        Sample("energy_value", labels(site, *office, "meter-101", unit="kWh"), 98765.25, T0_MS + 1000),
        Sample("door_count", labels(site, *office, "door-ctl-1", action="forced", door="office-101-main"),
               1.0, T0_MS + 2000),
        Sample("patrol_tap_count", labels(site, "hq", "lobby", "reader-lobby", source="wand", reader="lobby-wall"),
               1.0, T0_MS + 3000),
        Sample("device_status_count", labels(site, "store", "cold-room", "agent-store", state="heartbeat"),
               1.0, T0_MS + 4000),
        Sample("device_status_error_bad_checksum",
               labels(site, "store", "cold-room", "agent-store", state="heartbeat"), 3.0, T0_MS + 4000),
        Sample("device_status_events", labels(site, "store", "cold-room", "agent-store", state="heartbeat"),
               812.0, T0_MS + 4000),
        Sample("flow_value", labels(site, "unknown", "unknown", "ghost-meter", unit="m3/h"), 2.5, T0_MS + 5000),
    ]  # fmt: skip
    match = f'{{site="{site.id}",{NUMERIC}}}'
    assert victoria_metrics.wait_for_samples(match, len(expected)) == expected
    assert historian.stats() == {
        "points_queued": 6.0, "points_written": 6.0, "points_failed": 0.0, "points_pending": 0.0,
        "batches_written": 1.0, "batches_failed": 0.0, "retries": 0.0,
    }  # fmt: skip


def test_flush_blocks_until_the_batch_is_sent(
    historian: InfluxHistorian, victoria_metrics: VictoriaMetrics, site: SiteConfig
) -> None:
    historian.write(readings(site.id, "meter-101", T0, 50))
    assert historian.stats()["points_pending"] == 50  # the 60 s flush interval has not elapsed

    historian.flush()

    assert historian.stats()["points_written"] == 50
    assert len(victoria_metrics.samples(f'{{site="{site.id}"}}')) == 50  # no polling: flush() has returned


def test_writes_after_a_flush_go_out_on_the_next_flush(
    historian: InfluxHistorian, victoria_metrics: VictoriaMetrics, site: SiteConfig
) -> None:
    historian.write(readings(site.id, "meter-101", T0, 3))
    historian.flush()
    historian.write(readings(site.id, "flow-7", T0, 4))
    historian.flush()

    samples = victoria_metrics.samples(f'{{site="{site.id}"}}')
    assert sorted({s.labels["device"] for s in samples}) == ["flow-7", "meter-101"]
    assert len(samples) == 7


def test_a_line_break_in_a_string_field_does_not_break_the_batch(
    historian: InfluxHistorian, victoria_metrics: VictoriaMetrics, site: SiteConfig
) -> None:
    odd_card = DoorEvent(id="evt-door-newline", site=site.id, device="door-ctl-1", event_time=T0,
                         action=DoorAction.DENIED, door="office-101-main", card="04A1\nB2C3")  # fmt: skip
    historian.write([odd_card, *readings(site.id, "meter-101", T0, 2)])
    historian.flush()

    assert historian.stats()["points_written"] == 3
    names = [s.name for s in victoria_metrics.samples(f'{{site="{site.id}",{NUMERIC}}}')]
    assert sorted(names) == ["door_count", "power_value", "power_value"]


def test_batches_split_at_batch_size(victoria_metrics: VictoriaMetrics, site: SiteConfig) -> None:
    historian = InfluxHistorian(config(victoria_metrics.url, batch_size=10, flush_interval_ms=60_000), site)
    try:
        historian.write(readings(site.id, "meter-101", T0, 35))
        historian.flush()
        stats = historian.stats()
    finally:
        historian.close()

    assert (stats["points_written"], stats["batches_written"]) == (35, 4)
    assert len(victoria_metrics.samples(f'{{site="{site.id}"}}')) == 35


def test_unreachable_server_does_not_raise_and_counts_the_failed_batch(
    site: SiteConfig, caplog: pytest.LogCaptureFixture
) -> None:
    closed_port = free_port()
    historian = InfluxHistorian(
        config(f"http://127.0.0.1:{closed_port}", retry_interval_ms=10, max_retries=2, flush_interval_ms=60_000,
               timeout_ms=1000),
        site,
    )  # fmt: skip
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="gateway.historian.influx"):
        historian.write(readings(site.id, "meter-101", T0, 3))  # must not raise
        historian.close()

    stats = historian.stats()
    assert (stats["points_written"], stats["points_failed"], stats["points_pending"]) == (0, 3, 0)
    assert stats["batches_failed"] >= 1
    assert stats["retries"] == 2 * stats["batches_failed"]  # max_retries=2 per batch
    assert time.monotonic() - started < 10
    ours = [r for r in caplog.records if r.name == "gateway.historian.influx"]
    dropped = [r for r in ours if r.levelno == logging.ERROR]
    assert sum(r.points for r in dropped) == 3  # type: ignore[attr-defined]
    assert all(r.url == f"http://127.0.0.1:{closed_port}" for r in ours)  # type: ignore[attr-defined]
    assert len([r for r in ours if r.levelno == logging.WARNING]) == stats["retries"]


def test_points_written_while_the_server_is_down_arrive_after_it_restarts(
    private_victoria_metrics: VictoriaMetrics, site: SiteConfig
) -> None:
    server = private_victoria_metrics
    historian = InfluxHistorian(
        config(server.url, retry_interval_ms=100, max_retries=30, flush_interval_ms=50, timeout_ms=2000), site
    )
    try:
        before = readings(site.id, "meter-101", T0, 20)
        historian.write(before)
        historian.flush()
        server.stop()

        # Three writes, each after one more retry: three batches queue behind the failing one.
        during = readings(site.id, "meter-101", T0 + timedelta(hours=1), 30)
        for retries, chunk in enumerate((during[:10], during[10:20], during[20:]), start=1):
            historian.write(chunk)
            wait_until(lambda: historian.stats()["retries"] >= retries or historian.stats()["points_failed"],
                       f"retry {retries} of the failing batch")  # fmt: skip
        assert historian.stats()["points_failed"] == 0
        server.start()
        historian.flush()
        stats = historian.stats()
    finally:
        historian.close()

    assert (stats["points_written"], stats["points_failed"]) == (50, 0)
    assert stats["retries"] >= 3
    samples = server.samples(f'{{site="{site.id}"}}')
    expected_ms = sorted(to_epoch_ns(e.event_time) // 1_000_000 for e in before + during)
    assert [s.timestamp_ms for s in samples] == expected_ms


def test_write_after_close_is_an_error(victoria_metrics: VictoriaMetrics, site: SiteConfig) -> None:
    historian = InfluxHistorian(config(victoria_metrics.url), site)
    historian.close()
    historian.close()  # idempotent

    with pytest.raises(RuntimeError, match="closed"):
        historian.write(readings(site.id, "meter-101", T0, 1))


def test_open_historian_builds_influx_from_config(victoria_metrics: VictoriaMetrics, site: SiteConfig) -> None:
    historian = open_historian(config(victoria_metrics.url), site)
    try:
        assert isinstance(historian, InfluxHistorian)
        assert isinstance(historian, Historian)
        historian.write(readings(site.id, "flow-7", T0, 2))
        historian.flush()
        assert historian.stats()["points_written"] == 2
    finally:
        historian.close()
