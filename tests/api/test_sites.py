"""The API across several sites (issue 21): a real gateway serving two schools on the
session's Mosquitto, tokens scoped to sites, /api/sites and the cross-site /api/overview.

The night of Tuesday 17 November 2026, Europe/Berlin (UTC+1), both schools:

- Riverside, route north (cp-gate, cp-hall; round 23:30, 10 min allowance each, so
  deadlines 23:40 and 23:50): cp-gate tapped 23:35 (on time), cp-hall never (missed).
  AC ac-a204 (A-204) draws 1200 W from 00:00 to 00:30 on Wednesday 18 Nov, then 0 W.
  Its dead-man watch is off (the rules of riverside say so): no device goes silent.
- Hillside, route east (cp-door, cp-lab, cp-roof; round 23:30: deadlines 23:40, 23:50,
  00:00): cp-door 23:33 and cp-lab 23:45 on time, cp-roof 00:05 (late). Meter ac-h101
  reads 30 W once at 23:10 (under the 60 W standby: no waste) and falls silent.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from gateway.api import ApiServer, create_app
from gateway.auth import hash_token
from gateway.config import ApiConfig, ApiToken, PartitionConfig
from gateway.service import Gateway
from rules.config import RulesConfig
from tests.api.conftest import Publisher
from tests.api.test_api import Stream
from tests.support.gateway_config import local_gateway_config
from tests.test_cli import output, warden
from warden import topics
from warden.clock import ManualClock
from warden.config import BrokerConfig, ConfigError, SiteConfig
from warden.events import Event, PatrolTap, Reading, stable_event_id

UTC = timezone.utc
#: 23:00 local on Tuesday 17 Nov 2026 (UTC+1).
NIGHT = datetime(2026, 11, 17, 22, 0, tzinfo=UTC)
#: When the tests read: 07:00 local on Wednesday 18 Nov.
MORNING = datetime(2026, 11, 18, 6, 0, tzinfo=UTC)

RIVERSIDE = SiteConfig.model_validate({
    "id": "riverside", "name": "Riverside School", "timezone": "Europe/Berlin",
    "tariff": {"energy_per_kwh": 0.30, "currency": "EUR"},
    "schedules": {"school-day": [{"days": "mon-fri", "hours": "07:30-18:00"}]},
    "buildings": [{"id": "A", "rooms": [
        {"id": "A-204", "schedule": "school-day", "devices": ["ac-a204"]},
        {"id": "A-GATE", "devices": ["patrol-reader-1"]},
    ]}],
})  # fmt: skip
HILLSIDE = SiteConfig.model_validate({
    "id": "hillside", "name": "山坡中学", "timezone": "Europe/Berlin", "locale": "zh-CN",
    "tariff": {"energy_per_kwh": 0.60, "currency": "CNY"},
    "schedules": {"school-day": [{"days": "mon-fri", "hours": "07:30-18:00"}]},
    "buildings": [{"id": "H", "name": "主楼", "rooms": [
        {"id": "H-101", "name": "物理实验室", "schedule": "school-day", "devices": ["ac-h101"]},
        {"id": "H-GATE", "devices": ["patrol-reader-h"]},
    ]}],
})  # fmt: skip
RIVERSIDE_RULES = RulesConfig.model_validate({
    "ac_after_hours": {"standby_watts": 60, "grace_minutes": 15},
    "deadman": {"devices": {"ac-a204": None}},
    "patrol": {"routes": [{"id": "north", "checkpoints": ["cp-gate", "cp-hall"], "rounds": ["23:30"],
                           "guard": "guard-lee"}]},
})  # fmt: skip
HILLSIDE_RULES = RulesConfig.model_validate({
    "ac_after_hours": {"standby_watts": 60, "grace_minutes": 15},
    "patrol": {"routes": [{"id": "east", "checkpoints": ["cp-door", "cp-lab", "cp-roof"], "rounds": ["23:30"],
                           "guard": "guard-wu"}]},
})  # fmt: skip

#: Test secrets; the config holds only their hashes.
TOKENS = {
    "district": "wdn_test-district-0123456789abcdefghijklmnopqrs",
    "riverside": "wdn_test-riverside-0123456789abcdefghijklmnopqr",
    "hillside": "wdn_test-hillside-0123456789abcdefghijklmnopqrs",
    "guard": "wdn_test-rguard-0123456789abcdefghijklmnopqrstu",
}
TOKEN_CONFIG = [
    {"name": "district-manager", "role": "manager", "sha256": hash_token(TOKENS["district"])},
    {"name": "riverside-office", "role": "manager", "sites": ["riverside"], "sha256": hash_token(TOKENS["riverside"])},
    {"name": "hillside-desk", "role": "maintenance", "sites": ["hillside"], "sha256": hash_token(TOKENS["hillside"])},
    {"name": "riverside-guard", "role": "guard", "guard": "guard-lee", "sites": ["riverside"],
     "sha256": hash_token(TOKENS["guard"])},
]


@dataclass
class District:
    gateway: Gateway
    api: ApiServer
    clock: ManualClock

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(base_url=self.api.url, headers={"Authorization": f"Bearer {TOKENS[who]}"}, timeout=10)


def start_district(broker_config: BrokerConfig, tmp_path: Path, riverside: SiteConfig = RIVERSIDE) -> District:
    """A gateway serving both schools (each with its own rules), its API on a free port,
    its clock at NIGHT; time passes in the rules only through tick(). `riverside`: that
    school's site (the browser test gives it in zh-CN)."""
    config = local_gateway_config(broker_config, tmp_path, api={"host": "127.0.0.1", "port": 0, "tokens": TOKEN_CONFIG})
    clock = ManualClock(NIGHT)
    gateway = Gateway(config, [(riverside, RIVERSIDE_RULES), (HILLSIDE, HILLSIDE_RULES)], clock, tick_every=None)
    gateway.start()
    assert gateway.subscribed.wait(10), "gateway did not subscribe"
    server = ApiServer(create_app(gateway), "127.0.0.1", 0)
    server.start()
    return District(gateway, server, clock)


