"""InfluxDB parity: the series query reads InfluxDB through the v2 query API (Flux), and a
server without Flux (VictoriaMetrics here, InfluxDB 3 too) gets a clear reason; the
statistics and the monthly report do not depend on the historian at all."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from gateway.api import ApiServer, create_app
from gateway.config import GatewayConfig, InfluxHistorianConfig
from gateway.historian.influx import InfluxHistorian
from gateway.historian.points import SeriesUnavailable
from gateway.service import Gateway
from tests.support.gateway_config import local_gateway_config
from tests.support.victoria import VictoriaMetrics
from warden import topics
from warden.clock import ManualClock
from warden.config import BrokerConfig, SiteConfig
from warden.events import Reading, encode_events, stable_event_id
from warden.mqtt import make_client

EVENING = datetime(2026, 11, 17, 18, 0, tzinfo=timezone.utc)

#: What InfluxDB 2 answers to the pivoted series query: annotated CSV, one row per point.
FLUX_CSV = """#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,string,string,string,string,string,string,double
#group,false,false,true,true,false,true,true,true,true,true,true,false
#default,_result,,,,,,,,,,,
,result,table,_start,_stop,_time,_measurement,building,device,room,site,unit,value
,,0,2026-11-17T00:00:00Z,2026-11-18T00:00:00Z,2026-11-17T18:05:00Z,power,hq,meter-101,office-101,plant,W,950
,,0,2026-11-17T00:00:00Z,2026-11-18T00:00:00Z,2026-11-17T18:00:00Z,power,hq,meter-101,office-101,plant,W,900

"""


class FluxStub:
    """A local HTTP server answering /api/v2/query as InfluxDB 2 does; records the queries."""

    def __init__(self) -> None:
        self.queries: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stub.queries.append(body.decode())
                payload = FLUX_CSV.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/csv; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def influx(url: str, spool: Path) -> InfluxHistorianConfig:
    return InfluxHistorianConfig.model_validate({"type": "influxdb", "url": url, "token": "t", "bucket": "warden",
                                                 "spool_path": str(spool), "flush_interval_ms": 50})


@pytest.fixture
def stub() -> Iterator[FluxStub]:
    server = FluxStub()
    yield server
    server.close()


def test_series_reads_influxdb_with_a_flux_query(stub: FluxStub, site: SiteConfig, tmp_path: Path) -> None:
    historian = InfluxHistorian(influx(stub.url, tmp_path / "spool.db"), site)
    try:
        points = historian.series("meter-101", "power", EVENING - timedelta(hours=1), EVENING + timedelta(hours=1), limit=10)
    finally:
        historian.close()
    assert [(p.time.isoformat(), p.fields, p.tags["room"]) for p in points] == [
        ("2026-11-17T18:00:00+00:00", {"value": 900.0}, "office-101"),
        ("2026-11-17T18:05:00+00:00", {"value": 950.0}, "office-101")]
    [query] = stub.queries
    assert 'r.device == \\"meter-101\\"' in query and 'r._measurement == \\"power\\"' in query  # JSON-escaped Flux
    assert "range(start: 2026-11-17T17:00:00Z, stop: 2026-11-17T19:00:00Z)" in query


def test_a_server_without_flux_answers_501_with_the_reason_and_reports_stay_complete(
    victoria_metrics: VictoriaMetrics, broker_config: BrokerConfig, site: SiteConfig, tmp_path: Path
) -> None:
    config: GatewayConfig = local_gateway_config(broker_config, tmp_path, historian={
        "type": "influxdb", "url": victoria_metrics.url, "bucket": "warden", "spool_path": str(tmp_path / "spool.db"),
        "flush_interval_ms": 50})  # fmt: skip
    gateway = Gateway(config, site, ManualClock(EVENING + timedelta(hours=12)), tick_every=None)
    gateway.start()
    api = ApiServer(create_app(gateway), "127.0.0.1", 0)
    api.start()
    agent = make_client(broker_config, f"agent-{tmp_path.name}"[:60])
    agent.connect(broker_config.host, broker_config.port)
    agent.loop_start()
    try:
        assert gateway.subscribed.wait(10)
        events = [Reading(id=stable_event_id(site.id, "meter-101", k), site=site.id, device="meter-101",
                          event_time=EVENING + timedelta(minutes=15 * k), quantity="energy", value=10.0 + k,
                          unit="kWh", cumulative=True) for k in range(8)]
        agent.publish(topics.events_topic(site.id, "agent-a"), encode_events(events), qos=1).wait_for_publish(5)
        assert gateway.wait_until(lambda: gateway.events_stored >= 8, 10)
        series = httpx.get(f"{api.url}/api/devices/meter-101/series", timeout=10)
        month = httpx.get(f"{api.url}/api/reports/month/2026-11", params={"format": "json"}, timeout=10).json()
        day = httpx.get(f"{api.url}/api/reports/2026-11-17", params={"format": "json"}, timeout=10)
    finally:
        agent.disconnect()
        agent.loop_stop()
        api.stop()
        gateway.stop()
    assert series.status_code == 501
    assert "Flux" in series.json()["detail"] and victoria_metrics.url in series.json()["detail"]
    # Statistics do not come from the historian: start 10 (k = 0), end 17 (k = 7), 7 kWh.
    [meter] = month["meters"]
    assert (meter["start_reading"], meter["end_reading"], meter["consumption"]) == (10.0, 17.0, 7.0)
    # The daily report of 11-17 (08:00 Berlin = 07:00 UTC to the next 07:00): the readings k = 0..7 from 18:00 UTC,
    # 10 to 17 kWh; nothing before them, so the first hour counts from its first reading: 17 - 10 = 7 kWh.
    assert day.status_code == 200 and day.json()["history"] is False  # no raw-point sections without Flux
    assert day.json()["statistics"]["energy_kwh"] == 7.0


def test_series_unavailable_names_the_server(site: SiteConfig, tmp_path: Path, victoria_metrics: VictoriaMetrics) -> None:
    historian = InfluxHistorian(influx(victoria_metrics.url, tmp_path / "spool.db"), site)
    try:
        with pytest.raises(SeriesUnavailable, match="Flux"):
            historian.series("meter-101")
    finally:
        historian.close()
