"""One view across partitions (issue 21, gateway/view.py): two partitioned gateways on the
session's Mosquitto, each with its own PostgreSQL database, and the view over both.

The district is tests/api/test_sites.py's night with its two schools split over two
partitions. Which partition a school falls in is worked out here from SHA-256 digests
(the first 8 bytes, big-endian, mod 2 is the parity of the 16th hex digit), independently
of gateway.sites.partition_of:

    riverside  12aea5f4cd614e6b  b odd   -> partition 1
    harbour    aa74f6fd03bf68be  e even  -> partition 0

Harbour is test_sites' Hillside under another id (its rooms, rules and night unchanged),
so the night's facts and their arithmetic are test_sites' (restated where asserted).
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml

from gateway.api import ApiServer
from gateway.auth import hash_token
from gateway.config import GatewayConfig
from gateway.service import Gateway
from gateway.sites import load_sites
from gateway.view import PartitionUnavailable, ViewConfig, create_view_app, load_partitions, open_district
from rules.config import RulesConfig
from simulators.broker import free_port
from simulators.postgres import PostgresServer
from tests.api.conftest import Publisher
from tests.api.test_api import Stream
from tests.api.test_sites import (
    HILLSIDE,
    HILLSIDE_RULES,
    MORNING,
    NIGHT,
    RIVERSIDE,
    RIVERSIDE_RULES,
    local,
    power,
    tap,
)
from tests.support.agent_process import warden_command
from tests.support.state_db import drop_database, fresh_database
from tests.support.wait import wait_for
from tests.test_cli import output, warden
from warden import topics
from warden.clock import ManualClock
from warden.config import BrokerConfig, ConfigError, SiteConfig, load_config
from warden.events import Event
from warden.process import terminate

HARBOUR = HILLSIDE.model_copy(update={"id": "harbour"})
PARTITION = {"riverside": 1, "harbour": 0}

TOKENS = {
    "district": "wdn_test-view-district-0123456789abcdefghijklm",
    "riverside": "wdn_test-view-riverside-0123456789abcdefghijkl",
}
TOKEN_CONFIG = [
    {"name": "district-manager", "role": "manager", "sha256": hash_token(TOKENS["district"])},
    {
        "name": "riverside-office",
        "role": "manager",
        "sites": ["riverside"],
        "sha256": hash_token(TOKENS["riverside"]),
    },
]


def test_the_digests_in_the_docstring_are_sha256s() -> None:
    assert hashlib.sha256(b"riverside").hexdigest()[:16] == "12aea5f4cd614e6b"
    assert hashlib.sha256(b"harbour").hexdigest()[:16] == "aa74f6fd03bf68be"


def write_district(folder: Path, broker: BrokerConfig, databases: list[str | Path]) -> Path:
    """Site files, the two partitions' gateway configs (state in `databases`) and the view's config."""
    schools: list[tuple[SiteConfig, RulesConfig]] = [(RIVERSIDE, RIVERSIDE_RULES), (HARBOUR, HILLSIDE_RULES)]
    for site, _ in schools:
        (folder / f"{site.id}.yaml").write_text(yaml.safe_dump(site.model_dump(mode="json", exclude_unset=True)))
    for index, database in enumerate(databases):
        (folder / f"gateway-{index}.yaml").write_text(yaml.safe_dump({
            "id": f"view-p{index}-{folder.name}"[:60],
            "sites": [{"site_file": f"{site.id}.yaml", "rules": rules.model_dump(mode="json", exclude_unset=True)}
                      for site, rules in schools],
            "partition": {"count": len(databases), "index": index},
            "broker": broker.model_dump(mode="json"),
            "historian": {"type": "sqlite", "path": f"history-{index}.db"},
            "state_db": str(database),
            "work_orders": {"photo_dir": f"photos-{index}"},
            "api": {"host": "127.0.0.1", "port": 18080 + index},
        }))  # fmt: skip
    view = folder / "view.yaml"
    view.write_text(yaml.safe_dump({
        "partitions": [f"gateway-{index}.yaml" for index in range(len(databases))],
        "api": {"host": "127.0.0.1", "port": 0, "tokens": TOKEN_CONFIG},
    }))  # fmt: skip
    return view


@dataclass
class Running:
    gateways: list[Gateway]  # by partition index
    view: ApiServer
    clock: ManualClock

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(base_url=self.view.url, headers={"Authorization": f"Bearer {TOKENS[who]}"}, timeout=10)

    def gateway_of(self, site: str) -> Gateway:
        return self.gateways[PARTITION[site]]


@pytest.fixture
def databases(postgres: PostgresServer, tmp_path: Path) -> Iterator[list[str | Path]]:
    names = [f"view_{tmp_path.name[-20:]}_p{index}".lower() for index in (0, 1)]
    yield [fresh_database(postgres, name) for name in names]
    for name in names:
        drop_database(postgres, name)


@pytest.fixture
def running(
    broker_config: BrokerConfig, tmp_path: Path, databases: list[str | Path], publisher: Publisher
) -> Iterator[Running]:
    view_file = write_district(tmp_path, broker_config, databases)
    clock = ManualClock(NIGHT)
    gateways = []
    for index in (0, 1):
        path = tmp_path / f"gateway-{index}.yaml"
        config = load_config(path, GatewayConfig)
        gateway = Gateway(config, load_sites(config, path), clock, tick_every=None)
        gateway.start()
        assert gateway.subscribed.wait(10), "gateway did not subscribe"
        gateways.append(gateway)
    district = open_district(load_config(view_file, ViewConfig), view_file, clock)
    view = ApiServer(create_view_app(district, load_config(view_file, ViewConfig).api), "127.0.0.1", 0)
    view.start()
    running = Running(gateways, view, clock)
    try:
        play_the_night(running, publisher)
        yield running
    finally:
        view.stop()
        district.close()
        for gateway in gateways:
            gateway.stop()


def publish(running: Running, publisher: Publisher, site: str, *events: Event) -> None:
    """On the site's own topic; wait until its partition stored them."""
    gateway = running.gateway_of(site)
    before = gateway.events_stored
    publisher.events(*events, topic=topics.events_topic(site, f"agent-{site}"))
    assert gateway.wait_until(lambda: gateway.events_stored >= before + len(events), timeout=10)


