from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.alerts import AlertSignal, Severity, SignalAction
from rules.config import RulesConfig
from rules.engine import RuleEngine
from rules.water import BURST, CONTINUOUS_FLOW, NIGHT_FLOW, WET, WaterConfig, WaterRule
from tests.rules.helpers import actions, arrival_order, local, of_rule, replay, utc
from warden.config import SiteConfig
from warden.events import Quantity, Reading, stable_event_id

RAISE, UPDATE, RESOLVE = SignalAction.RAISE, SignalAction.UPDATE, SignalAction.RESOLVE

SITE = SiteConfig.model_validate(
    {
        "id": "school",
        "timezone": "Europe/Berlin",
        "buildings": [{"id": "A", "rooms": [{"id": "A-WC", "devices": ["wm-1", "wet-1"]}]}],
    }
)


def reading(device: str, at: datetime, quantity: Quantity, value: float, unit: str, cumulative: bool = False) -> Reading:
    return Reading(
        id=stable_event_id("school", device, quantity, at.isoformat()),
        site="school",
        device=device,
        event_time=at,
        quantity=quantity,
        value=value,
        unit=unit,
        cumulative=cumulative,
    )


def flow(at: datetime, value: float, device: str = "wm-1", unit: str = "L/min") -> Reading:
    return reading(device, at, Quantity.FLOW, value, unit)


def register(at: datetime, m3: float, device: str = "wm-1") -> Reading:
    return reading(device, at, Quantity.VOLUME, m3, "m3", cumulative=True)


def wet(at: datetime, value: float, device: str = "wet-1") -> Reading:
    return reading(device, at, Quantity.WET, value, "1")


