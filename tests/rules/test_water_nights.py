"""Classes of night for the water rule (issue 16): a leak that starts at any time inside the
quiet window is raised by the window's end, its litres counted from its start; genuine
uses never page. Every expected value is hand arithmetic from the scenario, in comments.

Defaults: quiet window 02:00-05:00 Europe/Berlin, no-flow limit 0.5 L/min, an early raise
after 60 min of flow inside the window, a leak at the window's end after 30 min of flow.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from rules.alerts import AlertSignal, SignalAction
from rules.water import BURST, CONTINUOUS_FLOW, NIGHT_FLOW, WaterConfig, WaterRule
from tests.rules.helpers import arrival_order, local, of_rule, replay, utc
from tests.rules.test_water import SITE, feed, flow, register
from warden.events import Reading

RAISE, UPDATE, RESOLVE = SignalAction.RAISE, SignalAction.UPDATE, SignalAction.RESOLVE
STEP = timedelta(minutes=5)


def night(start: datetime, end: datetime, leak_from: datetime | None, rate: float = 1.5) -> list[Reading]:
    """Flow readings every 5 minutes from `start` to `end` inclusive: 0 before `leak_from`, `rate` from it."""
    out, at = [], start
    while at <= end:
        out.append(flow(at, rate if leak_from is not None and at >= leak_from else 0.0))
        at += STEP
    return out


def registers(start: datetime, end: datetime, leak_from: datetime, rate: float = 1.5, m3: float = 1234.0) -> list[Reading]:
    """A register in m3 every 5 minutes, counting `rate` L/min from `leak_from`."""
    out, at, total = [], start, m3
    while at <= end:
        out.append(register(at, total))
        if at >= leak_from:
            total += rate * 5 / 1000
        at += STEP
    return out


def raises(signals: list[AlertSignal]) -> list[AlertSignal]:
    return [s for s in of_rule(signals, NIGHT_FLOW) if s.action is RAISE]


def at(signals: list[AlertSignal], when: datetime) -> AlertSignal:
    [found] = [s for s in of_rule(signals, NIGHT_FLOW) if s.at == when]
    return found


@pytest.fixture
def rule() -> WaterRule:
    return WaterRule(SITE, WaterConfig())


# --------------------------------------------------------------------------- leak start times


def test_leak_from_0205_is_raised_after_an_hour(rule: WaterRule) -> None:
    signals = feed(rule, night(local("2026-03-03 00:00"), local("2026-03-03 05:30"), local("2026-03-03 02:05")))
    [raised] = raises(signals)
    assert raised.at == local("2026-03-03 03:05")  # 02:05 + 60 min
    assert raised.details["litres_lost"] == pytest.approx(90)  # 1.5 x 60 min
    assert raised.details["since"] == local("2026-03-03 02:05").isoformat()
    assert at(signals, local("2026-03-03 05:00")).details["litres_lost"] == pytest.approx(262.5)  # 1.5 x 175 min


def test_leak_from_0240_is_raised_in_the_window_and_counted_until_morning(rule: WaterRule) -> None:
    """The issue's night: 1.5 L/min from 02:40, missed before; about 210 L by 05:00, 480 L by 08:00."""
    signals = feed(rule, night(local("2026-03-03 00:00"), local("2026-03-03 08:00"), local("2026-03-03 02:40")))
    [raised] = raises(signals)
    assert raised.at == local("2026-03-03 03:40")  # 02:40 + 60 min
    assert raised.details["litres_lost"] == pytest.approx(90)  # 1.5 x 60 min
    end = at(signals, local("2026-03-03 05:00"))
    assert (end.action, end.details["litres_lost"]) == (UPDATE, pytest.approx(210))  # 1.5 x 140 min
    last = of_rule(signals, NIGHT_FLOW)[-1]
    assert last.at == local("2026-03-03 08:00")
    assert last.details["litres_lost"] == pytest.approx(480)  # 1.5 x 320 min (02:40-08:00)
    assert last.details["until"] == local("2026-03-03 08:00").isoformat()
    assert last.message == (
        "Suspected leak at wm-1: water running since 02:40 without a stop (at least 1.50 L/min), "
        "about 480 L lost from 02:40 to 08:00"
    )
    # While it runs, an update at most every update_minutes (15), besides the window's own at 05:00.
    updates = [s.at for s in of_rule(signals, NIGHT_FLOW) if s.action is UPDATE and s.at != local("2026-03-03 05:00")]
    assert all(b - a >= timedelta(minutes=15) for a, b in zip(updates, updates[1:]))
    assert len(updates) == 17  # 03:55-04:55 every 15 min (5), then 05:15-08:00 (12), 15 min after 05:00