def tick(running: Running, at: Any) -> None:
    running.clock.advance(at - running.clock.now())
    for gateway in running.gateways:
        gateway.tick(at)
        assert gateway.wait_until(lambda gateway=gateway: gateway.last_tick == at, timeout=10)


def play_the_night(running: Running, publisher: Publisher) -> None:
    """test_sites' night (run_the_night), Hillside's events sent as Harbour's."""
    tick(running, NIGHT)
    publish(running, publisher, "harbour", power("harbour", "ac-h101", local(17, 23, 10), 30))
    publish(running, publisher, "riverside", tap("riverside", "cp-gate", local(17, 23, 35), "guard-lee"))
    publish(
        running,
        publisher,
        "harbour",
        tap("harbour", "cp-door", local(17, 23, 33), "guard-wu"),
        tap("harbour", "cp-lab", local(17, 23, 45), "guard-wu"),
    )
    tick(running, local(17, 23, 55))  # past cp-hall's deadline (23:50)
    publish(running, publisher, "harbour", tap("harbour", "cp-roof", local(18, 0, 5), "guard-wu"))
    publish(
        running,
        publisher,
        "riverside",
        *[power("riverside", "ac-a204", local(18, 0, m), 1200) for m in range(0, 30, 5)],
    )
    publish(running, publisher, "riverside", power("riverside", "ac-a204", local(18, 0, 30), 0))
    tick(running, MORNING)


@pytest.fixture
def publisher(broker_config: BrokerConfig) -> Iterator[Publisher]:
    client = Publisher(broker_config)
    yield client
    client.close()


def by_subject(alerts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a["subject"].rsplit(":", 1)[-1]: a for a in alerts}


# --------------------------------------------------------------------------- reads across partitions


def test_each_partition_serves_its_own_school(running: Running) -> None:
    assert [list(g.sites) for g in running.gateways] == [["harbour"], ["riverside"]]


