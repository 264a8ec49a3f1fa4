"""A patrol reader whose clock runs fast, through a real gateway and Mosquitto.

The reader stamps taps with its own clock; its agent stamps receive_time with one the
gateway trusts. A tap stamped more than MAX_DEVICE_AHEAD (5 min) ahead of its receive time
is kept at its receive time, flagged with the device's stamp, counted in the metrics and
the device view (warden.events.clamp_device_clock), so the round is judged when the guard
really walked it: no "missed" page that a later tap reconciles.

Route north, round 23:30 Berlin (22:30 UTC), checkpoints t1, t2, t3 with 10 min each:
deadlines 22:40, 22:50, 23:00 UTC. The guard taps them at 22:35, 22:45, 22:55 UTC: every
checkpoint on time, so no patrol alert at all once time has passed the last deadline.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.config import GatewayConfig
from gateway.historian.sqlite import SqliteHistorian
from gateway.service import Gateway
from rules import patrol
from warden import topics
from warden.clock import ManualClock
from warden.config import BrokerConfig, SiteConfig
from warden.events import (
    PatrolTap,
    Reading,
    TapSource,
    clamp_device_clock,
    decode_events,
    encode_events,
    stable_event_id,
)
from warden.mqtt import make_client

UTC = timezone.utc
ROUND = datetime(2026, 11, 17, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
TAPPED = [(tag, ROUND + timedelta(minutes=m)) for tag, m in (("t1", 5), ("t2", 15), ("t3", 25))]
SITE = SiteConfig.model_validate({
    "id": "riverside",
    "timezone": "Europe/Berlin",
    "buildings": [{"id": "A", "rooms": [{"id": "A-GATE", "devices": ["reader-1", "ac-1"]}]}],
})
RULES = {"allowed_lateness_seconds": 60, "patrol": {"routes": [
    {"id": "north", "checkpoints": [{"tag": "t1"}, {"tag": "t2"}, {"tag": "t3"}], "rounds": ["23:30"],
     "allowance_minutes": 10},
]}}


def tap(tag: str, walked: datetime, fast: timedelta) -> PatrolTap:
    """A tap the guard made at `walked`, stamped by a reader `fast` ahead, read by the agent at once."""
    stamp = walked + fast
    return PatrolTap(id=stable_event_id("riverside", "reader-1", "tap", tag, stamp.isoformat()), site="riverside",
                     device="reader-1", event_time=stamp, receive_time=walked, reader="reader-1", tag=tag)


def run_night(
    broker_config: BrokerConfig, tmp_path: Path, fast: timedelta, *extra: Reading
) -> tuple[Gateway, list[str], bool]:
    """Time at 22:15 UTC, the three taps (and `extra`) published one message each, then 23:10 UTC.
    Returns the gateway (stopped), the patrol alerts' rules, and whether the journal replays
    to the live rules."""
    config = GatewayConfig.model_validate({
        "id": f"gw-{tmp_path.name}"[:60], "site_file": str(tmp_path / "site.yaml"),
        "broker": broker_config.model_dump(),
        "historian": {"type": "sqlite", "path": str(tmp_path / "history.db")}, "state_db": str(tmp_path / "state.db"),
        "rules": RULES,
    })
    gateway = Gateway(config, SITE, ManualClock(ROUND + timedelta(minutes=26)), tick_every=None)
    gateway.start()
    client = make_client(broker_config, "agent-a")
    client.connect(broker_config.host, broker_config.port)
    client.loop_start()
    try:
        assert gateway.subscribed.wait(10)
        gateway.tick(ROUND - timedelta(minutes=15))  # the rules see time before the round opens (22:20), so judge it
        assert gateway.wait_until(lambda: gateway.last_tick == ROUND - timedelta(minutes=15), timeout=10)
        sent = [tap(tag, at, fast) for tag, at in TAPPED] + list(extra)
        for event in sent:
            topic = topics.events_topic("riverside", "agent-a")
            client.publish(topic, encode_events([event]), qos=1).wait_for_publish(5)
        done = lambda: gateway.events_stored + gateway.counts().get("rejected", 0) == len(sent)  # noqa: E731
        assert gateway.wait_until(done, timeout=10)
        gateway.tick(ROUND + timedelta(minutes=40))  # past the last deadline (23:00) and the lateness
        assert gateway.wait_until(lambda: gateway.last_tick == ROUND + timedelta(minutes=40), timeout=10)
        replayed, live = gateway._committed_rules().snapshot(), gateway.engine.snapshot()
        replays = json.loads(json.dumps(replayed)) == json.loads(json.dumps(live))
    finally:
        client.disconnect()
        client.loop_stop()
        gateway.stop()
    rules = [a.rule for a in gateway.store.alerts(site="riverside") if a.rule in patrol.RULE_NAMES]
    return gateway, rules, replays


def test_a_reader_20_minutes_fast_causes_no_missed_page(broker_config: BrokerConfig, tmp_path: Path) -> None:
    gateway, rules, replays = run_night(broker_config, tmp_path, timedelta(minutes=20))
    assert rules == []  # without the clamp: t1 placed at 22:55 moves judgement past t2's 22:50 deadline
    assert replays
    assert gateway.counts().get("clock_ahead_patrol_tap") == 3
    assert gateway.devices.snapshot()["reader-1"]["clock_ahead"] == {"events": 3, "seconds": 20 * 60.0}
    history = SqliteHistorian(tmp_path / "history.db", SITE)
    try:
        stored = sorted(p.time for p in history.series("reader-1"))
    finally:
        history.close()
    assert stored == [at for _, at in TAPPED]  # kept at the agent's time, as the report re-judges them


def test_a_reader_2_hours_fast_is_kept_counted_and_one_without_receive_time_refused(
    broker_config: BrokerConfig, tmp_path: Path
) -> None:
    """2 h ahead of the gateway's clock (22:56) is past MAX_FUTURE (1 h): the taps carry a
    receive time, so they are kept at it; a reading with no receive time cannot be placed and
    is refused as before (future_time), counted."""
    stamp = ROUND + timedelta(hours=2)
    blind = Reading(id=stable_event_id("riverside", "ac-1", stamp.isoformat()), site="riverside", device="ac-1",
                    event_time=stamp, quantity="power", value=5, unit="W")
    gateway, rules, replays = run_night(broker_config, tmp_path, timedelta(hours=2), blind)
    assert rules == []  # without the clamp the three taps are dead letters: a round not walked
    assert replays
    assert gateway.counts().get("clock_ahead_patrol_tap") == 3
    assert gateway.counts().get("rejected_future_time") == 1
    assert [json.loads(d["payload"])["device"] for d in gateway.store.dead_letters()] == ["ac-1"]
    assert gateway.devices.snapshot()["reader-1"]["clock_ahead"] == {"events": 3, "seconds": 2 * 3600.0}


@pytest.mark.parametrize("fast", [timedelta(0), timedelta(minutes=2)])
def test_a_clock_within_the_allowance_is_left_alone(
    broker_config: BrokerConfig, tmp_path: Path, fast: timedelta
) -> None:
    """2 min fast (the simulators' clock_skew faults) is within MAX_DEVICE_AHEAD: stamps kept."""
    gateway, rules, _ = run_night(broker_config, tmp_path, fast)
    assert rules == []
    assert gateway.counts().get("clock_ahead", 0) == 0
    assert gateway.devices.snapshot()["reader-1"]["clock_ahead"] == {"events": 0, "seconds": None}


@pytest.mark.parametrize(
    ("ahead", "source", "clamped"),
    [
        (timedelta(minutes=5), TapSource.ONLINE, False),  # at the allowance: the stamp stands
        (timedelta(minutes=5, seconds=1), TapSource.ONLINE, True),
        (timedelta(minutes=-30), TapSource.ONLINE, False),  # behind: late data, the rules' lateness handles it
        (timedelta(minutes=20), TapSource.WAND, False),  # read at its upload, not when it happened
    ],
)
def test_clamp_device_clock(ahead: timedelta, source: TapSource, clamped: bool) -> None:
    read = ROUND
    event = PatrolTap(id="tap-0001", site="riverside", device="reader-1", event_time=read + ahead, receive_time=read,
                      reader="reader-1", tag="t1", source=source)
    kept = clamp_device_clock(event)
    if clamped:
        assert (kept.event_time, kept.device_time) == (read, read + ahead)
        assert decode_events(encode_events([kept])) == [kept]  # the journal's copy replays as kept
    else:
        assert kept is event
