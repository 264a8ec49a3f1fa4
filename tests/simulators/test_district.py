"""The district generator: the requested size, every device type, an exact ground truth."""

from __future__ import annotations

import pytest

from simulators.district import benchmark, district_scenario, parse_size
from simulators.ground_truth import compare, expected_alerts
from simulators.replay import replay
from simulators.timeline import Night


@pytest.mark.parametrize(("buildings", "rooms"), [(1, 1), (3, 7), (12, 9), (50, 40)])
def test_n_buildings_by_m_rooms_is_n_times_m_devices(buildings: int, rooms: int) -> None:
    scenario = district_scenario(buildings, rooms)
    assert len(scenario.devices) == buildings * rooms
    assert len(scenario.site.buildings) == buildings
    assert all(len(b.rooms) == rooms for b in scenario.site.buildings)
    assert {scenario.site.locate(d.device) is not None for d in scenario.devices} == {True}


def test_a_district_has_every_pushing_device_type_and_incidents() -> None:
    scenario = district_scenario(11, 12)
    assert {d.type for d in scenario.devices} == {"door_controller", "water_meter", "wet_sensor", "patrol_reader", "power_meter"}
    assert {i.type for i in scenario.incidents} == {"ac_left_on", "water_leak", "door_forced", "skip_checkpoint", "device_silent"}
    assert scenario.duration.total_seconds() == 12 * 3600


def test_a_small_district_raises_exactly_its_ground_truth_through_drivers_and_rules() -> None:
    scenario = district_scenario(11, 6, seed=4)
    result = replay(Night(scenario, 4))
    check = compare(result.alerts, [(e.rule, e.subject) for e in expected_alerts(scenario)])
    assert check.exact, check.as_dict()
    assert len(check.expected) >= 5


def test_the_benchmark_generates_every_message_of_the_night() -> None:
    result = benchmark(4, 10)
    assert result.devices == 40
    meters = [d for d in district_scenario(4, 10).devices if d.type in ("power_meter", "water_meter")]
    assert result.tally.emissions > len(meters) * (12 * 60 + 1)  # meters report every minute
    assert result.tally.events > result.tally.emissions
    assert result.seconds > 0


@pytest.mark.parametrize("text", ["50", "50x", "ax4", "0x3", "3x-1"])
def test_a_size_is_buildings_x_rooms(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)
    assert parse_size("50x40") == (50, 40)
