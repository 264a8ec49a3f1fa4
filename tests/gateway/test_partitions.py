"""Partitioned gateways (issue 21): two gateway processes' worth, partitions 0 and 1 of 2,
share one real Mosquitto; each subscribes to its own sites' topics only and stores only
their events.

The partitions are worked out here from SHA-256 digests, independently of
gateway.sites.partition_of: a site's partition of 2 is the parity of the first 8 bytes of
sha256(site id), read big-endian, i.e. of the 16th hex digit of the digest:

    riverside  12aea5f4cd614e6b...  b odd  -> 1
    hillcrest  2643b1b74d4daceb...  b odd  -> 1
    harbour    aa74f6fd03bf68be...  e even -> 0
    lakeside   0188eaa432b3f6d6...  6 even -> 0
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from gateway.config import GatewayConfig
from gateway.service import Gateway
from gateway.sites import load_sites
from tests.gateway.test_gateway import Publisher
from tests.support.agent_process import AgentProcess
from tests.support.scripts import console_script
from warden import topics
from warden.clock import ManualClock
from warden.config import BrokerConfig, ConfigError, load_config
from warden.events import Reading, encode_events, stable_event_id

DIGESTS = {
    "riverside": "12aea5f4cd614e6b",
    "hillcrest": "2643b1b74d4daceb",
    "harbour": "aa74f6fd03bf68be",
    "lakeside": "0188eaa432b3f6d6",
}
PARTITION = {"riverside": 1, "hillcrest": 1, "harbour": 0, "lakeside": 0}
AT = datetime(2026, 11, 17, 10, 0, tzinfo=timezone.utc)


def test_the_digests_in_the_docstring_are_sha256s() -> None:
    for site, digest in DIGESTS.items():
        assert hashlib.sha256(site.encode()).hexdigest()[:16] == digest


def write_sites(folder: Path, ids: list[str]) -> None:
    for site_id in ids:
        (folder / f"{site_id}.yaml").write_text(yaml.safe_dump({
            "id": site_id, "timezone": "Europe/Berlin",
            "buildings": [{"id": "main", "rooms": [{"id": f"{site_id}-hall", "devices": ["meter-1"]}]}],
        }))  # fmt: skip


def write_gateway(folder: Path, broker: BrokerConfig, index: int, count: int = 2) -> Path:
    path = folder / f"gateway-{index}.yaml"
    path.write_text(yaml.safe_dump({
        "id": f"gw-{folder.name}-p{index}"[:60],
        "sites": [{"site_file": f"{site_id}.yaml"} for site_id in PARTITION],
        "partition": {"count": count, "index": index},
        "broker": broker.model_dump(mode="json"),
        "historian": {"type": "sqlite", "path": f"history-{index}.db"},
        "state_db": f"state-{index}.db",
    }))  # fmt: skip
    return path


def reading(site: str) -> Reading:
    return Reading(
        id=stable_event_id(site, "meter-1", AT.isoformat()),
        site=site,
        device="meter-1",
        event_time=AT,
        quantity="power",
        value=100.0,
        unit="W",
    )


def test_each_partition_serves_and_receives_only_its_own_sites(broker_config: BrokerConfig, tmp_path: Path) -> None:
    write_sites(tmp_path, list(PARTITION))
    gateways = []
    for index in (0, 1):
        path = write_gateway(tmp_path, broker_config, index)
        config = load_config(path, GatewayConfig)
        gateway = Gateway(config, load_sites(config, path), ManualClock(AT + timedelta(hours=1)), tick_every=None)
        gateway.start()
        assert gateway.subscribed.wait(10)
        gateways.append(gateway)
    publisher = Publisher(broker_config)
    try:
        for site in PARTITION:  # one reading a site, in the configured order
            publisher.raw(encode_events([reading(site)]), topics.events_topic(site, "agent-a"))
        for gateway in gateways:
            assert gateway.wait_until(lambda gateway=gateway: gateway.events_stored == 2, timeout=10), (
                gateway.counts()
            )
    finally:
        publisher.close()
        for gateway in gateways:
            gateway.stop()
    assert [list(g.sites) for g in gateways] == [["harbour", "lakeside"], ["riverside", "hillcrest"]]
    for index, gateway in enumerate(gateways):
        assert gateway.counts()["messages"] == 2  # nothing of the other partition's sites arrived
        assert gateway.store.dead_letters() == []
        with sqlite3.connect(tmp_path / f"history-{index}.db") as db:
            stored = sorted(site for (site,) in db.execute("SELECT site FROM point_series"))
        assert stored == sorted(site for site, partition in PARTITION.items() if partition == index)


def test_a_partition_holding_no_site_is_refused(tmp_path: Path, broker_config: BrokerConfig) -> None:
    """Riverside alone is in partition 1 of 2: partition 0 would serve nothing."""
    write_sites(tmp_path, ["riverside"])
    path = tmp_path / "gateway.yaml"
    path.write_text(
        yaml.safe_dump({"sites": [{"site_file": "riverside.yaml"}], "partition": {"count": 2, "index": 0}})
    )
    with pytest.raises(ConfigError) as caught:
        load_sites(load_config(path, GatewayConfig), path)
    assert str(caught.value) == (
        f"{path}: partition: partition 0 of 2 holds none of the 1 site(s) configured; "
        "use fewer partitions or add sites"
    )


def test_the_shipped_district_example_splits_its_sites_between_two_partitions() -> None:
    """config/district: gateway-0.yaml and gateway-1.yaml serve the same site folder, each its half."""
    folder = Path(__file__).parents[2] / "config" / "district"
    served = []
    for name in ("gateway-0.yaml", "gateway-1.yaml"):
        config = load_config(folder / name, GatewayConfig)
        served.append([site.id for site, _ in load_sites(config, folder / name)])
    everything = load_sites(load_config(folder / "gateway.yaml", GatewayConfig), folder / "gateway.yaml")
    assert sorted(served[0] + served[1]) == sorted(site.id for site, _ in everything)
    assert served[0] and served[1] and not set(served[0]) & set(served[1])


def district_copy(tmp_path: Path, broker: BrokerConfig) -> Path:
    """config/district in tmp_path, on the test's broker and any free API port."""
    shipped = Path(__file__).parents[2] / "config" / "district"
    shutil.copytree(shipped, tmp_path / "district")
    for name in ("gateway-0.yaml", "gateway-1.yaml"):
        path = tmp_path / "district" / name
        document = yaml.safe_load(path.read_text())
        document["broker"] = broker.model_dump(mode="json")
        document["api"]["port"] = 0
        path.write_text(yaml.safe_dump(document))
    return tmp_path / "district"


def test_warden_gateway_serves_its_partitions_sites(broker_config: BrokerConfig, tmp_path: Path) -> None:
    """The shipped partition 1 of 2: hillcrest alone (see the site files' comments)."""
    folder = district_copy(tmp_path, broker_config)
    gateway = AgentProcess(folder / "gateway-1.yaml", command=[console_script("warden"), "gateway"])
    try:
        gateway.wait_log("gateway started", timeout=60)
        [started] = [line for line in gateway.lines if "gateway started" in line]
    finally:
        gateway.stop()
    assert 'sites=["hillcrest"]' in started, started


def test_warden_gateway_refuses_a_partition_holding_no_site(tmp_path: Path) -> None:
    write_sites(tmp_path, ["riverside"])  # partition 1 of 2
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"sites": [{"site_file": "riverside.yaml"}], "partition": {"count": 2, "index": 0}}))
    done = subprocess.run([console_script("warden"), "gateway", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"{path}: partition: partition 0 of 2 holds none of the 1 site(s) configured" in done.stdout + done.stderr