def test_leak_from_0400_is_raised_at_the_window_end_once(rule: WaterRule) -> None:
    signals = feed(rule, night(local("2026-03-03 00:00"), local("2026-03-03 05:30"), local("2026-03-03 04:00")))
    at_end = [s for s in of_rule(signals, NIGHT_FLOW) if s.at == local("2026-03-03 05:00")]
    assert [s.action for s in at_end] == [RAISE]  # 60 min reached at 05:00: one raise, no second word
    assert at_end[0].details["litres_lost"] == pytest.approx(90)  # 1.5 x 60 min


def test_leak_from_0410_is_raised_by_the_window_tail(rule: WaterRule) -> None:
    signals = feed(rule, night(local("2026-03-03 00:00"), local("2026-03-03 05:30"), local("2026-03-03 04:10")))
    [raised] = raises(signals)
    assert raised.at == local("2026-03-03 05:00")  # 50 min to the window's end >= 30 min
    assert raised.details["litres_lost"] == pytest.approx(75)  # 1.5 x 50 min


def test_leak_from_0450_waits_for_the_next_window(rule: WaterRule) -> None:
    leak_from = local("2026-03-03 04:50")
    first = feed(rule, night(local("2026-03-03 00:00"), local("2026-03-03 05:30"), leak_from))
    assert of_rule(first, NIGHT_FLOW) == []  # 10 min to the window's end: under 30 min
    rest = feed(rule, night(local("2026-03-03 05:35"), local("2026-03-04 03:00"), leak_from))
    [raised] = raises(rest)
    assert raised.at == local("2026-03-04 03:00")  # an hour into the next window
    assert raised.details["since"] == leak_from.isoformat()
    # 04:50 to 03:00 next day is 22 h 10 min = 1330 min; x 1.5 L/min
    assert raised.details["litres_lost"] == pytest.approx(1995)
    assert "since 04:50 on 2026-03-03" in raised.message
    assert of_rule(rest, CONTINUOUS_FLOW) == []  # 22 h 10 min < 24 h


# --------------------------------------------------------------------------- genuine use


def test_a_cleaner_and_a_late_flush_do_not_page(rule: WaterRule) -> None:
    values = {local("2026-03-03 02:10"): 8.0, local("2026-03-03 04:55"): 6.0}  # 5 minutes each
    events = [flow(local("2026-03-03 00:00") + STEP * i, values.get(local("2026-03-03 00:00") + STEP * i, 0.0))
              for i in range(67)]  # 00:00-05:30
    assert feed(rule, events) == []


def test_periodic_short_uses_all_night_do_not_page(rule: WaterRule) -> None:
    # 20 minutes on (2 L/min), 10 off, from 00:00 to 08:00: every run is under 30 min and stops.
    events = [flow(local("2026-03-03 00:00") + STEP * i, 2.0 if i % 6 < 4 else 0.0) for i in range(97)]
    assert feed(rule, events) == []


def test_a_drip_on_a_sensitive_meter() -> None:
    config = WaterConfig.model_validate({"overrides": {"wm-1": {"min_flow_l_per_min": 0.03}}})
    sensitive, plain = WaterRule(SITE, config), WaterRule(SITE, WaterConfig())
    events = night(local("2026-03-03 00:00"), local("2026-03-03 05:30"), local("2026-03-03 02:05"), rate=0.12)
    [raised] = raises(feed(sensitive, events))
    assert raised.at == local("2026-03-03 03:05")
    assert raised.details["min_flow_l_per_min"] == pytest.approx(0.12)
    assert raised.details["litres_lost"] == pytest.approx(7.2)  # 0.12 x 60 min
    assert feed(plain, events) == []  # 0.12 is at or below 0.5: no flow for a coarse meter