def test_the_overview_shows_both_partitions_schools_by_hand(running: Running) -> None:
    rows = {row["id"]: row for row in running.client("district").get("/api/overview").raise_for_status().json()}
    assert list(rows) == ["harbour", "riverside"]  # partition 0's sites, then partition 1's
    river, harbour = rows["riverside"], rows["harbour"]
    # Energy today (Berlin: from 18 Nov 00:00): riverside's AC drew 1200 W from 00:00 to 00:30,
    # 1.2 kW x 0.5 h = 0.6 kWh, at 0.30 EUR = 0.18 EUR. Harbour's meter stayed under standby (30 < 60 W).
    assert river["waste_today"] == {"kwh": 0.6, "cost": 0.18, "currency": "EUR"}
    assert harbour["waste_today"] == {"kwh": 0.0, "cost": 0.0, "currency": "CNY"}
    # Last night, from each partition's rule state: riverside 2 checkpoints due, 1 on time (cp-gate,
    # cp-hall missed); harbour 3 due, 2 on time (cp-door, cp-lab; cp-roof late).
    assert river["patrols"] == {
        "night": "2026-11-17",
        "checkpoints_due": 2,
        "checkpoints_on_time": 1,
        "compliance": 0.5,
    }
    assert harbour["patrols"] == {
        "night": "2026-11-17",
        "checkpoints_due": 3,
        "checkpoints_on_time": 2,
        "compliance": 0.667,
    }  # 2 / 3, to 3 places
    # Silent: harbour's ac-h101, last heard 23:10, long past the 15 min dead-man limit.
    assert harbour["silent_devices"] == {"count": 1, "devices": ["ac-h101"]}
    assert river["silent_devices"] == {"count": 0, "devices": []}
    # Open: riverside cp-hall missed (warning; its AC alert ended at 00:30); harbour cp-roof late
    # (info) and ac-h101 silent (warning).
    assert river["open_alerts"] == {"total": 1, "info": 0, "warning": 1, "critical": 0}
    assert harbour["open_alerts"] == {"total": 2, "info": 1, "warning": 1, "critical": 0}
    assert (river["partition"]["index"], harbour["partition"]["index"]) == (1, 0)
    assert harbour["partition"]["api"] == "http://127.0.0.1:18080"  # partition 0's configured API


def test_alerts_of_both_partitions_with_ids_that_name_their_partition(running: Running) -> None:
    alerts = running.client("district").get("/api/alerts").raise_for_status().json()
    # The night's four alerts: riverside's A-204 (AC) and cp-hall; harbour's cp-roof and ac-h101.
    assert sorted(by_subject(alerts)) == ["A-204", "ac-h101", "cp-hall", "cp-roof"]
    for alert in alerts:
        own = running.gateway_of(alert["site"]).store.alerts(site=alert["site"], rule=alert["rule"])
        (stored,) = [a for a in own if a.subject == alert["subject"]]
        # view id = the partition's own id x 100 + its partition index
        assert alert["id"] == stored.id * 100 + PARTITION[alert["site"]]
        assert alert["partition"]["alert_id"] == stored.id
        detail = running.client("district").get(f"/api/alerts/{alert['id']}").raise_for_status().json()
        assert [step["action"] for step in detail["history"]] == [
            s["action"] for s in running.gateway_of(alert["site"]).store.alert_history(stored.id)
        ]
    open_ones = running.client("district").get("/api/alerts", params={"state": "open"}).json()
    assert sorted(by_subject(open_ones)) == ["ac-h101", "cp-hall", "cp-roof"]  # A-204 resolved at 00:30
    harbour = running.client("district").get("/api/alerts", params={"site": "harbour"}).json()
    assert sorted(by_subject(harbour)) == ["ac-h101", "cp-roof"]


def test_a_time_no_alert_can_have_is_refused_as_at_a_gateway(running: Running) -> None:
    """As a gateway's GET /api/alerts: since/until outside 2000..2100 are refused (422), naming the key."""
    client = running.client("district")
    early = client.get("/api/alerts", params={"since": "1800-01-01T00:00:00Z"})
    assert early.status_code == 422 and early.json()["detail"].startswith("since: expected a time from")
    late = client.get("/api/alerts", params={"until": "2200-01-01T00:00:00Z"})
    assert late.status_code == 422 and late.json()["detail"].startswith("until: expected a time from")


def test_tokens_scoped_to_sites_scope_the_view(running: Running) -> None:
    office = running.client("riverside")
    assert [s["id"] for s in office.get("/api/sites").json()] == ["riverside"]
    assert [row["id"] for row in office.get("/api/overview").json()] == ["riverside"]
    assert sorted(by_subject(office.get("/api/alerts").json())) == ["A-204", "cp-hall"]
    refused = office.get("/api/alerts", params={"site": "harbour"})
    assert (refused.status_code, refused.json()["detail"]) == (403, "site: this token may not see site 'harbour'")
    harbour_alert = by_subject(running.client("district").get("/api/alerts").json())["cp-roof"]["id"]
    assert office.get(f"/api/alerts/{harbour_alert}").status_code == 404
    assert office.post(f"/api/alerts/{harbour_alert}/acknowledge", json={}).status_code == 404
    assert office.get("/api/alerts/999999").status_code == 404  # partition 99 is not in the view


