"""Litres lost is one computation (issue 16): `meter_spans` + `litres_above_baseline`, the
same `LeakLitres` the alerts use. Expected values are hand arithmetic, in comments."""

from __future__ import annotations

from datetime import timedelta

import pytest

from rules.water import NIGHT_FLOW, MeterSample, WaterConfig, WaterRule, litres_above_baseline, meter_spans
from tests.rules.helpers import local, of_rule
from tests.rules.test_water import SITE, feed, flow

GAP = timedelta(minutes=65)
T0 = local("2026-03-03 02:00")


def flow_samples(values: list[float], unit: str = "L/min", step: int = 5) -> list[MeterSample]:
    return [MeterSample(T0 + timedelta(minutes=step * i), "flow", v, unit) for i, v in enumerate(values)]


def test_use_on_top_of_a_leak_is_not_counted_as_lost() -> None:
    # 1.5 L/min for 70 min (14 spans), two of them with a 10 L/min tap open on top.
    values = [1.5] * 6 + [11.5, 11.5] + [1.5] * 6 + [0.0]
    spans = meter_spans(flow_samples(values), GAP)
    until = T0 + timedelta(minutes=70)
    assert litres_above_baseline(spans, T0, until) == pytest.approx(105)  # 1.5 x 70 min
    assert litres_above_baseline(spans, T0, until, baseline_l_per_min=0.2) == pytest.approx(91)  # 1.3 x 70
    assert litres_above_baseline(spans, T0 + timedelta(minutes=10), T0 + timedelta(minutes=40)) == pytest.approx(45)


def test_units_gaps_and_a_replaced_register() -> None:
    assert litres_above_baseline(meter_spans(flow_samples([0.025] * 13, "L/s"), GAP), T0, T0 + timedelta(hours=1)) \
        == pytest.approx(90)  # 0.025 L/s = 1.5 L/min, x 60 min
    samples = [
        MeterSample(T0, "volume", 10.000, "m3", cumulative=True),
        MeterSample(T0 + timedelta(minutes=10), "volume", 10.015, "m3", cumulative=True),  # 15 L: 1.5 L/min
        MeterSample(T0 + timedelta(minutes=20), "volume", 0.006, "m3", cumulative=True),  # replaced: 6 L on the new one
        MeterSample(T0 + timedelta(minutes=30), "volume", 0.021, "m3", cumulative=True),  # 15 L
        MeterSample(T0 + timedelta(minutes=120), "volume", 0.156, "m3", cumulative=True),  # 90 min later: a gap
    ]
    spans = meter_spans(samples, GAP)
    assert [s.flow is None for s in spans] == [False, True, False, True]
    assert spans[-1].gap and not spans[1].gap
    # 15 + 15 L known at 1.5 L/min, + 6 L the new register counted (under 1.5 x 10 = 15), gap: nothing
    assert litres_above_baseline(spans, T0, T0 + timedelta(minutes=120)) == pytest.approx(36)


def test_the_alert_counts_from_a_learned_baseline() -> None:
    # Night 1: 0.2 L/min all night (under the 0.5 limit): the meter's normal flow is 0.2.
    # Night 2: a 1.5 L/min leak on top from 02:40: 1.7 L/min, of which 1.5 is lost.
    rule = WaterRule(SITE, WaterConfig())
    feed(rule, [flow(local("2026-03-03 01:30") + timedelta(minutes=5 * i), 0.2) for i in range(49)])
    start = local("2026-03-04 01:30")
    events = [flow(start + timedelta(minutes=5 * i), 1.7 if i >= 14 else 0.2) for i in range(49)]  # i=14: 02:40
    signals = of_rule(feed(rule, events), NIGHT_FLOW)
    [end] = [s for s in signals if s.at == local("2026-03-04 05:00")]
    assert end.details["baseline_l_per_min"] == pytest.approx(0.2)
    assert end.details["litres_lost"] == pytest.approx(210)  # (1.7 - 0.2) x 140 min
    samples = [MeterSample(e.event_time, "flow", e.value, e.unit) for e in events]
    same = litres_above_baseline(meter_spans(samples, GAP), local("2026-03-04 02:40"), end.at, baseline_l_per_min=0.2)
    assert same == pytest.approx(end.details["litres_lost"])  # the report's call gives the alert's figure


def test_a_configured_baseline_wins() -> None:
    rule = WaterRule(SITE, WaterConfig.model_validate({"overrides": {"wm-1": {"baseline_l_per_min": 0.5}}}))
    events = [flow(local("2026-03-03 00:00") + timedelta(minutes=5 * i), 1.5 if i >= 32 else 0.0) for i in range(67)]
    [end] = [s for s in of_rule(feed(rule, events), NIGHT_FLOW) if s.at == local("2026-03-03 05:00")]
    assert end.details["litres_lost"] == pytest.approx(140)  # (1.5 - 0.5) x 140 min from 02:40