def local(day: int, hour: int, minute: int) -> datetime:
    """Berlin wall time in November 2026 (UTC+1), as UTC."""
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC) - timedelta(hours=1)


def tap(site: str, tag: str, at: datetime, guard: str) -> PatrolTap:
    reader = "patrol-reader-1" if site == "riverside" else "patrol-reader-h"
    return PatrolTap(id=stable_event_id(site, "tap", tag, at.isoformat()), site=site, device=reader, event_time=at,
                     reader=reader, tag=tag, guard=guard)


def power(site: str, device: str, at: datetime, watts: float) -> Reading:
    return Reading(id=stable_event_id(site, device, "p", at.isoformat()), site=site, device=device, event_time=at,
                   quantity="power", value=watts, unit="W")


def publish(district: District, publisher: Publisher, site: str, *events: Event) -> None:
    """Publish on the site's own topic and wait until the gateway stored them."""
    gateway = district.gateway
    before = gateway.events_stored
    publisher.events(*events, topic=topics.events_topic(site, f"agent-{site}"))
    assert gateway.wait_until(lambda: gateway.events_stored >= before + len(events), timeout=10)


def tick(district: District, at: datetime) -> None:
    district.clock.advance(at - district.clock.now())
    district.gateway.tick(at)
    assert district.gateway.wait_until(lambda: district.gateway.last_tick == at, timeout=10)


def run_the_night(district: District, publisher: Publisher) -> None:
    """The night of the module's docstring, then the clock at MORNING."""
    tick(district, NIGHT)
    publish(district, publisher, "hillside", power("hillside", "ac-h101", local(17, 23, 10), 30))
    publish(district, publisher, "riverside", tap("riverside", "cp-gate", local(17, 23, 35), "guard-lee"))
    publish(district, publisher, "hillside", tap("hillside", "cp-door", local(17, 23, 33), "guard-wu"),
            tap("hillside", "cp-lab", local(17, 23, 45), "guard-wu"))
    tick(district, local(17, 23, 55))  # past cp-hall's deadline (23:50)
    publish(district, publisher, "hillside", tap("hillside", "cp-roof", local(18, 0, 5), "guard-wu"))
    ac_on = [power("riverside", "ac-a204", local(18, 0, m), 1200) for m in range(0, 30, 5)]
    publish(district, publisher, "riverside", *ac_on)
    publish(district, publisher, "riverside", power("riverside", "ac-a204", local(18, 0, 30), 0))
    tick(district, MORNING)