# --------------------------------------------------------------------------- coverage


def test_a_meter_silent_inside_the_window(rule: WaterRule) -> None:
    # Leaking 1.5 L/min from 01:00; silent 02:30-03:40 (70 min > max gap 65: unknown).
    before = night(local("2026-03-03 01:00"), local("2026-03-03 02:30"), local("2026-03-03 01:00"))
    after = night(local("2026-03-03 03:40"), local("2026-03-03 05:30"), local("2026-03-03 01:00"))
    signals = feed(rule, before + after)
    [raised] = raises(signals)
    # 02:00-02:30 is 30 min; from 02:00 the known share to 04:10 (60 of 130 min) is under 80 %;
    # from 03:40, 60 known minutes at 04:40.
    assert raised.at == local("2026-03-03 04:40")
    assert raised.details["since"] == local("2026-03-03 03:40").isoformat()  # silence: unknown before
    assert raised.details["litres_lost"] == pytest.approx(90)  # 1.5 x 60 min
    assert rule.stats["gaps"] == 1


# --------------------------------------------------------------------------- daylight saving


def test_leak_from_the_second_0230_on_the_fall_back_night(rule: WaterRule) -> None:
    # 2026-10-25: window 02:00 CEST (00:00 UTC) to 05:00 CET (04:00 UTC); second 02:30 = 01:30 UTC.
    signals = feed(rule, night(utc("2026-10-24 22:00"), utc("2026-10-25 04:30"), utc("2026-10-25 01:30")))
    [raised] = raises(signals)
    assert raised.at == utc("2026-10-25 02:30")  # 01:30 UTC + 60 min
    assert "since 02:30+01:00 " in raised.message  # the offset says which 02:30
    end = at(signals, utc("2026-10-25 04:00"))
    assert end.details["litres_lost"] == pytest.approx(225)  # 1.5 x 150 min (01:30-04:00 UTC)
    assert end.details["window"] == "02:00+02:00-05:00+01:00"


def test_leak_on_the_spring_forward_night(rule: WaterRule) -> None:
    # 2026-03-29: window 03:00 CEST (01:00 UTC) to 05:00 CEST (03:00 UTC); leak from 03:30 CEST = 01:30 UTC.
    signals = feed(rule, night(utc("2026-03-28 23:00"), utc("2026-03-29 03:30"), utc("2026-03-29 01:30")))
    [raised] = raises(signals)
    assert raised.at == utc("2026-03-29 02:30")
    assert "since 03:30+02:00 " in raised.message
    assert at(signals, utc("2026-03-29 03:00")).details["litres_lost"] == pytest.approx(135)  # 1.5 x 90 min


# --------------------------------------------------------------------------- registers


def test_a_register_only_meter(rule: WaterRule) -> None:
    events = registers(local("2026-03-03 00:00"), local("2026-03-03 05:30"), local("2026-03-03 02:40"))
    signals = feed(rule, events)
    [raised] = raises(signals)
    assert raised.at == local("2026-03-03 03:40")
    assert raised.details["litres_lost"] == pytest.approx(90)  # 1.5 x 60 min
    assert at(signals, local("2026-03-03 05:00")).details["litres_lost"] == pytest.approx(210)  # 1.5 x 140