# --------------------------------------------------------------------------- writes


def test_a_write_through_the_view_is_refused_naming_the_partition(running: Running) -> None:
    manager = running.client("district")
    roof = by_subject(manager.get("/api/alerts").json())["cp-roof"]
    own_id = roof["partition"]["alert_id"]
    answer = manager.post(f"/api/alerts/{roof['id']}/acknowledge", json={"note": "on my way"})
    assert answer.status_code == 409
    detail = answer.json()["detail"]
    assert "partition 0 of 2" in detail and "http://127.0.0.1:18080" in detail and f"alert {own_id})" in detail
    harbour = running.gateway_of("harbour")
    assert harbour.store.alert(own_id).state == "open"  # nothing written
    assert manager.post("/api/work-orders", json={"room": "H-101", "category": "hvac"}).status_code == 409
    # Acting at the partition is what the view then shows.
    harbour.acknowledge(own_id, "harbour-desk")
    again = manager.get(f"/api/alerts/{roof['id']}").json()
    assert (again["state"], again["acknowledged_by"]) == ("acknowledged", "harbour-desk")
    # worded for the reader: a token without a locale reads the first site it sees in its language (harbour: zh-CN)
    assert again["history"][-1]["text"] == "harbour-desk 已认领"


def test_the_live_stream_carries_a_step_recorded_at_a_partition(running: Running) -> None:
    roof = by_subject(running.client("district").get("/api/alerts").json())["cp-roof"]
    stream = Stream(f"{running.view.url}/api/alerts/stream", {"Authorization": f"Bearer {TOKENS['district']}"})
    try:
        assert stream.status == 200
        running.gateway_of("harbour").acknowledge(roof["partition"]["alert_id"], "harbour-desk")
        # the view asks every 2 s: steps of the night it had not yet passed on may come first
        seen = [stream.next(timeout=10)]
        while seen[-1][2].get("change") != "acknowledged":
            seen.append(stream.next(timeout=10))
        assert {data["change"] for _, _, data in seen[:-1]} <= {"opened", "escalated", "resolved"}
        _, event, data = seen[-1]
        assert (event, data["alert"]["id"], data["alert"]["state"], data["alert"]["acknowledged_by"]) == (
            "alert",
            roof["id"],
            "acknowledged",
            "harbour-desk",
        )
    finally:
        stream.close()


def test_me_reads_only_and_a_site_s_page_is_its_partition_s(running: Running) -> None:
    me = running.client("district").get("/api/me").json()
    assert me["read_only"] is True and me["sites"] == ["harbour", "riverside"]
    # a manager may acknowledge and assign at a gateway; here the dashboard offers neither
    assert "reports:read" in me["permissions"] and "alerts:ack" not in me["permissions"]
    page = httpx.get(f"{running.view.url}/", timeout=10)
    assert page.status_code == 200 and 'data-site-count="2"' in page.text
    moved = httpx.get(f"{running.view.url}/?site=harbour", timeout=10)
    assert (moved.status_code, moved.headers["location"]) == (303, "http://127.0.0.1:18080/?site=harbour")
    assert httpx.get(f"{running.view.url}/?site=lakeside", timeout=10).status_code == 404


def test_health_lists_each_partition(running: Running) -> None:
    health = running.client("district").get("/api/health")
    assert health.status_code == 200
    # live: harbour cp-roof and ac-h101 (partition 0); riverside cp-hall (partition 1)
    assert [(p["index"], p["state"], p["live_alerts"]) for p in health.json()["partitions"]] == [
        (0, "ok", 2),
        (1, "ok", 1),
    ]


# --------------------------------------------------------------------------- start-up


def test_sqlite_state_is_refused_naming_state_db(tmp_path: Path, broker_config: BrokerConfig) -> None:
    view = write_district(tmp_path, broker_config, [tmp_path / "state-0.db", tmp_path / "state-1.db"])
    with pytest.raises(ConfigError, match=r"partitions\[0\] .*: state_db: .*state-0.db is a SQLite file"):
        load_partitions(load_config(view, ViewConfig), view)
    result = warden("view", "--config", view)
    assert result.returncode == 2
    assert "state_db:" in output(result) and "SQLite" in output(result)