@pytest.fixture
def district(broker_config: BrokerConfig, tmp_path: Path, publisher: Publisher) -> Iterator[District]:
    server = start_district(broker_config, tmp_path)
    run_the_night(server, publisher)
    yield server
    server.api.stop()
    server.gateway.stop()


# --------------------------------------------------------------------------- config


def test_a_token_naming_a_site_the_gateway_does_not_serve_is_a_config_error(district: District) -> None:
    tokens = [*TOKEN_CONFIG, {"name": "lakeside-office", "role": "manager", "sites": ["riverside", "lakeside"],
                              "sha256": hash_token("wdn_test-lakeside-0123456789abcdefghijklmnopqr")}]
    with pytest.raises(ConfigError, match=r"api\.tokens\[4\]\.sites\[1\]: no site 'lakeside'"):
        create_app(district.gateway, ApiConfig.model_validate({"tokens": tokens}))


def test_warden_token_makes_a_token_scoped_to_sites() -> None:
    import yaml

    result = warden("token", "--name", "hillside-desk", "--role", "maintenance", "--site", "hillside", "--site", "lakeside")
    assert result.returncode == 0, output(result)
    *entry_lines, _secret = result.stdout.strip().splitlines()
    [entry] = yaml.safe_load("\n".join(entry_lines))
    assert entry["sites"] == ["hillside", "lakeside"]
    assert ApiToken.model_validate(entry).sites == ["hillside", "lakeside"]


def test_on_a_partitioned_gateway_another_partition_s_site_is_only_a_warning(
    district: District, caplog: pytest.LogCaptureFixture
) -> None:
    """The same token list serves every partition of a district: a site of another partition is no mistake."""
    tokens = [{"name": "lakeside-office", "role": "manager", "sites": ["lakeside"],
               "sha256": hash_token("wdn_test-lakeside-0123456789abcdefghijklmnopqr")}]
    partitioned = district.gateway.config.model_copy(update={"partition": PartitionConfig(count=2, index=0)})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(district.gateway, "config", partitioned)
        create_app(district.gateway, ApiConfig.model_validate({"tokens": tokens}))
    [record] = [r for r in caplog.records if r.getMessage() == "a token names a site another partition serves"]
    assert (record.levelname, record.key, record.site) == ("WARNING", "api.tokens[0].sites[0]", "lakeside")  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- sites and overview


def test_each_token_lists_the_sites_it_sees(district: District) -> None:
    riverside = {"id": "riverside", "name": "Riverside School", "timezone": "Europe/Berlin", "locale": "en"}
    hillside = {"id": "hillside", "name": "山坡中学", "timezone": "Europe/Berlin", "locale": "zh-CN"}
    assert district.client("district").get("/api/sites").json() == [riverside, hillside]  # configured order
    assert district.client("riverside").get("/api/sites").json() == [riverside]
    assert district.client("hillside").get("/api/sites").json() == [hillside]
    assert district.client("district").get("/api/me").json()["sites"] == ["riverside", "hillside"]
    assert httpx.get(f"{district.api.url}/api/sites").status_code == 401  # tokens exist: no public reads


