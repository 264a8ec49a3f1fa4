"""The district of many sites (simulators/sites.py): sizes, ids, zones, calendars, the
partition files and each site's ground truth, read off its incidents by hand."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import time
from pathlib import Path

import pytest

from agent.config import AgentConfig
from gateway.config import GatewayConfig
from gateway.sites import load_sites
from simulators.scenario import Scenario
from simulators.sites import SHORT_HOURS, SHORT_START_UTC, agent_events, district_sites, write_district
from warden.config import BrokerConfig, load_config

CENTRAL = BrokerConfig(host="127.0.0.1", port=1883)


def partition_by_hand(site_id: str, count: int) -> int:
    """The contract's stable hash: SHA-256 of the id, first 8 bytes big-endian, mod count."""
    return int.from_bytes(hashlib.sha256(site_id.encode()).digest()[:8], "big") % count


@pytest.mark.parametrize(("sites", "devices"), [(1, 1), (5, 30), (3, 200), (2, 41)])
def test_every_site_has_exactly_the_devices_asked_for(sites: int, devices: int) -> None:
    district = district_sites(sites, devices)
    assert len(district.sites) == sites
    assert [len(s.devices) for s in district.sites] == [devices] * sites
    assert district.devices == sites * devices


def test_site_agent_and_device_ids_are_unique_across_the_district() -> None:
    district = district_sites(7, 23)
    site_ids = [s.site.id for s in district.sites]
    agents = [s.agent for s in district.sites]
    devices = [d.device for s in district.sites for d in s.devices]
    assert len(set(site_ids)) == 7 and len(set(agents)) == 7
    assert len(devices) == 7 * 23 and len(set(devices)) == len(devices)


def test_most_sites_are_in_shanghai_and_two_elsewhere() -> None:
    zones = Counter(s.site.timezone for s in district_sites(10, 5).sites)
    assert zones == {"Asia/Shanghai": 8, "Asia/Tokyo": 1, "Australia/Eucla": 1}


def test_every_night_covers_the_same_utc_span_in_its_own_zone() -> None:
    district = district_sites(6, 4)
    assert {(s.start_utc, s.end_utc) for s in district.sites} == {(district.sites[0].start_utc, district.sites[0].end_utc)}
    # 10:30 UTC is 18:30 in Shanghai (UTC+8), 19:30 in Tokyo (+9), 19:15 in Eucla (+8:45)
    starts = {s.site.timezone: s.start.strftime("%H:%M") for s in district.sites}
    assert starts == {"Asia/Shanghai": "18:30", "Asia/Tokyo": "19:30", "Australia/Eucla": "19:15"}


def test_each_site_has_its_own_calendar_and_timetable() -> None:
    sites = district_sites(6, 4).sites
    # site 3 is a boarding school (n % 3 == 0): lessons and self-study until 21:30
    assert sites[3].site.schedules["school-day"][0].end == time(21, 30)
    assert sites[2].site.schedules["school-day"][0].end == time(18, 0)
    # site 4 keeps its founding day on the night's Tuesday (n % 5 == 4); site 2 does not
    assert "2026-11-17" in {h.start.isoformat() for h in sites[4].site.calendar.holidays}
    assert "2026-11-17" not in {h.start.isoformat() for h in sites[2].site.calendar.holidays}
    assert len({s.site.calendar.holidays[0].start for s in sites}) == 6  # every sports day differs


def test_the_partition_files_cover_every_site_exactly_once(tmp_path: Path) -> None:
    district = district_sites(9, 3)
    files = write_district(district, tmp_path, partitions=3, central=CENTRAL)
    served: list[str] = []
    for index, path in enumerate(files.gateway_files):
        config = load_config(path, GatewayConfig)
        ids = [site.id for site, _ in load_sites(config, path)]
        assert ids and all(partition_by_hand(sid, 3) == index for sid in ids)
        served += ids
        standby = load_config(files.standby_files[index], GatewayConfig)
        assert (standby.id, standby.state_db, standby.partition) == (config.id, config.state_db, config.partition)
    assert sorted(served) == sorted(s.site.id for s in district.sites)


