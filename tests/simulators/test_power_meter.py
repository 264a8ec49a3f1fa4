"""The electricity meter simulator: power follows the timetable or a wall timer (its days,
holidays), a fridge cycles by itself, "left on" keeps a load up, continuously or in a
thermostat's duty cycle (kWh checked against hand arithmetic), and both wire variants
are read by the real drivers (mqtt_json, and modbus_rtu against the SDM120 simulator
answering from the meter's curve at the simulated time)."""

from __future__ import annotations

import struct
import threading
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from agent.drivers.modbus_rtu import ModbusRtuDevice, ModbusRtuDriver
from agent.drivers.mqtt_json import MqttJsonDevice, MqttJsonDriver
from simulators.ac_meter import POWER_FIELDS, SDM120_INCLUDE, PowerMeterSim
from simulators.base import ScheduleBook, epoch
from simulators.sdm120 import Sdm120Sim
from simulators.timeline import Night
from tests.support.scenarios import scenario
from warden.clock import ManualClock
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


# --------------------------------------------------------------------------- circuits of every kind, thermostats


def after_hours_kwh(sim: PowerMeterSim, a: float, b: float) -> tuple[int, float]:
    """On-minutes and kWh the register counts in [a, b)."""
    on = sum(1 for t in range(int(a), int(b), 60) if sim.profile.on(t))
    return on, sim.profile.energy(b) - sim.profile.energy(a)


def test_a_thermostat_cycling_12_on_8_off_from_1830_to_0730() -> None:
    night = scenario(devices=[{**METER, "rated_w": 1400}], incidents=[
        {"type": "ac_left_on", "device": "ac-a101", "at": "18:30", "until": "07:30", "duty": {"on_minutes": 12, "off_minutes": 8}},
    ])
    sim = Night(night).power["ac-a101"]
    a, b = local(17, 18, 30), local(18, 7, 30)
    on, kwh = after_hours_kwh(sim, a, b)
    # 18:30 -> 07:30 is 13 h = 780 min = 39 cycles of 20 min, each 12 min on: 39 x 12 = 468 on-minutes.
    assert on == 468
    # 468 min at 90-100 % of 1400 W: between 468/60 x 1.26 = 9.828 kWh and 468/60 x 1.4 = 10.92 kWh.
    assert 9.828 <= kwh <= 10.92
    # The first cycle: on 18:30-18:42, off 18:42-18:50, on again at 18:50.
    assert [sim.profile.on(local(17, 18, m)) for m in (30, 41, 42, 49, 50)] == [True, True, False, False, True]


def test_a_20_on_10_off_cycle_at_its_own_power() -> None:
    night = scenario(devices=[METER], incidents=[
        {"type": "left_on", "device": "ac-a101", "at": "20:00", "until": "23:00", "power_w": 2000,
         "duty": {"on_minutes": 20, "off_minutes": 10}},
    ])
    sim = Night(night).power["ac-a101"]
    on, kwh = after_hours_kwh(sim, local(17, 20), local(17, 23))
    # 3 h = 6 cycles of 30 min, 20 min on each: 120 on-minutes at 1800-2000 W = 3.6-4.0 kWh.
    assert on == 120
    assert 3.6 <= kwh <= 4.0
    assert all(1800 <= sim.profile.power(t) <= 2000 for t in range(int(local(17, 20)), int(local(17, 20, 20)), 60))


def test_lights_and_water_heaters_run_only_in_their_rooms_timetable() -> None:
    for kind in ("lighting", "water_heating"):
        sim = meter(circuit=kind, use_probability=1.0)
        on = [t for t in minutes(sim) if sim.profile.on(t)]
        assert on, kind
        # school-day: 07:30-18:00 local, Tuesday afternoon and Wednesday morning
        assert all(local(17, 16) <= t < local(17, 18) or local(18, 7, 30) <= t <= local(18, 8) for t in on), kind


def test_a_fridge_compressor_cycles_all_night_and_all_weekend() -> None:
    night = scenario(devices=[{**METER, "circuit": "refrigeration", "rated_w": 300}],
                     start="2026-11-20T16:00:00", end="2026-11-23T08:00:00")  # Friday to Monday
    sim = Night(night).power["ac-a101"]
    states = [sim.profile.on(t) for t in minutes(sim)]
    runs = "".join("1" if s else "0" for s in states).strip("0")
    on_runs, off_runs = [len(r) for r in runs.split("0") if r], [len(r) for r in runs.split("1") if r]
    # its own cycle: 8-18 min on, 12-30 min off (whole minutes on the meter's grid: one more at most)
    assert max(on_runs) <= 19 and max(off_runs) <= 31
    # 64 h at a duty of 8/42 to 18/30: some hundreds of cycles, a fifth to a third of the time on, weekend or not
    assert 0.15 < sum(states) / len(states) < 0.4
    saturday_night = [sim.profile.on(t) for t in range(int(local(22, 1)), int(local(22, 4)), 60)]
    assert any(saturday_night) and not all(saturday_night)


def test_a_wall_timer_runs_on_the_rooms_days_and_not_on_holidays_unless_given_its_own_days() -> None:
    # 2026-12-24 is a holiday of the test site (a Thursday); the 23rd is a Wednesday, the 26th a Saturday.
    days = {"start": "2026-12-23T06:00:00", "end": "2026-12-27T06:00:00"}
    plain = Night(scenario(devices=[{**METER, "runs": "07:40-17:45"}], **days)).power["ac-a101"]
    assert plain.profile.on(local_dec(23, 12)) and not plain.profile.on(local_dec(23, 18))
    assert not plain.profile.on(local_dec(24, 12))  # the holiday
    assert plain.profile.on(local_dec(25, 12))  # Friday
    assert not plain.profile.on(local_dec(26, 12))  # the room's schedule has no Saturday
    # a timer set for every day knows no holidays either
    every_day = Night(scenario(devices=[{**METER, "runs": {"hours": "07:40-17:45", "days": "mon-sun"}}], **days)).power["ac-a101"]
    assert every_day.profile.on(local_dec(26, 12)) and every_day.profile.on(local_dec(24, 12))


def local(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 11, day, hour, minute, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()


def local_dec(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2026, 12, day, hour, minute, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