def test_the_overview_per_site_by_hand(district: District) -> None:
    rows = {row["id"]: row for row in district.client("district").get("/api/overview").raise_for_status().json()}
    assert list(rows) == ["riverside", "hillside"]
    river, hill = rows["riverside"], rows["hillside"]
    # Energy today (Berlin: from 18 Nov 00:00): riverside's AC drew 1200 W from 00:00 to 00:30,
    # 1.2 kW x 0.5 h = 0.6 kWh, at 0.30 EUR = 0.18 EUR. Hillside's meter stayed under standby: nothing.
    assert river["waste_today"] == {"kwh": 0.6, "cost": 0.18, "currency": "EUR"}
    assert hill["waste_today"] == {"kwh": 0.0, "cost": 0.0, "currency": "CNY"}
    # Last night (began 17 Nov): riverside 2 checkpoints due, 1 on time (cp-gate); cp-hall missed.
    # Hillside 3 due, 2 on time (cp-door, cp-lab); cp-roof late.
    assert river["patrols"] == {"night": "2026-11-17", "checkpoints_due": 2, "checkpoints_on_time": 1,
                                "compliance": 0.5}  # 1 / 2
    assert hill["patrols"] == {"night": "2026-11-17", "checkpoints_due": 3, "checkpoints_on_time": 2,
                               "compliance": 0.667}  # 2 / 3, to 3 places
    # Silent: hillside's ac-h101, last heard 23:10, long past the 15 min dead-man limit; riverside watches none.
    assert hill["silent_devices"] == {"count": 1, "devices": ["ac-h101"]}
    assert river["silent_devices"] == {"count": 0, "devices": []}
    # Open alerts by severity (the rules: a missed checkpoint is a warning, a late one info, a
    # silent device a warning). Riverside: cp-hall missed (its AC alert ended at 00:30: resolved).
    # Hillside: cp-roof late, ac-h101 silent.
    assert river["open_alerts"] == {"total": 1, "info": 0, "warning": 1, "critical": 0}
    assert hill["open_alerts"] == {"total": 2, "info": 1, "warning": 1, "critical": 0}
    # A school's office sees its own row only.
    assert [r["id"] for r in district.client("riverside").get("/api/overview").json()] == ["riverside"]


# --------------------------------------------------------------------------- scope per endpoint

#: What the API answers a token that sees both schools and names none, and a school's token naming the other.
SEVERAL = "site: give one of riverside, hillside (this token sees several sites)"
REFUSED = "site: this token may not see site 'hillside'"


def alert_ids(district: District) -> dict[str, int]:
    """subject (short) -> alert id, read with the district token."""
    alerts = district.client("district").get("/api/alerts").raise_for_status().json()
    return {a["subject"].rsplit(":", 1)[-1]: a["id"] for a in alerts}


def test_alerts_are_scoped_to_the_token_s_sites(district: District) -> None:
    ids = alert_ids(district)
    district_, riverside, hillside = (district.client(who) for who in ("district", "riverside", "hillside"))
    # The night made four alerts: riverside's AC (A-204) and cp-hall; hillside's cp-roof and ac-h101.
    assert sorted(ids) == ["A-204", "ac-h101", "cp-hall", "cp-roof"]
    # Lists default to every site the token sees.
    assert {a["site"] for a in district_.get("/api/alerts").json()} == {"riverside", "hillside"}
    assert sorted(a["subject"].rsplit(":", 1)[-1] for a in riverside.get("/api/alerts").json()) == ["A-204", "cp-hall"]
    assert sorted(a["subject"].rsplit(":", 1)[-1] for a in hillside.get("/api/alerts").json()) == ["ac-h101", "cp-roof"]
    silent = district_.get("/api/alerts", params={"site": "hillside", "rule": "deadman"}).json()
    assert [a["subject"] for a in silent] == ["ac-h101"]
    # Rooms: H-101 holds ac-h101, the only alert about it.
    assert [a["subject"] for a in district_.get("/api/alerts", params={"room": "H-101"}).json()] == ["ac-h101"]
    refused = riverside.get("/api/alerts", params={"site": "hillside"})
    assert (refused.status_code, refused.json()["detail"]) == (403, REFUSED)
    assert district_.get("/api/alerts", params={"site": "lakeside"}).status_code == 404
    # Another site's alert does not exist for the token: detail, acknowledge, resolve, assign, work order.
    hill_alert, river_alert = ids["ac-h101"], ids["cp-hall"]
    assert district_.get(f"/api/alerts/{hill_alert}").status_code == 200
    assert riverside.get(f"/api/alerts/{hill_alert}").status_code == 404
    assert riverside.post(f"/api/alerts/{hill_alert}/acknowledge", json={}).status_code == 404
    assert hillside.post(f"/api/alerts/{river_alert}/resolve", json={}).status_code == 404
    assert hillside.post(f"/api/alerts/{river_alert}/assign", json={"to": "hillside-desk"}).status_code == 404
    # People: a school's staff name only those who share their school (the district manager sees both).
    assert [p["name"] for p in hillside.get("/api/people").json()] == ["district-manager", "hillside-desk"]
    stranger = hillside.post(f"/api/alerts/{hill_alert}/assign", json={"to": "riverside-guard"})
    assert stranger.status_code == 422 and "no person 'riverside-guard'" in stranger.json()["detail"]
    assert riverside.post(f"/api/alerts/{hill_alert}/work-order", json={}).status_code == 404
    # A guard: its school's posts only.
    assert district.client("guard").get(f"/api/alerts/{ids['cp-roof']}").status_code == 404
    # A school's staff read in their school's language (hillside: zh-CN); the district in the first school's (en).
    assert re.search("[\u4e00-\u9fff]", hillside.get(f"/api/alerts/{hill_alert}").json()["text"])
    assert not re.search("[\u4e00-\u9fff]", district_.get(f"/api/alerts/{hill_alert}").json()["text"])
    # Within its site each acts as before.
    assert riverside.post(f"/api/alerts/{river_alert}/acknowledge", json={}).json()["state"] == "acknowledged"
    assert hillside.post(f"/api/alerts/{hill_alert}/resolve", json={"note": "battery"}).json()["state"] == "resolved"
    order = riverside.post(f"/api/alerts/{river_alert}/work-order", json={}).json()
    assert (order["site"], order["room"]) == ("riverside", "north:2026-11-17T23:30:cp-hall")


