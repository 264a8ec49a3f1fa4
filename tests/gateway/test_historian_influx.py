"""InfluxHistorian against a real VictoriaMetrics speaking InfluxDB's /api/v2/write.

VictoriaMetrics names series `<measurement>_<field>`, keeps milliseconds and stores
string fields (card, tag_id, guard) as 0, so those are left out of the comparisons.
It does not de-duplicate: a point sent twice shows up as two samples at one timestamp,
so comparing the exported timestamps with the expected ones also proves exactly-once.

VictoriaMetrics answers 204 even to malformed line protocol, so the tests of HTTP
statuses (refused points, retried 4xx/5xx) use `WriteStub`, a small local HTTP server
that answers /api/v2/write with the status the test chooses. It is the only stub here.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.drivers.mqtt_json import MqttJsonDevice, MqttJsonDriver
from gateway.config import InfluxHistorianConfig
from gateway.historian import Historian, open_historian
from gateway.historian.influx import InfluxHistorian, SpoolFull, retry_delay_seconds
from gateway.historian.points import to_epoch_ns
from tests.support.victoria import Sample, VictoriaMetrics, free_port, wait_until
from warden.clock import ManualClock
from warden.config import ConfigError, SiteConfig, load_config
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

#: Quick retries, so outages in tests are ridden out in well under a second after recovery.
FAST_RETRY = {"retry_interval_ms": 20, "max_retry_delay_ms": 200, "timeout_ms": 2000}


def config(url: str, spool: Path, **overrides: Any) -> InfluxHistorianConfig:
    return InfluxHistorianConfig.model_validate(
        {"type": "influxdb", "url": url, "token": "test-token", "org": "warden", "bucket": "warden",
         "spool_path": str(spool), **overrides}
    )  # fmt: skip


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "influx-spool.db"


@pytest.fixture
def historian(victoria_metrics: VictoriaMetrics, site: SiteConfig, spool: Path) -> Iterator[InfluxHistorian]:
    # A long flush interval: nothing is sent until flush(), so the tests see what flush() does.
    h = InfluxHistorian(config(victoria_metrics.url, spool, flush_interval_ms=60_000), site)
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


def expected_ms(events: list[Event]) -> list[int]:
    return sorted(to_epoch_ns(e.event_time) // 1_000_000 for e in events)


def spool_rows(spool: Path, table: str = "spool") -> int:
    with sqlite3.connect(spool) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


# --------------------------------------------------------------------------- the happy path


def test_every_kind_arrives_as_series_with_low_cardinality_labels(
    historian: InfluxHistorian, victoria_metrics: VictoriaMetrics, site: SiteConfig
) -> None:
    historian.write(mixed_events(site.id))
    assert historian.flush(timeout=15)

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
        "points_spooled": 6.0, "points_written": 6.0, "points_rejected": 0.0, "points_pending": 0.0,
        "batches_written": 1.0, "failed_attempts": 0.0, "writes_refused": 0.0, "oldest_pending_age_seconds": 0.0,
    }  # fmt: skip


def test_write_commits_to_the_spool_and_flush_blocks_until_the_batch_is_sent(
    historian: InfluxHistorian, victoria_metrics: VictoriaMetrics, site: SiteConfig, spool: Path
) -> None:
    historian.write(readings(site.id, "meter-101", T0, 50))
    assert historian.stats()["points_pending"] == 50  # the 60 s flush interval has not elapsed
    assert spool_rows(spool) == 50  # on disk when write() returned, seen by another connection

    assert historian.flush(timeout=15) is True

    assert historian.stats()["points_written"] == 50
    assert spool_rows(spool) == 0  # deleted only once the server accepted them
    assert len(victoria_metrics.samples(f'{{site="{site.id}"}}')) == 50  # no polling: flush() has returned


def test_a_partial_batch_goes_out_after_the_flush_interval_without_a_flush(
    victoria_metrics: VictoriaMetrics, site: SiteConfig, spool: Path
) -> None:
    historian = InfluxHistorian(config(victoria_metrics.url, spool, flush_interval_ms=100), site)
    try:
        historian.write(readings(site.id, "meter-101", T0, 3))
        wait_until(lambda: historian.stats()["points_written"] == 3, "the interval to send the partial batch")
    finally:
        historian.close()
    assert len(victoria_metrics.samples(f'{{site="{site.id}"}}')) == 3


def test_writes_after_a_flush_go_out_on_the_next_flush(
    historian: InfluxHistorian, victoria_metrics: VictoriaMetrics, site: SiteConfig
) -> None:
    historian.write(readings(site.id, "meter-101", T0, 3))
    assert historian.flush(timeout=15)
    historian.write(readings(site.id, "flow-7", T0, 4))
    assert historian.flush(timeout=15)

    samples = victoria_metrics.samples(f'{{site="{site.id}"}}')
    assert sorted({s.labels["device"] for s in samples}) == ["flow-7", "meter-101"]
    assert len(samples) == 7


def test_a_line_break_in_a_string_field_does_not_break_the_batch(
    historian: InfluxHistorian, victoria_metrics: VictoriaMetrics, site: SiteConfig
) -> None:
    odd_card = DoorEvent(id="evt-door-newline", site=site.id, device="door-ctl-1", event_time=T0,
                         action=DoorAction.DENIED, door="office-101-main", card="04A1\nB2C3")  # fmt: skip
    historian.write([odd_card, *readings(site.id, "meter-101", T0, 2)])
    assert historian.flush(timeout=15)

    assert historian.stats()["points_written"] == 3
    names = [s.name for s in victoria_metrics.samples(f'{{site="{site.id}",{NUMERIC}}}')]
    assert sorted(names) == ["door_count", "power_value", "power_value"]


def test_batches_split_at_batch_size(victoria_metrics: VictoriaMetrics, site: SiteConfig, spool: Path) -> None:
    historian = InfluxHistorian(config(victoria_metrics.url, spool, batch_size=10, flush_interval_ms=60_000), site)
    try:
        historian.write(readings(site.id, "meter-101", T0, 35))
        assert historian.flush(timeout=15)
        stats = historian.stats()
    finally:
        historian.close()

    assert (stats["points_written"], stats["batches_written"]) == (35, 4)
    assert len(victoria_metrics.samples(f'{{site="{site.id}"}}')) == 35


def test_close_sends_what_is_spooled_when_the_server_answers(
    victoria_metrics: VictoriaMetrics, site: SiteConfig, spool: Path
) -> None:
    historian = InfluxHistorian(config(victoria_metrics.url, spool, flush_interval_ms=60_000), site)
    historian.write(readings(site.id, "meter-101", T0, 5))
    historian.close()
    assert spool_rows(spool) == 0
    assert len(victoria_metrics.samples(f'{{site="{site.id}"}}')) == 5


# --------------------------------------------------------------------------- outages: nothing is dropped


def test_unreachable_server_keeps_the_points_spooled_and_retries_with_backoff(
    site: SiteConfig, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    closed_port = free_port()
    url = f"http://127.0.0.1:{closed_port}"
    historian = InfluxHistorian(config(url, spool, flush_interval_ms=10, **FAST_RETRY), site)
    try:
        with caplog.at_level(logging.DEBUG):
            historian.write(readings(site.id, "meter-101", T0, 3))  # must not raise
            wait_until(lambda: historian.stats()["failed_attempts"] >= 4, "four failed attempts")
            wait_until(lambda: historian.stats()["oldest_pending_age_seconds"] >= 0.2, "the spool to age")
        stats = historian.stats()
        started = time.monotonic()
    finally:
        historian.close()
    assert time.monotonic() - started < 2  # close() does not wait for a server that is down

    assert (stats["points_written"], stats["points_rejected"], stats["points_pending"]) == (0, 0, 3)
    assert spool_rows(spool) == 3  # nothing dropped: all still on disk after close()
    ours = [r for r in caplog.records if r.name == "gateway.historian.influx" and r.levelno == logging.WARNING]
    assert len(ours) >= 4
    assert all(r.url == url and r.points == 3 for r in ours)  # type: ignore[attr-defined]
    delays = [r.retry_in_s for r in ours[:4]]  # type: ignore[attr-defined]
    assert delays[0] <= 0.04 and delays[3] >= 0.16  # 20 ms doubling: [20, 40] ms ... [160, 200] ms
    library = [r for r in caplog.records if r.name.startswith(("urllib3", "influxdb_client")) and r.levelno >= logging.INFO]
    assert library == []  # the historian's own log line is the only one per failure


def test_points_written_while_the_server_is_down_arrive_after_it_restarts(
    private_victoria_metrics: VictoriaMetrics, site: SiteConfig, spool: Path
) -> None:
    server = private_victoria_metrics
    historian = InfluxHistorian(config(server.url, spool, flush_interval_ms=50, **FAST_RETRY), site)
    try:
        before = readings(site.id, "meter-101", T0, 20)
        historian.write(before)
        assert historian.flush(timeout=15)
        server.stop()

        # Three writes, each after one more failed attempt: they queue behind the failing batch.
        during = readings(site.id, "meter-101", T0 + timedelta(hours=1), 30)
        for attempts, chunk in enumerate((during[:10], during[10:20], during[20:]), start=1):
            historian.write(chunk)
            wait_until(lambda: historian.stats()["failed_attempts"] >= attempts, f"failed attempt {attempts}")
        assert historian.flush(timeout=0.2) is False  # server still down: flush gives up, nothing lost
        assert historian.stats()["points_pending"] == 30
        server.start()
        assert historian.flush(timeout=30)
        stats = historian.stats()
    finally:
        historian.close()

    assert (stats["points_written"], stats["points_pending"], stats["points_rejected"]) == (50, 0, 0)
    samples = server.samples(f'{{site="{site.id}"}}')
    assert [s.timestamp_ms for s in samples] == expected_ms(before + during)  # each once, none missing


def test_spooled_points_survive_close_and_are_sent_by_the_next_historian(
    private_victoria_metrics: VictoriaMetrics, site: SiteConfig, spool: Path
) -> None:
    server = private_victoria_metrics
    settings = config(server.url, spool, flush_interval_ms=50, **FAST_RETRY)
    before = readings(site.id, "meter-101", T0, 10)
    during = readings(site.id, "flow-7", T0, 30)

    first = InfluxHistorian(settings, site)
    try:
        first.write(before)
        assert first.flush(timeout=15)
        server.stop()
        first.write(during)
        wait_until(lambda: first.stats()["failed_attempts"] >= 2, "the first historian to fail twice")
    finally:
        first.close()
    assert spool_rows(spool) == 30

    second = InfluxHistorian(settings, site)  # a gateway restart, the server still down
    try:
        assert second.stats()["points_pending"] == 30
        server.start()
        assert second.flush(timeout=30)
        stats = second.stats()
    finally:
        second.close()

    assert (stats["points_written"], stats["points_pending"]) == (30, 0)
    samples = server.samples(f'{{site="{site.id}"}}')
    assert [s.timestamp_ms for s in samples] == expected_ms(before + during)


def test_a_full_spool_refuses_writes_until_the_server_takes_points(
    private_victoria_metrics: VictoriaMetrics, site: SiteConfig, spool: Path
) -> None:
    server = private_victoria_metrics
    server.stop()
    historian = InfluxHistorian(config(server.url, spool, spool_max_points=10, flush_interval_ms=50, **FAST_RETRY), site)
    events = readings(site.id, "meter-101", T0, 12)
    try:
        historian.write(events[:6])
        historian.write(events[6:11])  # 6 < 10 pending: accepted whole, the spool now holds 11
        with pytest.raises(SpoolFull, match="spool_max_points=10"):
            historian.write(events[11:])
        assert historian.stats()["writes_refused"] == 1
        assert historian.stats()["points_pending"] == 11
        historian.write([])  # nothing to store is never refused (the gateway's tick-only batches)

        server.start()
        assert historian.flush(timeout=30)
        historian.write(events[11:])  # room again
        assert historian.flush(timeout=15)
    finally:
        historian.close()
    assert [s.timestamp_ms for s in server.samples(f'{{site="{site.id}"}}')] == expected_ms(events)


# --------------------------------------------------------------------------- what the server refuses


class WriteStub:
    """A stand-in for InfluxDB's /api/v2/write: `respond(body)` picks (status, json body,
    headers); the lines of every 2xx request are recorded."""

    def __init__(self, respond: Callable[[str], tuple[int, dict[str, str] | None, dict[str, str]]]) -> None:
        self.respond = respond
        self.accepted: list[str] = []
        self.requests = 0
        self.paths: list[str] = []  # each request's path, without its query
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                stub.requests += 1
                stub.paths.append(self.path.split("?", 1)[0])
                status, answer, headers = stub.respond(body)
                payload = json.dumps(answer).encode() if answer else b""
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                if 200 <= status < 300:
                    stub.accepted.extend(body.splitlines())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_refused_point_goes_to_rejected_points_and_does_not_hold_up_the_others(
    site: SiteConfig, spool: Path
) -> None:
    """Stubbed server (VictoriaMetrics accepts malformed lines with 204): it refuses, like
    InfluxDB, the whole request with 400 if any line is for device "reject-me"."""

    def respond(body: str) -> tuple[int, dict[str, str] | None, dict[str, str]]:
        if "device=reject-me" in body:
            return 400, {"code": "invalid", "message": "partial write: field type conflict"}, {}
        return 204, None, {}

    stub = WriteStub(respond)
    historian = InfluxHistorian(config(stub.url, spool, flush_interval_ms=60_000, **FAST_RETRY), site)
    good = readings(site.id, "meter-101", T0, 20)
    bad = readings(site.id, "reject-me", T0, 1)
    later = readings(site.id, "flow-7", T0, 5)
    try:
        historian.write([*good[:13], *bad, *good[13:]])
        assert historian.flush(timeout=15)
        historian.write(later)
        assert historian.flush(timeout=15)
        stats = historian.stats()
        rejected = historian.rejected()
    finally:
        historian.close()
        stub.close()

    accepted = Counter(line.split(",device=")[1].split(",")[0] for line in stub.accepted)
    assert accepted == {"meter-101": 20, "flow-7": 5}  # every good point exactly once, in accepted requests
    assert len(stub.accepted) == len(set(stub.accepted)) == 25
    assert (stats["points_rejected"], stats["points_written"], stats["points_pending"]) == (1, 25, 0)
    assert stats["failed_attempts"] == 0  # a refusal is not retried
    [row] = rejected
    assert "device=reject-me" in row["line"] and row["status"] == 400
    assert "field type conflict" in row["reason"]
    assert spool_rows(spool, "rejected_points") == 1 and spool_rows(spool) == 0


@pytest.mark.parametrize("status", [401, 404, 429, 500, 503])
def test_statuses_that_say_nothing_against_the_points_are_retried_not_rejected(
    status: int, site: SiteConfig, spool: Path
) -> None:
    """Stubbed server: answers `status` twice, then 204. A wrong token or bucket (401,
    403, 404), a rate limit (429, with Retry-After) or a server error is retried."""
    answers = iter([status, status])

    def respond(body: str) -> tuple[int, dict[str, str] | None, dict[str, str]]:
        code = next(answers, 204)
        return code, ({"code": "x", "message": f"status {code}"} if code != 204 else None), {"Retry-After": "0"}

    stub = WriteStub(respond)
    historian = InfluxHistorian(config(stub.url, spool, flush_interval_ms=10, **FAST_RETRY), site)
    try:
        historian.write(readings(site.id, "meter-101", T0, 4))
        assert historian.flush(timeout=15)
        stats = historian.stats()
    finally:
        historian.close()
        stub.close()
    assert (stats["failed_attempts"], stats["points_written"], stats["points_rejected"]) == (2, 4, 0)
    assert len(stub.accepted) == 4


# --------------------------------------------------------------------------- details


def test_retry_delay_grows_exponentially_with_jitter_and_is_capped() -> None:
    settings = config("http://unused", Path("unused"), retry_interval_ms=100, max_retry_delay_ms=1000, exponential_base=2)
    assert [retry_delay_seconds(settings, n, 0.0) for n in (1, 2, 3, 4, 5, 50, 10_000)] == [
        0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0
    ]  # fmt: skip
    assert [retry_delay_seconds(settings, n, 0.999999) for n in (1, 2, 3)] == pytest.approx([0.2, 0.4, 0.8])
    assert retry_delay_seconds(settings, 3, 0.5) == pytest.approx(0.6)  # uniform between the bounds


def test_a_second_historian_on_the_same_spool_is_refused(site: SiteConfig, spool: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    first = InfluxHistorian(config(url, spool), site)
    try:
        with pytest.raises(RuntimeError, match="in use"):
            InfluxHistorian(config(url, spool), site)  # it would send every point a second time
    finally:
        first.close()
    InfluxHistorian(config(url, spool), site).close()  # free again after close()


def test_library_retry_logs_are_quieted(site: SiteConfig, spool: Path) -> None:
    for name in ("urllib3", "influxdb_client"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    historian = InfluxHistorian(config(f"http://127.0.0.1:{free_port()}", spool), site)
    historian.close()
    assert logging.getLogger("urllib3").getEffectiveLevel() >= logging.ERROR
    assert logging.getLogger("influxdb_client.client.write_api").getEffectiveLevel() >= logging.WARNING


def test_write_after_close_is_an_error(victoria_metrics: VictoriaMetrics, site: SiteConfig, spool: Path) -> None:
    historian = InfluxHistorian(config(victoria_metrics.url, spool), site)
    historian.close()
    historian.close()  # idempotent

    with pytest.raises(RuntimeError, match="closed"):
        historian.write(readings(site.id, "meter-101", T0, 1))


def test_open_historian_builds_influx_from_config(
    victoria_metrics: VictoriaMetrics, site: SiteConfig, spool: Path
) -> None:
    historian = open_historian(config(victoria_metrics.url, spool), site)
    try:
        assert isinstance(historian, InfluxHistorian)
        assert isinstance(historian, Historian)
        historian.write(readings(site.id, "flow-7", T0, 2))
        historian.flush()
        assert historian.stats()["points_written"] == 2
    finally:
        historian.close()


# --------------------------------------------------------------------------- one device, two fields of one kind (issue 17, item 11)


def ac_meter(fields: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"driver": "mqtt_json", "id": "meter-101", "topic": "devices/meter-101", "fields": fields}


POWER = {"quantity": "power", "unit": "W"}


def test_two_fields_of_one_quantity_and_unit_without_a_channel_are_refused_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    agent = {"id": "agent-a", "site": "riverside", "devices": [ac_meter({"power_w": POWER, "aux_power_w": POWER})]}
    path.write_text(json.dumps(agent))  # JSON is YAML
    with pytest.raises(ConfigError) as refused:
        load_config(path, AgentConfig)
    assert str(refused.value).startswith(f"{path}: devices[0]: fields.aux_power_w: same quantity (power), unit (W) and no channel as fields.power_w")
    assert "give fields.aux_power_w a channel" in str(refused.value)
    # Other units, or a channel on one of them, keep them apart: accepted.
    MqttJsonDevice.model_validate(ac_meter({"power_w": POWER, "aux_power_kw": {"quantity": "power", "unit": "kW"}}))
    MqttJsonDevice.model_validate(ac_meter({"power_w": POWER, "aux_power_w": {**POWER, "channel": "aux"}}))


def test_readings_of_two_fields_told_apart_by_channel_both_reach_influxdb_with_their_event_ids_unchanged(
    historian: InfluxHistorian, victoria_metrics: VictoriaMetrics, site: SiteConfig
) -> None:
    config = MqttJsonDevice.model_validate(ac_meter({"power_w": POWER, "aux_power_w": {**POWER, "channel": "aux"}}))
    payload = json.dumps({"ts": T0.isoformat(), "power_w": 812.5, "aux_power_w": 40.0}).encode()
    readings = MqttJsonDriver(config, site.id, lambda event: None, ManualClock(T0)).readings(payload, T0)

    # Event ids must not change for configs that were valid before: each field alone was.
    for name in ("power_w", "aux_power_w"):
        alone = MqttJsonDevice.model_validate(ac_meter({name: POWER}))
        [before] = MqttJsonDriver(alone, site.id, lambda event: None, ManualClock(T0)).readings(payload, T0)
        assert before.id in {r.id for r in readings}

    historian.write(readings)
    assert historian.flush(timeout=15)
    office = ("hq", "office-101")
    samples = victoria_metrics.wait_for_samples(f'{{site="{site.id}",__name__="power_value"}}', 2)
    assert sorted(samples, key=lambda s: s.value) == [
        Sample("power_value", labels(site, *office, "meter-101", unit="W", channel="aux"), 40.0, T0_MS),
        Sample("power_value", labels(site, *office, "meter-101", unit="W"), 812.5, T0_MS),
    ]  # two series at one time: neither overwrites the other



def test_a_url_with_a_path_prefix_is_kept_as_a_cluster_insert_node_needs(site: SiteConfig, spool: Path) -> None:
    """A VictoriaMetrics cluster takes writes at http://<vminsert>:8480/insert/<tenant>/influx
    (docs/scale.md), a reverse proxy under a path of its own: the prefix must be kept."""
    stub = WriteStub(lambda body: (204, None, {}))
    historian = InfluxHistorian(config(f"{stub.url}/insert/0/influx", spool, flush_interval_ms=60_000), site)
    try:
        historian.write(readings(site.id, "meter-101", T0, 4))
        assert historian.flush(timeout=15)
    finally:
        historian.close()
        stub.close()
    assert stub.paths == ["/insert/0/influx/api/v2/write"]
    assert len(stub.accepted) == 4