def test_each_site_is_judged_by_its_own_patrol_route(tmp_path: Path) -> None:
    district = district_sites(2, 8)
    files = write_district(district, tmp_path, partitions=1, central=CENTRAL)
    path = files.gateway_files[0]
    loaded = load_sites(load_config(path, GatewayConfig), path)
    assert {site.id: [r.id for r in rules.patrol.routes] for site, rules in loaded} == {
        "school-00": ["round-s00-b000"], "school-01": ["round-s01-b000"],
    }


def test_each_edge_broker_bridges_its_own_sites_once(tmp_path: Path) -> None:
    district = district_sites(5, 2, edges=2)
    files = write_district(district, tmp_path, partitions=2, central=CENTRAL)
    texts = [f.read_text() for f in files.edge_files]
    assert len(texts) == 2
    for scenario in district.sites:
        sid = scenario.site.id
        carrying = [n for n, text in enumerate(texts) if f"connection warden-{sid}\n" in text]
        assert carrying == [district.edge_of(sid)]
        assert f"topic warden/v1/{sid}/+/events out 1" in texts[carrying[0]]
        assert "address 127.0.0.1:1883\n" in texts[carrying[0]] and "riverside" not in texts[carrying[0]]
    # 5 sites over 2 brokers in order: 0, 1, 2 on the first (n * 2 // 5 = 0, 0, 0), 3, 4 on the second
    assert [district.edge_of(s.site.id) for s in district.sites] == [0, 0, 0, 1, 1]
    for sid, path in files.agent_files.items():
        agent = load_config(path, AgentConfig)
        assert (agent.id, agent.site, len(agent.devices)) == (f"agent-{sid}", sid, 2)


def hand_truth(scenario: Scenario) -> set[tuple[str, str]]:
    """What each incident of a small site must page, by the rules' documentation
    (docs/rules.md), not by the ground-truth code: an AC left on pages ac_after_hours on
    its room (the device is "ac-<room>"); a burst pages water_burst on its meter; a forced
    door door_forced on the door; a checkpoint skipped on the 02:00 round of the night to
    Wednesday 18 November pages patrol_checkpoint on "<route>:<date>T02:00:<tag>" (the
    route is "round-<building>", the guard "guard-<building>"); a silent device pages
    deadman on itself."""
    pairs = set()
    for incident in scenario.incidents:
        match incident.type:
            case "ac_left_on":
                pairs.add(("ac_after_hours", incident.device.removeprefix("ac-")))
            case "water_leak":
                assert incident.kind == "burst"  # one meter a site: the first leak drawn is a burst
                pairs.add(("water_burst", incident.device))
            case "door_forced":
                pairs.add(("door_forced", incident.door))
            case "skip_checkpoint":
                route = "round-" + incident.guard.removeprefix("guard-")
                pairs.add(("patrol_checkpoint", f"{route}:2026-11-18T02:00:{incident.tag}"))
            case "device_silent":
                pairs.add(("deadman", incident.device))
            case other:
                raise AssertionError(f"an incident this test has no answer for: {other}")
    return pairs


def test_each_sites_truth_follows_from_its_own_incidents(tmp_path: Path) -> None:
    district = district_sites(4, 12, start=SHORT_START_UTC, hours=SHORT_HOURS)
    files = write_district(district, tmp_path, partitions=2, central=CENTRAL)
    for scenario in district.sites:
        assert [i.type for i in scenario.incidents] == [
            "ac_left_on", "water_leak", "door_forced", "skip_checkpoint", "device_silent",
        ]
        document = json.loads(files.truth_files[scenario.site.id].read_text())
        assert document["site"] == scenario.site.id
        assert {(a["rule"], a["subject"]) for a in document["expected_alerts"]} == hand_truth(scenario)
    # incidents are drawn per site: no two sites lose the same room's AC
    assert len({s.incidents[0].device for s in district.sites}) == 4


def test_a_sites_agent_publishes_only_its_own_devices_events() -> None:
    scenario = district_sites(2, 6, start=SHORT_START_UTC, hours=SHORT_HOURS).sites[1]
    events = agent_events(scenario, 1)
    devices = {d.device for d in scenario.devices}
    assert {e.site for _, e in events} == {"school-01"}
    assert {e.device for _, e in events} <= devices | {scenario.agent}
    times = [t for t, _ in events]
    assert times == sorted(times)
    # 4.5 hours of the night: made between its start and its end
    assert scenario.start_utc.timestamp() <= times[0] and times[-1] <= scenario.end_utc.timestamp()