def test_a_meter_replaced_mid_night_continues_the_leak(rule: WaterRule) -> None:
    old = registers(local("2026-03-03 00:00"), local("2026-03-03 03:30"), local("2026-03-03 02:40"))
    # New meter fitted at 03:33, register from 0: 3 L by 03:35 (1.5 x 2 min), then 7.5 L per 5 min.
    new = registers(local("2026-03-03 03:35"), local("2026-03-03 05:30"), local("2026-03-03 03:35"), m3=0.003)
    signals = feed(rule, old + new)
    assert of_rule(signals, BURST) == []
    [raised] = raises(signals)
    # Known flow 02:40-03:30 (50 min) and from 03:35: 60 known minutes at 03:45, 60 of 65 >= 80 %.
    assert raised.at == local("2026-03-03 03:45")
    assert raised.details["since"] == local("2026-03-03 02:40").isoformat()
    assert raised.details["litres_lost"] == pytest.approx(93)  # 1.5 x 60 known min + 3 L on the new register
    end = at(signals, local("2026-03-03 05:00"))
    assert end.details["litres_lost"] == pytest.approx(205.5)  # 1.5 x (50 + 85) min + 3 L
    assert rule.stats["resets"] == 1
    stretch = rule.state_snapshot()["meters"]["wm-1"]["stretch"]
    assert stretch["since"] == local("2026-03-03 02:40").isoformat()  # continuous count not restarted


def test_continuous_flow_litres_are_the_leak_not_the_day_use(rule: WaterRule) -> None:
    # Hourly register; a 1.5 L/min leak from 08:00 (90 L/h) and 300 L/h of use 09:00-18:00 (9 h).
    start, total, events = local("2026-03-03 08:00"), 500.0, []
    for hour in range(25):
        events.append(register(start + timedelta(hours=hour), total))
        used = 90 + (300 if 1 <= hour <= 9 else 0)  # litres in the hour starting at 08:00 + hour
        total += used / 1000
    [raised] = of_rule(feed(rule, events), CONTINUOUS_FLOW)
    assert raised.at == local("2026-03-04 08:00")
    assert raised.details["litres"] == pytest.approx(2160)  # 1.5 x 1440 min: the leak only
    assert raised.details["litres_lost"] == pytest.approx(2160)
    assert raised.details["measured_litres"] == pytest.approx(4860)  # 24 x 90 + 9 x 300
    assert "about 2160 L above normal from 08:00 on 2026-03-03 to 08:00" in raised.message


# --------------------------------------------------------------------------- arrival order


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_0240_night_gives_the_same_alerts_in_any_order_within_the_lateness(seed: int) -> None:
    lateness = timedelta(minutes=10)
    events = night(local("2026-03-03 00:00"), local("2026-03-03 08:00"), local("2026-03-03 02:40"))
    events += [flow(e.event_time, e.value, device="wm-2") for e in events[::2]]  # a second meter, 10-min steps
    events.sort(key=lambda e: e.event_time)
    end = local("2026-03-03 10:00")

    def run(arrivals: list[tuple[datetime, Reading]], tick: timedelta | None) -> tuple[object, ...]:
        rule = WaterRule(SITE, WaterConfig(), lateness=lateness)
        return replay(rule.on_event, rule.on_tick, arrivals, lateness, tick, end).summary()

    in_order = run([(e.event_time, e) for e in events], None)
    assert run(arrival_order(events, lateness, seed), timedelta(minutes=3)) == in_order


def test_a_repaired_leak_stops_counting_and_clears_after_two_clean_nights(rule: WaterRule) -> None:
    # 1.5 L/min from 02:40 on 3 March, repaired at 09:00; washroom use 5 L/min 10:00-12:00 each day.
    start, events = local("2026-03-03 00:00"), []
    for i in range(12 * 24 * 3 + 1):  # every 5 minutes to 00:00 on 6 March
        when = start + STEP * i
        hour = when.astimezone(SITE.zone).hour
        leaking = local("2026-03-03 02:40") <= when < local("2026-03-03 09:00")
        events.append(flow(when, 1.5 if leaking else 5.0 if 10 <= hour < 12 else 0.0))
    signals = of_rule(feed(rule, events), NIGHT_FLOW)
    assert [s.action for s in signals].count(RAISE) == 1
    resolved = signals[-1]
    assert (resolved.action, resolved.at) == (RESOLVE, local("2026-03-05 05:00"))  # clean nights of the 4th and 5th
    assert resolved.details["litres_lost"] == pytest.approx(570)  # 1.5 x 380 min (02:40-09:00); the use is not lost