def test_warden_view_serves_the_district_as_a_process(running: Running, tmp_path: Path) -> None:
    """The command as deployed: its own process, beside the running partitions; stopped by SIGTERM."""
    port = free_port()
    view = tmp_path / "view.yaml"
    config = yaml.safe_load(view.read_text())
    view.write_text(yaml.safe_dump({**config, "api": {**config["api"], "port": port}}))
    with (tmp_path / "view.log").open("wb") as log:
        process = subprocess.Popen(
            [*warden_command(), "view", "--config", str(view)], stdout=subprocess.DEVNULL, stderr=log
        )
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKENS['district']}"}, timeout=10
    )
    try:
        wait_for(lambda: process.poll() is None and answers(client), timeout=30, what="warden view answering")
        # the night's open alerts: harbour cp-roof and ac-h101, riverside cp-hall
        totals = {row["id"]: row["open_alerts"]["total"] for row in client.get("/api/overview").json()}
        assert totals == {"harbour": 2, "riverside": 1}
    finally:
        terminate(process, timeout=10)
    assert process.returncode == 0, (tmp_path / "view.log").read_text()


def answers(client: httpx.Client) -> bool:
    try:
        return client.get("/api/health").status_code == 200
    except httpx.HTTPError:
        return False


def test_a_district_with_a_partition_missing_is_refused(tmp_path: Path, broker_config: BrokerConfig) -> None:
    view = write_district(tmp_path, broker_config, ["postgresql://localhost/p0", "postgresql://localhost/p1"])
    config = load_config(view, ViewConfig)
    with pytest.raises(ConfigError, match=r"give each partition of 2 once \(missing: 1; given: 0\)"):
        load_partitions(config.model_copy(update={"partitions": config.partitions[:1]}), view)
    twice = config.model_copy(update={"partitions": [config.partitions[0], config.partitions[0]]})
    with pytest.raises(ConfigError, match="state_db: the same database as"):
        load_partitions(twice, view)


def test_an_unreachable_partition_is_named_with_503(
    private_postgres: PostgresServer, tmp_path: Path, broker_config: BrokerConfig
) -> None:
    urls: list[str | Path] = [fresh_database(private_postgres, f"p{index}") for index in (0, 1)]
    view_file = write_district(tmp_path, broker_config, urls)
    district = open_district(load_config(view_file, ViewConfig), view_file, ManualClock(MORNING))
    view = ApiServer(create_view_app(district, load_config(view_file, ViewConfig).api), "127.0.0.1", 0)
    view.start()
    try:
        client = httpx.Client(
            base_url=view.url, headers={"Authorization": f"Bearer {TOKENS['district']}"}, timeout=10
        )
        assert client.get("/api/health").status_code == 200
        private_postgres.stop()
        health = client.get("/api/health")
        assert health.status_code == 503
        assert [p["state"] for p in health.json()["partitions"]] == ["unreachable", "unreachable"]
        overview = client.get("/api/overview")
        assert overview.status_code == 503
        assert overview.json()["detail"].startswith("partition 0 of 2 (gateway view-p0-")
    finally:
        view.stop()
        district.close()
    with pytest.raises(PartitionUnavailable, match=r"partitions\[0\]: state_db unreachable \(host=127.0.0.1, port="):
        open_district(load_config(view_file, ViewConfig), view_file)


def test_a_refused_district_leaves_no_session_open_on_the_partitions_already_opened(
    postgres: PostgresServer, databases: list[str | Path], tmp_path: Path, broker_config: BrokerConfig
) -> None:
    """Partition 0 answers, partition 1 names a port nobody listens on: the view is refused, naming
    partitions[1], and partition 0's state and work orders (two sessions while open) are closed again."""
    unreachable = f"postgresql://warden@127.0.0.1:{free_port()}/nobody"
    view_file = write_district(tmp_path, broker_config, [databases[0], unreachable])
    opened = str(databases[0]).rsplit("/", 1)[1]

    def sessions() -> int:
        with psycopg.connect(postgres.dsn, autocommit=True) as admin:
            row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (opened,)).fetchone()
        return int(row[0]) if row else -1

    with pytest.raises(PartitionUnavailable, match=r"partitions\[1\]: state_db unreachable"):
        open_district(load_config(view_file, ViewConfig), view_file)
    wait_for(lambda: sessions() == 0, timeout=10, what="partition 0 closed")  # a backend ends just after its client