def test_a_school_s_stream_carries_only_its_school_s_alerts(district: District) -> None:
    ids = alert_ids(district)
    stream = Stream(f"{district.api.url}/api/alerts/stream", {"Authorization": f"Bearer {TOKENS['riverside']}"})
    try:
        assert stream.status == 200
        district_ = district.client("district")
        # Hillside's change first, then riverside's: the stream keeps order, so the first frame
        # the riverside office gets is riverside's only if hillside's was left out.
        district_.post(f"/api/alerts/{ids['ac-h101']}/acknowledge", json={}).raise_for_status()
        district_.post(f"/api/alerts/{ids['cp-hall']}/acknowledge", json={}).raise_for_status()
        _, kind, data = stream.next()
        assert (kind, data["change"], data["alert"]["site"]) == ("alert", "acknowledged", "riverside")
        assert data["alert"]["id"] == ids["cp-hall"]
    finally:
        stream.close()


def test_endpoints_of_one_site_take_it_from_the_token_or_the_site_parameter(district: District) -> None:
    district_, riverside, hillside = (district.client(who) for who in ("district", "riverside", "hillside"))
    window = {"since": "2026-11-17T00:00:00Z", "until": "2026-11-19T00:00:00Z"}
    paths = [("/api/devices", {}), ("/api/patrols/rounds", {}), ("/api/patrols/routes", {}), ("/api/energy/waste", {}),
             ("/api/reports/2026-11-17", {}), ("/api/reports/month/2026-11", {}), ("/api/statistics", window)]
    for path, params in paths:
        several = district_.get(path, params=params)
        assert several.status_code == 400, path
        assert several.json()["detail"] == SEVERAL
        assert riverside.get(path, params=params).status_code == 200, path  # one site: its own
        other = riverside.get(path, params={**params, "site": "hillside"})
        assert (other.status_code, other.json()["detail"]) == (403, REFUSED), path
        assert district_.get(path, params={**params, "site": "hillside"}).status_code == 200, path
    # Devices: each school's own.
    hill_devices = district_.get("/api/devices", params={"site": "hillside"}).json()
    assert [d["id"] for d in hill_devices] == ["ac-h101", "patrol-reader-h"]
    assert [d["id"] for d in riverside.get("/api/devices").json()] == ["ac-a204", "patrol-reader-1"]
    assert hillside.get("/api/devices/ac-a204").status_code == 404
    assert hillside.get("/api/devices/ac-a204/series").status_code == 404
    # Patrols: each school's routes and rounds; the guard's board is its school's.
    assert [r["id"] for r in hillside.get("/api/patrols/routes").json()] == ["east"]
    assert [r["route"] for r in district_.get("/api/patrols/rounds", params={"site": "riverside"}).json()] == ["north"]
    assert [r["route"] for r in district.client("guard").get("/api/patrols/rounds").json()] == ["north"]
    # Statistics: only the devices the site lists (hillside: one reading of ac-h101 at 30 W).
    rows = hillside.get("/api/statistics", params=window).json()
    assert [(r["device"], r["n"], r["mean"]) for r in rows] == [("ac-h101", 1, 30.0)]
    # Reports: the site's own, named after it.
    report = district_.get("/api/reports/2026-11-17", params={"site": "hillside", "format": "json"}).json()
    assert report["site"]["id"] == "hillside"
    csv = district_.get("/api/reports/2026-11-17", params={"site": "hillside", "format": "csv"})
    assert 'filename="morning-report-hillside-2026-11-17.csv"' in csv.headers["content-disposition"]
    # Energy: riverside's 0.6 kWh (see test_the_overview_per_site_by_hand) only in riverside's view.
    assert riverside.get("/api/energy/waste").json()["today"]["total_kwh"] == 0.6
    assert district_.get("/api/energy/waste", params={"site": "hillside"}).json()["today"]["total_kwh"] == 0