def flows(start: datetime, minutes: int, step: int, value: float | list[float], device: str = "wm-1") -> list[Reading]:
    """Flow readings every `step` minutes for `minutes` minutes (inclusive of the end)."""
    values = value if isinstance(value, list) else [value] * (minutes // step + 1)
    return [flow(start + timedelta(minutes=i * step), v, device) for i, v in enumerate(values)]


def feed(rule: WaterRule, events: list[Reading]) -> list[AlertSignal]:
    return [signal for event in events for signal in rule.on_event(event)]


@pytest.fixture
def rule() -> WaterRule:
    return WaterRule(SITE, WaterConfig())


# --------------------------------------------------------------------------- night flow


def test_night_flow_through_the_quiet_window_raises_with_the_litres_lost(rule: WaterRule) -> None:
    # Issue 16 changes this test: raised after an hour of flow inside the window (not at its
    # end), and the litres count from the leak's start (the first reading, 01:00), not the window's.
    signals = of_rule(feed(rule, flows(local("2026-03-03 01:00"), 270, 5, 1.2)), NIGHT_FLOW)  # 01:00 to 05:30
    raised = signals[0]
    assert [s.action for s in signals].count(RAISE) == 1
    assert raised.key == ("school", NIGHT_FLOW, "wm-1")
    assert raised.at == local("2026-03-03 03:00")  # 02:00 + night_flow_minutes (60)
    assert raised.severity is Severity.WARNING
    assert raised.details["min_flow_l_per_min"] == pytest.approx(1.2)
    assert raised.details["litres_lost"] == pytest.approx(144)  # 1.2 L/min x 120 min (01:00-03:00)
    assert raised.details["since"] == local("2026-03-03 01:00").isoformat()
    assert raised.details["until"] == local("2026-03-03 03:00").isoformat()
    assert raised.details["window"] == "02:00-05:00"
    assert (raised.details["building"], raised.details["room"]) == ("A", "A-WC")
    assert raised.message == (
        "Suspected leak at wm-1: water running since 01:00 without a stop (at least 1.20 L/min), "
        "about 144 L lost from 01:00 to 03:00"
    )
    [at_end] = [s for s in signals if s.at == local("2026-03-03 05:00")]
    assert at_end.action is UPDATE
    assert at_end.details["litres_lost"] == pytest.approx(288)  # 1.2 x 240 min (01:00-05:00)
    assert at_end.details["estimated_litres_lost"] == pytest.approx(288)  # the report's older key, same value
    assert at_end.details["window_litres"] == pytest.approx(216)  # 1.2 x 180 min in the window


@pytest.mark.parametrize(("value", "raised"), [(0.5, False), (0.51, True)])
def test_night_threshold_is_exact(rule: WaterRule, value: float, raised: bool) -> None:
    signals = feed(rule, flows(local("2026-03-03 01:30"), 240, 5, value))
    assert bool(of_rule(signals, NIGHT_FLOW)) is raised


def test_one_zero_reading_does_not_hide_an_hour_of_flow(rule: WaterRule) -> None:
    # Issue 16 changes this test: it pinned "one zero reading in the window is not a leak";
    # an hour of flow without a stop inside the window is a leak whatever follows.
    values = [1.0] * 49
    values[20] = 0.0  # 03:10: the flow stopped for 5 minutes, after 70 minutes of flow in the window
    signals = of_rule(feed(rule, flows(local("2026-03-03 01:30"), 240, 5, values)), NIGHT_FLOW)
    assert signals[0].action is RAISE and signals[0].at == local("2026-03-03 03:00")


def test_flow_outside_the_quiet_window_does_not_count(rule: WaterRule) -> None:
    values = [5.0] * 7 + [0.0] * 36 + [5.0] * 6  # flow until 02:00 and after 05:00 only
    assert of_rule(feed(rule, flows(local("2026-03-03 01:30"), 240, 5, values)), NIGHT_FLOW) == []


def test_clearing_needs_two_clean_windows_not_one_zero_reading(rule: WaterRule) -> None:
    # Issue 16 changes this test: an open leak updates while water runs (every 15 min), so
    # each night is checked at its window's end (05:00); the "mixed" night is now short
    # uses (25 min on, 5 min off), which is neither a leak nor clean.
    nights = ["2026-03-03", "2026-03-04", "2026-03-05", "2026-03-06"]
    leaking = [1.0] * 49
    mixed = ([1.0] * 5 + [0.0]) * 8 + [1.0]
    clean = [0.0] * 49
    seen = []
    for day, values in zip(nights, [leaking, mixed, clean, clean]):
        signals = of_rule(feed(rule, flows(local(f"{day} 01:30"), 240, 5, values)), NIGHT_FLOW)
        seen.append([s for s in signals if s.at == local(f"{day} 05:00")])
    assert [actions(s) for s in seen] == [[UPDATE], [], [UPDATE], [RESOLVE]]
    assert seen[2][0].message == "No night flow at wm-1 during 02:00-05:00: clean window 1 of 2"
    resolved = seen[3][0]
    assert resolved.at == local("2026-03-06 05:00")
    assert resolved.details["clean_windows"] == 2
    # 240 L the first night (1.0 x 240 min, 01:30-05:30); the silent day between is a gap
    # (nothing counted, the leak not known to have stopped); the second night it still runs
    # 01:30-01:55 (25 L) until its first stop; the short uses after that are not leak.
    assert resolved.details["litres_lost"] == pytest.approx(265)
    assert resolved.message == (
        "Night flow at wm-1 stopped: 2 clean quiet windows (last 02:00-05:00); "
        "about 265 L lost from 01:30 on 2026-03-03 to 05:00"
    )


def test_a_second_leaking_night_updates_the_estimate(rule: WaterRule) -> None:
    feed(rule, flows(local("2026-03-03 01:30"), 240, 5, 1.0))
    signals = of_rule(feed(rule, flows(local("2026-03-04 01:30"), 240, 5, 1.0)), NIGHT_FLOW)
    assert RAISE not in actions(signals)
    [update] = [s for s in signals if s.at == local("2026-03-04 05:00")]
    assert update.action is UPDATE
    assert update.details["nights"] == 2
    # Issue 16 changes the estimate: measured water since the leak's start, not rate x 27 h:
    # 240 min on night 1 (01:30-05:30) + 210 min on night 2 (01:30-05:00), at 1.0 L/min;
    # the day without data between is a gap and counts nothing.
    assert update.details["litres_lost"] == pytest.approx(450)


def test_a_window_with_too_little_data_is_not_judged(rule: WaterRule) -> None:
    # Issue 16 changes the data: flow to 04:00 is now an hour of flow in the window (raised);
    # flow to 02:50 is 50 min, then silence: 50 of 180 min covered, not judged.
    feed(rule, flows(local("2026-03-03 01:30"), 80, 5, 1.0))
    assert rule.on_tick(local("2026-03-03 07:00")) == []
    assert rule.stats["night_incomplete"] == 1
    assert rule.state_snapshot()["meters"]["wm-1"]["nights"] == {}


def test_a_meter_that_stops_is_judged_on_tick_once_no_data_can_come(rule: WaterRule) -> None:
    signals = of_rule(feed(rule, flows(local("2026-03-03 01:30"), 200, 5, 1.0)), NIGHT_FLOW)  # last reading 04:50
    assert (signals[0].action, signals[0].at) == (RAISE, local("2026-03-03 03:00"))  # an hour in the window
    assert rule.on_tick(local("2026-03-03 06:04:59")) == []  # 05:00 + max gap 65 min not reached
    [judged] = rule.on_tick(local("2026-03-03 06:05"))
    assert (judged.rule, judged.action, judged.at) == (NIGHT_FLOW, UPDATE, local("2026-03-03 05:00"))
    assert judged.details["window_litres"] == pytest.approx(170)  # 1.0 x 170 min known (02:00-04:50)
    assert judged.details["litres_lost"] == pytest.approx(200)  # 1.0 x 200 min (01:30-04:50)


def test_spring_forward_night_window_is_two_hours_long(rule: WaterRule) -> None:
    # 2026-03-29: 02:00 local does not exist; the window runs 03:00-05:00 CEST = 01:00-03:00 UTC.
    signals = of_rule(feed(rule, flows(utc("2026-03-29 00:00"), 240, 5, 1.0)), NIGHT_FLOW)
    assert (signals[0].action, signals[0].at) == (RAISE, utc("2026-03-29 02:00"))  # an hour into the window
    [at_end] = [s for s in signals if s.at == utc("2026-03-29 03:00")]
    assert at_end.details["window"] == "03:00+02:00-05:00+02:00"
    assert at_end.details["window_litres"] == pytest.approx(120)  # 1.0 x 120 min
    assert at_end.details["litres_lost"] == pytest.approx(180)  # 1.0 x 180 min from 00:00 UTC


def test_fall_back_night_window_is_four_hours_long(rule: WaterRule) -> None:
    # 2026-10-25: 02:00 CEST = 00:00 UTC to 05:00 CET = 04:00 UTC.
    signals = of_rule(feed(rule, flows(utc("2026-10-24 23:00"), 330, 5, 1.0)), NIGHT_FLOW)
    [at_end] = [s for s in signals if s.at == utc("2026-10-25 04:00")]
    assert at_end.details["window"] == "02:00+02:00-05:00+01:00"
    assert at_end.details["window_litres"] == pytest.approx(240)  # 1.0 x 240 min


def test_window_across_midnight() -> None:
    rule = WaterRule(SITE, WaterConfig.model_validate({"night_start": "23:00", "night_end": "01:00"}))
    signals = of_rule(feed(rule, flows(local("2026-03-03 22:30"), 180, 5, 1.0)), NIGHT_FLOW)
    assert (signals[0].action, signals[0].at) == (RAISE, local("2026-03-04 00:00"))  # 23:00 + 60 min
    [at_end] = [s for s in signals if s.at == local("2026-03-04 01:00")]
    assert at_end.details["window"] == "23:00-01:00"


# --------------------------------------------------------------------------- registers


def test_register_deltas_give_the_flow(rule: WaterRule) -> None:
    start = local("2026-03-03 01:30")
    events = [register(start + timedelta(minutes=5 * i), 1234.0 + 0.006 * i) for i in range(49)]  # 1.2 L/min
    [raised] = [s for s in of_rule(feed(rule, events), NIGHT_FLOW) if s.action is RAISE]
    assert raised.details["min_flow_l_per_min"] == pytest.approx(1.2)


def test_counter_reset_and_rollover_make_no_spike(rule: WaterRule) -> None:
    start = local("2026-03-03 01:30")
    values = [99999.9 + 0.005 * i for i in range(20)]  # 1 L/min up to 03:05 ...
    values += [0.0 + 0.005 * i for i in range(29)]  # ... then the register rolls over to zero
    events = [register(start + timedelta(minutes=5 * i), v) for i, v in enumerate(values)]
    signals = feed(rule, events)
    assert of_rule(signals, BURST) == []
    night = of_rule(signals, NIGHT_FLOW)
    assert night[0].action is RAISE and night[0].details["min_flow_l_per_min"] == pytest.approx(1.0)
    [at_end] = [s for s in night if s.at == local("2026-03-03 05:00")]
    assert at_end.details["window_litres"] == pytest.approx(175)  # one unknown 5-minute span: 175 of 180 min
    assert at_end.details["litres_lost"] == pytest.approx(205)  # 1.0 x (95 + 110) min known; the rollover span adds 0
    assert rule.stats["resets"] == 1


def test_plain_volume_readings_are_litres_since_the_previous_one(rule: WaterRule) -> None:
    start = local("2026-03-03 01:30")
    events = [reading("wm-1", start + timedelta(minutes=5 * i), Quantity.VOLUME, 6.0, "L") for i in range(49)]
    [raised] = [s for s in of_rule(feed(rule, events), NIGHT_FLOW) if s.action is RAISE]
    assert raised.details["min_flow_l_per_min"] == pytest.approx(1.2)


def test_units_are_converted_and_unknown_ones_ignored(rule: WaterRule) -> None:
    start = local("2026-03-03 10:00")
    signals = feed(rule, [flow(start + timedelta(minutes=m), 1.5, unit="L/s") for m in range(7)])  # 90 L/min
    [raised] = of_rule(signals, BURST)
    assert raised.details["peak_l_per_min"] == pytest.approx(90)
    assert rule.on_event(flow(start, 3, device="wm-9", unit="gal/min")) == []
    assert rule.stats["unsupported_unit"] == 1


# --------------------------------------------------------------------------- continuous flow


def test_no_zero_hour_in_24_hours_is_continuous_flow(rule: WaterRule) -> None:
    start = local("2026-03-03 08:00")
    events = [register(start + timedelta(hours=h), 10.0 + 0.06 * h) for h in range(26)]  # hourly, 60 L/h
    signals = of_rule(feed(rule, events[:24]), CONTINUOUS_FLOW)
    assert signals == []  # 23 hours of flow so far
    [raised] = of_rule(feed(rule, events[24:25]), CONTINUOUS_FLOW)
    assert (raised.action, raised.at) == (RAISE, local("2026-03-04 08:00"))
    assert raised.details["hours"] == 24
    assert raised.details["litres"] == pytest.approx(1440)
    assert raised.details["since"] == start.isoformat()


def test_continuous_flow_clears_only_after_a_whole_quiet_hour(rule: WaterRule) -> None:
    start = local("2026-03-03 08:00")
    signals = of_rule(feed(rule, [flow(start + timedelta(minutes=10 * i), 2.0) for i in range(146)]), CONTINUOUS_FLOW)
    assert actions(signals) == [RAISE]  # at 08:00 next day; the 08:10 reading is within 15 min: no update
    [update] = of_rule(rule.on_event(flow(local("2026-03-04 08:20"), 2.0)), CONTINUOUS_FLOW)
    assert update.action is UPDATE and update.details["hours"] == 24.33
    quiet = [flow(local("2026-03-04 08:30") + timedelta(minutes=10 * i), 0.0) for i in range(7)]
    signals = of_rule(feed(rule, quiet[:6]), CONTINUOUS_FLOW)  # 08:30-09:20: the 08:30 interval still flowed
    assert RESOLVE not in actions(signals)
    [resolved] = of_rule(feed(rule, quiet[6:]), CONTINUOUS_FLOW)  # 09:30: an hour with no flow
    assert (resolved.action, resolved.at) == (RESOLVE, local("2026-03-04 09:30"))


def test_a_gap_restarts_the_continuous_count(rule: WaterRule) -> None:
    start = local("2026-03-03 08:00")
    events = [flow(start + timedelta(minutes=10 * i), 2.0) for i in range(80)]
    events += [flow(start + timedelta(hours=16, minutes=10 * i), 2.0) for i in range(60)]  # after a 2 h 50 min gap
    assert of_rule(feed(rule, events), CONTINUOUS_FLOW) == []
    assert rule.stats["gaps"] == 1


# --------------------------------------------------------------------------- burst


def test_burst_raises_after_the_set_minutes_and_clears_after_as_many_below(rule: WaterRule) -> None:
    start = local("2026-03-03 10:00")
    minutes = [flow(start + timedelta(minutes=m), 80.0) for m in range(31)] + [
        flow(start + timedelta(minutes=m), 0.0) for m in range(31, 37)
    ]
    signals = of_rule(feed(rule, minutes[:5]), BURST)
    assert signals == []  # 10:00-10:04: four minutes above
    [raised] = of_rule(feed(rule, minutes[5:6]), BURST)
    assert (raised.action, raised.at, raised.severity) == (RAISE, local("2026-03-03 10:05"), Severity.CRITICAL)
    assert raised.details["litres"] == pytest.approx(400)
    rest = of_rule(feed(rule, minutes[6:]), BURST)
    assert actions(rest) == [UPDATE, RESOLVE]  # one update per 15 minutes, then 5 minutes below
    assert rest[0].at == local("2026-03-03 10:20")
    assert rest[1].at == local("2026-03-03 10:36")  # below from 10:31 (the 10:30 reading held to 10:31)
    assert rest[1].details["litres"] == pytest.approx(80 * 31)


def test_burst_limit_can_be_set_per_meter() -> None:
    config = WaterConfig.model_validate({"overrides": {"wm-1": {"burst_l_per_min": 100}}})
    rule = WaterRule(SITE, config)
    start = local("2026-03-03 10:00")
    assert of_rule(feed(rule, [flow(start + timedelta(minutes=m), 80.0) for m in range(20)]), BURST) == []
    other = of_rule(feed(rule, [flow(start + timedelta(minutes=m), 80.0, device="wm-2") for m in range(20)]), BURST)
    assert actions(other)[:1] == [RAISE]


# --------------------------------------------------------------------------- wet sensors


def test_wet_sensor_is_critical_at_once_and_resolves_when_dry() -> None:
    rule = WaterRule(SITE, WaterConfig(), lateness=timedelta(minutes=5))  # wet does not wait
    [raised] = rule.on_event(wet(local("2026-03-03 03:12"), 1))
    assert (raised.rule, raised.action, raised.severity, raised.subject) == (WET, RAISE, Severity.CRITICAL, "wet-1")
    assert rule.on_event(wet(local("2026-03-03 03:13"), 1)) == []  # repeats update at most every 15 min
    [update] = rule.on_event(wet(local("2026-03-03 03:27"), 1))
    assert update.action is UPDATE and update.details["readings"] == 3
    assert rule.on_event(wet(local("2026-03-03 03:20"), 0)) == []  # older than the last: ignored
    assert rule.on_event(wet(local("2026-03-03 03:40"), 0)) == []  # dry: resolved once it stays so 10 min
    assert rule.on_tick(local("2026-03-03 03:49:59")) == []
    [resolved] = rule.on_tick(local("2026-03-03 03:50"))
    assert (resolved.action, resolved.at) == (RESOLVE, local("2026-03-03 03:40"))
    assert resolved.message == "Wet sensor wet-1 dry again at 03:40 after 28 min"


def test_only_the_configured_meters_are_watched() -> None:
    rule = WaterRule(SITE, WaterConfig(meters=["wm-1"]))
    assert rule.on_event(wet(local("2026-03-03 03:12"), 1)) == []
    assert feed(rule, flows(local("2026-03-03 10:00"), 10, 1, 90.0, device="wm-2")) == []


# --------------------------------------------------------------------------- order, restart, engine


def test_late_readings_are_reordered_within_the_lateness() -> None:
    rule = WaterRule(SITE, WaterConfig(), lateness=timedelta(minutes=10))
    start = local("2026-03-03 10:00")
    events = [flow(start + timedelta(minutes=m), 80.0) for m in range(12)]
    shuffled = [e for pair in zip(events[1::2], events[0::2]) for e in pair]  # 10:01, 10:00, 10:03, 10:02 ...
    assert feed(rule, shuffled) == []  # nothing before the lateness has passed
    [raised] = rule.on_tick(start + timedelta(minutes=30))
    assert (raised.action, raised.at) == (RAISE, local("2026-03-03 10:05"))
    assert rule.stats["too_late"] == 0
    assert rule.on_event(flow(start + timedelta(minutes=3), 0.0)) == []
    assert rule.stats["too_late"] == 1


def test_snapshot_restore_continues_the_burst_timer_and_pending_readings() -> None:
    rule = WaterRule(SITE, WaterConfig(), lateness=timedelta(minutes=2))
    start = local("2026-03-03 10:00")
    feed(rule, [flow(start + timedelta(minutes=m), 80.0) for m in range(5)])  # 10:00-10:02 used, 10:03-10:04 pending
    snapshot = json.loads(json.dumps(rule.state_snapshot()))
    assert len(snapshot["pending"]["wm-1"]) == 2

    restored = WaterRule(SITE, WaterConfig(), lateness=timedelta(minutes=2))
    restored.restore(snapshot)
    [raised] = feed(restored, [flow(start + timedelta(minutes=m), 80.0) for m in range(5, 8)])
    assert (raised.action, raised.at) == (RAISE, local("2026-03-03 10:05"))


def test_snapshot_restore_mid_night_keeps_the_window() -> None:
    rule = WaterRule(SITE, WaterConfig())
    events = flows(local("2026-03-03 01:30"), 240, 5, 1.0)
    feed(rule, events[:25])  # to 03:30
    restored = WaterRule(SITE, WaterConfig())
    restored.restore(json.loads(json.dumps(rule.state_snapshot())))
    signals = of_rule(feed(restored, events[25:]), NIGHT_FLOW)
    assert signals == of_rule(feed(rule, events[25:]), NIGHT_FLOW)
    [at_end] = [s for s in signals if s.at == local("2026-03-03 05:00")]
    assert at_end.details["litres_lost"] == pytest.approx(210)  # 1.0 x 210 min (01:30-05:00)


def test_a_version_1_snapshot_starts_empty_and_is_counted() -> None:
    rule = WaterRule(SITE, WaterConfig())
    rule.restore({"version": 1, "meters": {"wm-1": {}}, "pending": {}, "wet": {}})
    assert rule.stats["snapshot_discarded"] == 1
    assert rule.state_snapshot()["meters"] == {}


def test_restore_refuses_an_unknown_version(rule: WaterRule) -> None:
    with pytest.raises(ValueError, match="version"):
        rule.restore({"version": 99})


def test_engine_builds_water_and_can_disable_it() -> None:
    engine = RuleEngine(SITE, RulesConfig.model_validate({"allowed_lateness_seconds": 0, "water": {"burst_minutes": 2}}))
    start = local("2026-03-03 10:00")
    signals = [s for m in range(3) for s in engine.on_event(flow(start + timedelta(minutes=m), 80.0))]
    assert [(s.rule, s.action) for s in signals] == [(BURST, RAISE)]
    disabled = RuleEngine(SITE, RulesConfig.model_validate({"water": {"enabled": False}}))
    assert "water" not in [rule.name for rule in disabled.rules]


# --------------------------------------------------------------------------- arrival order


_night_profile = st.one_of(
    st.lists(st.sampled_from([0.0, 0.3, 1.0, 1.0, 1.0, 75.0]), min_size=40, max_size=80),
    st.lists(st.sampled_from([1.0, 2.0, 75.0]), min_size=40, max_size=80),  # leaking all night
)


@settings(max_examples=40, deadline=None)
@given(
    profiles=st.tuples(_night_profile, _night_profile),
    registers=st.booleans(),
    resets=st.lists(st.integers(min_value=1, max_value=79), max_size=2),
    lateness_minutes=st.integers(min_value=1, max_value=20),
    tick_minutes=st.sampled_from([None, 1, 7]),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_any_arrival_order_within_the_lateness_gives_the_same_alerts(
    profiles: tuple[list[float], list[float]],
    registers: bool,
    resets: list[int],
    lateness_minutes: int,
    tick_minutes: int | None,
    seed: int,
) -> None:
    """Two meters, five-minute readings from 01:00 local: the same alerts in any order."""
    start, lateness = local("2026-03-03 01:00"), timedelta(minutes=lateness_minutes)
    events: list[Reading] = []
    for device, profile in zip(("wm-1", "wm-2"), profiles):
        total = 0.0
        for i, value in enumerate(profile):
            at = start + timedelta(minutes=5 * i)
            if registers:
                total = 0.0 if i in resets else total + value * 5 / 1000
                events.append(register(at, total, device))
            else:
                events.append(flow(at, value, device))
    events.sort(key=lambda e: e.event_time)
    end = start + timedelta(days=1)
    tick = timedelta(minutes=tick_minutes) if tick_minutes else None

    def run(arrivals: list[tuple[datetime, Reading]], tick_every: timedelta | None) -> tuple[object, ...]:
        rule = WaterRule(SITE, WaterConfig(burst_minutes=10), lateness=lateness)
        return replay(rule.on_event, rule.on_tick, arrivals, lateness, tick_every, end).summary()

    in_order = run([(e.event_time, e) for e in events], None)
    assert run(arrival_order(events, lateness, seed), tick) == in_order
