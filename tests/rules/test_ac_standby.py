"""An AC at its standby limit must not page: a meter is on only with hysteresis (above
standby + hysteresis_watts, off at or below standby) and a page needs min_kwh of waste.

The night that started it: an AC in standby reading 58 W / 63 W alternately around the
60 W limit paged "0.02 kWh wasted (0.00 EUR)". Every expected number below is worked out
by hand from the night's facts (the arithmetic is in the comments), never from the rule.
Defaults: standby 60 W, hysteresis 20 W (on above 80 W), min 0.1 kWh, grace 15 min summed,
min duty 25 % over 60 min, off 60 min ends the stretch; school-day is mon-fri 07:30-18:00.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from pydantic import ValidationError

from rules.ac_after_hours import AcAfterHoursConfig, AcAfterHoursRule
from rules.alerts import AlertSignal, SignalAction
from tests.rules.helpers import actions, local
from tests.rules.test_after_hours_stretches import SITE, feed

RAISE, UPDATE, RESOLVE = SignalAction.RAISE, SignalAction.UPDATE, SignalAction.RESOLVE

#: Tuesday 3 March 2026: school ends 18:00 and starts again 07:30 on Wednesday.
EVENING = local("2026-03-03 18:00")
MORNING = local("2026-03-04 07:30")
NIGHT_MINUTES = 810  # 18:00-07:30 is 13.5 h


def flicker(first: int, last: int) -> list[tuple[float, float]]:
    """A unit at standby read every minute from `first` to `last` (excluded): 58 W on even
    minutes, 63 W on odd ones, across the 60 W limit and back."""
    return [(m, 58.0 if m % 2 == 0 else 63.0) for m in range(first, last)]


def night(rule: AcAfterHoursRule, profile: list[tuple[float, float]]) -> list[AlertSignal]:
    """Feed readings from 18:00 (minutes, watts), ticking every minute, up to the morning."""
    signals = feed(rule, "ac-204", EVENING, profile)
    at: datetime = EVENING
    while at <= MORNING:
        signals += rule.on_tick(at)
        at += timedelta(minutes=1)
    return signals


@pytest.fixture
def rule() -> AcAfterHoursRule:
    return AcAfterHoursRule(SITE, AcAfterHoursConfig())


def test_standby_flickering_58_63_watts_all_night_pages_nothing(rule: AcAfterHoursRule) -> None:
    # 63 W is never above 60 + 20 = 80 W: the meter never turns on, so no stretch opens.
    # (Before: every 63 W minute counted as on, 15 of them by 18:30 at 50 % duty: a page.)
    assert night(rule, flicker(0, NIGHT_MINUTES)) == []


def test_thirty_minutes_at_1200_watts_between_flickers_pages_its_kwh(rule: AcAfterHoursRule) -> None:
    # Standby flicker 18:00-19:00, the unit run at 1.2 kW 19:00-19:30, flicker again after.
    # First reading at 19:30 is 58 W: off at once. On 30 min x 1.2 kW = 0.6 kWh.
    profile = [*flicker(0, 60), *[(m, 1200.0) for m in range(60, 90)], *flicker(90, NIGHT_MINUTES)]
    signals = night(rule, profile)
    # One alert: updates every 5 min while its stretch lasts (19:20 ... 20:25), nothing after.
    assert [a for a in actions(signals) if a is not UPDATE] == [RAISE, RESOLVE]
    assert signals[-1].action is RESOLVE
    raised, resolved = signals[0], signals[-1]
    # Raised at 19:15: 15 min on (the grace) x 1.2 kW = 0.3 kWh >= 0.1 kWh, duty 100 %.
    assert raised.at == local("2026-03-03 19:15")
    assert raised.details["wasted_kwh"] == pytest.approx(0.3)
    assert raised.details["since"] == local("2026-03-03 19:00").isoformat()
    # Off since 19:30, resolved 60 min later at 20:30 with the 0.6 kWh; the flicker adds nothing.
    assert resolved.at == local("2026-03-03 20:30")
    assert resolved.details["reason"] == "power_off"
    assert resolved.details["wasted_kwh"] == pytest.approx(0.6)
    assert resolved.details["cost"] == pytest.approx(0.18)  # 0.6 kWh x 0.30 EUR
    assert resolved.details["on_minutes"] == pytest.approx(30)
    assert resolved.details["until"] == local("2026-03-03 19:30").isoformat()


def test_thermostat_10_on_20_off_pages_the_sum_of_its_on_periods(rule: AcAfterHoursRule) -> None:
    # From 18:30 the compressor runs 10 min at 1.2 kW, then 20 min at standby flicker
    # (58 W first, so it is off from the first off minute), until the schedule at 07:30.
    # 18:30-07:30 is 780 min = 26 cycles of 30 min, 10 min on each: 260 min on,
    # 260/60 h x 1.2 kW = 5.2 kWh. The off phases (58/63 W) add nothing.
    profile = [*flicker(0, 30)]
    for m in range(30, NIGHT_MINUTES):
        phase = (m - 30) % 30
        profile.append((m, 1200.0 if phase < 10 else (58.0 if phase % 2 == 0 else 63.0)))
    signals = night(rule, profile)
    raises = [s for s in signals if s.action is RAISE]
    [resolved] = [s for s in signals if s.action is RESOLVE]
    # One alert for the night. Raised at 19:05: on 18:30-18:40 and 19:00-19:05 = 15 min,
    # 0.3 kWh; duty since 18:30 is 15 of 35 min = 43 % >= 25 %.
    assert len(raises) == 1
    assert raises[0].at == local("2026-03-03 19:05")
    assert raises[0].details["wasted_kwh"] == pytest.approx(0.3)
    assert resolved.details["reason"] == "schedule_started"
    assert resolved.at == MORNING
    assert resolved.details["wasted_kwh"] == pytest.approx(5.2)
    assert resolved.details["cost"] == pytest.approx(1.56)  # 5.2 kWh x 0.30 EUR
    assert resolved.details["on_minutes"] == pytest.approx(260)


def test_rising_from_standby_to_a_steady_61_to_65_watts_is_not_on(rule: AcAfterHoursRule) -> None:
    # Decision: 61-65 W is inside the hysteresis band (60-80 W). Coming from standby it cannot
    # be told from a standby drifting above its limit (the flickering unit reads 63 W half its
    # minutes), so the meter never turns on: no page. (Before: on all night, a page.)
    profile = [(m, 5.0) for m in range(0, 60)] + [(m, 61.0 + (m % 5)) for m in range(60, NIGHT_MINUTES)]
    assert night(rule, profile) == []


def test_a_fan_left_running_after_the_compressor_stays_on(rule: AcAfterHoursRule) -> None:
    # Decision, the other side of the band: run at 1.2 kW 19:00-19:30, then 61-65 W steadily
    # (the fan left running) until the schedule. The meter was on and never read 60 W or
    # less, so it stays on: the unit was never seen off, and fault-detection practice flags
    # a fan left on. Energy: 30 min x 1.2 kW = 0.6 kWh, plus 19:30-07:30 = 720 readings of
    # 61, 62, 63, 64, 65 W (144 rounds of 315 W-min) = 45360 W-min = 0.756 kWh: 1.356 kWh.
    profile = [(m, 5.0) for m in range(0, 60)] + [(m, 1200.0) for m in range(60, 90)]
    profile += [(m, 61.0 + (m - 90) % 5) for m in range(90, NIGHT_MINUTES)]
    signals = night(rule, profile)
    assert signals[0].action is RAISE and signals[0].at == local("2026-03-03 19:15")
    resolved = signals[-1]
    assert resolved.action is RESOLVE and resolved.details["reason"] == "schedule_started"
    assert resolved.details["wasted_kwh"] == pytest.approx(1.356)
    assert resolved.details["on_minutes"] == pytest.approx(750)  # 19:00-07:30


def test_a_small_load_pages_only_once_it_has_wasted_min_kwh(rule: AcAfterHoursRule) -> None:
    # 100 W (truly on: above 80 W) from 19:00: the grace is reached at 19:15 with only
    # 0.025 kWh; 0.1 kWh takes 0.1 / 0.1 kW = 1 h, so the page comes at 20:00.
    profile = [(m, 100.0) for m in range(60, 121)]
    signals = feed(rule, "ac-204", EVENING, profile)
    assert signals[0].action is RAISE
    assert signals[0].at == local("2026-03-03 20:00")
    assert signals[0].details["wasted_kwh"] == pytest.approx(0.1)


def test_min_kwh_zero_and_no_hysteresis_give_the_former_judgement() -> None:
    # The old rule, configured back: on above 60 W, no minimum. The flicker's 63 W minutes
    # 18:01, 18:03, ... 18:29 are 15 min on by 18:30 (duty 15 of the 29 min since 18:01); energy
    # 15 min x 63 W = 0.01575 kWh (the "0.02 kWh wasted (0.00 EUR)" page).
    rule = AcAfterHoursRule(SITE, AcAfterHoursConfig(hysteresis_watts=0, min_kwh=0))
    signals = feed(rule, "ac-204", EVENING, flicker(0, 31))
    assert actions(signals) == [RAISE]
    assert signals[0].at == local("2026-03-03 18:30")
    assert signals[0].details["wasted_kwh"] == pytest.approx(0.01575)


def test_a_meter_held_on_in_the_band_stays_on_across_a_restart(rule: AcAfterHoursRule) -> None:
    # 1.2 kW 19:00-19:20, then 63 W (held on); restart at 19:25; 63 W until 19:30, then 0 W.
    # Energy: 20 min x 1.2 kW = 0.4 kWh + 10 min x 63 W = 0.0105 kWh = 0.4105 kWh, 30 min on.
    feed(rule, "ac-204", EVENING, [(m, 1200.0) for m in range(60, 80)] + [(m, 63.0) for m in range(80, 86)])
    restored = AcAfterHoursRule(SITE, AcAfterHoursConfig())
    restored.restore(json.loads(json.dumps(rule.state_snapshot())))
    feed(restored, "ac-204", EVENING, [(m, 63.0) for m in range(86, 90)] + [(90, 0.0)])
    [resolved] = restored.on_tick(local("2026-03-03 20:30"))
    assert resolved.details["wasted_kwh"] == pytest.approx(0.4105)
    assert resolved.details["on_minutes"] == pytest.approx(30)


def test_a_version_2_snapshot_still_loads(rule: AcAfterHoursRule) -> None:
    # Written by the rule before hysteresis: no on-state per meter; a meter above standby
    # (1200 W) is taken as on. Raised stretch since 19:00 with 0.3 kWh after 15 min on.
    since, last = local("2026-03-03 19:00"), local("2026-03-03 19:15")
    old = {
        "version": 2,
        "meters": {"ac-204": {"last_time": last.isoformat(), "power_w": 1200.0}},
        "episodes": {
            "ac:A-204": {
                "subject": "A-204", "kind": "ac", "since": since.isoformat(), "meters": ["ac-204"],
                "kwh": 0.3, "kwh_by_band": {}, "on_seconds": 900.0,
                "on_until": last.isoformat(), "known_until": last.isoformat(),
                "recent_on": [[since.isoformat(), last.isoformat()]],
                "recent_known": [[since.isoformat(), last.isoformat()]],
                "off_since": None, "raised": True, "signalled_at": last.isoformat(),
            }
        },
    }
    rule.restore(json.loads(json.dumps(old)))
    # On at 1.2 kW to 19:30, then 0 W: 0.3 + 15 min x 1.2 kW = 0.6 kWh, one alert continued.
    signals = feed(rule, "ac-204", EVENING, [(80, 1200.0), (90, 0.0)])
    assert actions(signals) == [UPDATE, UPDATE]
    [resolved] = rule.on_tick(local("2026-03-03 20:30"))
    assert resolved.details["wasted_kwh"] == pytest.approx(0.6)
    assert rule.state_snapshot()["version"] == 3


@pytest.mark.parametrize("key", ["hysteresis_watts", "min_kwh"])
def test_negative_thresholds_are_refused_naming_the_key(key: str) -> None:
    with pytest.raises(ValidationError, match=key):
        AcAfterHoursConfig.model_validate({key: -1})