def test_work_orders_are_scoped_to_the_token_s_sites(district: District) -> None:
    district_, riverside, hillside = (district.client(who) for who in ("district", "riverside", "hillside"))
    mine = riverside.post("/api/work-orders", json={"room": "A-204", "text": "AC remote lost"})
    assert (mine.status_code, mine.json()["site"]) == (201, "riverside")  # its one site
    several = district_.post("/api/work-orders", json={"room": "H-101", "text": "Tap drips"})
    assert (several.status_code, several.json()["detail"]) == (400, SEVERAL)
    theirs = district_.post("/api/work-orders", json={"room": "H-101", "text": "Tap drips", "site": "hillside"})
    assert (theirs.status_code, theirs.json()["site"]) == (201, "hillside")
    refused = riverside.post("/api/work-orders", json={"room": "H-101", "text": "x", "site": "hillside"})
    assert (refused.status_code, refused.json()["detail"]) == (403, REFUSED)
    river_id, hill_id = mine.json()["id"], theirs.json()["id"]
    assert [o["id"] for o in riverside.get("/api/work-orders").json()] == [river_id]
    assert [o["id"] for o in hillside.get("/api/work-orders").json()] == [hill_id]
    assert sorted(o["id"] for o in district_.get("/api/work-orders").json()) == sorted([river_id, hill_id])
    assert [o["id"] for o in district_.get("/api/work-orders", params={"site": "hillside"}).json()] == [hill_id]
    assert hillside.get(f"/api/work-orders/{river_id}").status_code == 404
    assert hillside.post(f"/api/work-orders/{river_id}/take", json={}).status_code == 404
    assert hillside.post(f"/api/work-orders/{hill_id}/take", json={}).json()["state"] == "taken"


def test_pages_show_the_site_asked_for(district: District) -> None:
    page = httpx.get(f"{district.api.url}/", params={"site": "hillside"})
    assert page.status_code == 200 and "山坡中学" in page.text and 'data-site="hillside"' in page.text
    assert 'data-site="riverside"' in httpx.get(f"{district.api.url}/").text  # the first site by default
    assert httpx.get(f"{district.api.url}/", params={"site": "lakeside"}).status_code == 404
    assert "物理实验室" in httpx.get(f"{district.api.url}/work-orders", params={"site": "hillside"}).text


def test_metrics_count_open_alerts_and_silent_devices_per_site(district: District) -> None:
    text = httpx.get(f"{district.api.url}/metrics").text
    # As in test_the_overview_per_site_by_hand: riverside 1 warning; hillside 1 warning and 1 info, ac-h101 silent.
    for line in ('warden_gateway_site_open_alerts{severity="warning",site="riverside"} 1.0',
                 'warden_gateway_site_open_alerts{severity="info",site="riverside"} 0.0',
                 'warden_gateway_site_open_alerts{severity="warning",site="hillside"} 1.0',
                 'warden_gateway_site_open_alerts{severity="info",site="hillside"} 1.0',
                 'warden_gateway_site_silent_devices{site="riverside"} 0.0',
                 'warden_gateway_site_silent_devices{site="hillside"} 1.0'):
        assert line in text.splitlines(), line
