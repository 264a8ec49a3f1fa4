"""The electricity meter simulator: power follows the timetable, "left on" keeps it up, and
both wire variants are read by the real drivers (mqtt_json, and modbus_rtu against the
SDM120 simulator answering from the meter's curve at the simulated time)."""

from __future__ import annotations

import struct
import threading
from datetime import datetime, timedelta, timezone

import pytest

from agent.drivers.modbus_rtu import ModbusRtuDriver
from agent.drivers.mqtt_json import MqttJsonDriver
from simulators.ac_meter import POWER_FIELDS, SDM120_INCLUDE, PowerMeterSim
from simulators.base import ScheduleBook, epoch
from simulators.sdm120 import Sdm120Sim
from simulators.timeline import Night
from tests.support.scenarios import scenario
from warden.clock import ManualClock
from warden.config import ModbusRtuDevice, MqttJsonDevice
from warden.events import Event, Reading

METER = {"type": "power_meter", "device": "ac-a101", "room": "A-101", "rated_w": 1200}


def meter(**overrides: object) -> PowerMeterSim:
    return Night(scenario(devices=[{**METER, **overrides}])).power["ac-a101"]


def minutes(sim: PowerMeterSim) -> list[float]:
    start, end = epoch(sim.scenario.start_utc), epoch(sim.scenario.end_utc)
    return [start + 60 * n for n in range(int((end - start) // 60) + 1)]


def test_a_unit_runs_only_inside_its_rooms_timetable() -> None:
    sim = meter()
    book = ScheduleBook(sim.scenario.site, *(epoch(t) for t in (sim.scenario.start_utc, sim.scenario.end_utc)))
    on = [t for t in minutes(sim) if sim.profile.on(t)]
    assert on, "a school-day afternoon has the AC running"
    assert all(book.scheduled("school-day", t) for t in on)
    assert not sim.profile.on(datetime(2026, 11, 17, 22, 0, tzinfo=timezone.utc).timestamp())


def test_nothing_runs_over_a_weekend() -> None:
    night = scenario(devices=[METER], start="2026-11-20T16:00:00", end="2026-11-23T06:00:00")  # Friday to Monday
    sim = Night(night).power["ac-a101"]
    zone = night.site.zone
    on_days = {datetime.fromtimestamp(t, zone).weekday() for t in minutes(sim) if sim.profile.on(t)}
    assert on_days <= {4}  # Friday afternoon only


def test_left_on_keeps_it_running_after_hours_and_the_register_counts_it() -> None:
    night = scenario(devices=[METER], incidents=[{"type": "ac_left_on", "device": "ac-a101", "until": "06:00"}])
    sim = Night(night).power["ac-a101"]
    late = datetime(2026, 11, 18, 2, 0, tzinfo=timezone.utc).timestamp()
    assert sim.profile.power(late) >= 0.9 * 1200
    assert not sim.profile.on(datetime(2026, 11, 18, 5, 30, tzinfo=timezone.utc).timestamp())  # 06:30 local
    energy = [sim.profile.energy(t) for t in minutes(sim)]
    assert energy == sorted(energy)
    assert energy[-1] - energy[0] == pytest.approx(sum(sim.profile.watts[: len(energy) - 1]) / 60_000, rel=1e-9)


def test_the_mqtt_payloads_through_the_mqtt_json_driver() -> None:
    sim = meter()
    emitted: list[Event] = []
    config = MqttJsonDevice.model_validate({"driver": "mqtt_json", "id": "ac-a101", "topic": "t", "fields": POWER_FIELDS})
    driver = MqttJsonDriver(config, "riverside", emitted.append, ManualClock(sim.scenario.start_utc))
    emissions = list(sim.emissions("t", 60.0, skew=30.0))
    for e in emissions:
        driver.handle(e.payload)
    assert driver.counters.events == len(emissions) == 961 and not driver.counters.errors
    power = [r for r in emitted if isinstance(r, Reading) and r.quantity == "power"]
    assert [r.event_time.timestamp() for r in power] == [e.t + 30 for e in emissions]  # the device clock's skew
    assert [r.value for r in power] == [round(sim.profile.power(e.t), 1) for e in emissions]


def test_the_modbus_variant_answers_the_real_driver_from_the_curve_at_the_simulated_time() -> None:
    sim = meter(transport="modbus", runs="07:40-17:45")
    at = datetime(2026, 11, 17, 15, 30, tzinfo=timezone.utc)  # 16:30 local: the unit is on
    moment = [at]  # the simulated clock, moved by hand
    with Sdm120Sim(source=lambda: sim.registers_at(moment[0].timestamp())) as device:
        config = ModbusRtuDevice.model_validate({"driver": "modbus_rtu", "id": "ac-a101", "port": device.port,
                                                "registers": "sdm120", "include": SDM120_INCLUDE, "timeout_seconds": 1})
        driver = ModbusRtuDriver(config, "riverside", lambda event: None, ManualClock(at))
        try:
            first = {r.channel: r.value for r in driver.poll(at, threading.Event())}
            moment[0] = at + timedelta(hours=8)
            second = {r.channel: r.value for r in driver.poll(moment[0], threading.Event())}
        finally:
            driver.bus.close()
    expected = sim.registers_at(at.timestamp())
    assert first["active_power"] == _float32(expected["active_power"]) and first["active_power"] > 1000
    assert first["voltage"] == _float32(expected["voltage"])
    assert first["import_energy"] == pytest.approx(expected["import_energy"], abs=1e-3)
    assert second["active_power"] == 2.0  # standby after hours
    assert second["import_energy"] > first["import_energy"]


def _float32(value: float) -> float:
    return float(f"{struct.unpack('>f', struct.pack('>f', value))[0]:.6g}")
