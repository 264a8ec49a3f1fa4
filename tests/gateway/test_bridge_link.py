"""The gateway hears each served site's campus bridge (warden/v1/_bridge/<site>/state, as
deploy/bridge/edge-bridge.conf publishes it) on the real central broker with the shipped ACL,
stamps up/down on its own clock, and a restart replays the fact from its journal or snapshot.
The rules' side is tests/rules/test_deadman_link.py; the whole chain tests/faults/test_bridge_cut.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.rule_inputs import feed, journal_entry, link_message, replay
from gateway.service import Gateway
from rules.config import RulesConfig
from rules.sites import SiteRules
from tests.gateway.test_edge_bridge import PASSWORDS, WATCH_ACL
from tests.gateway.test_gateway import EVENING, SITE
from tests.support.gateway_config import local_gateway_config
from tests.support.shipped_broker import ShippedBroker, start_shipped_broker
from warden import topics
from warden.clock import ManualClock
from warden.mqtt import make_client

STATE = topics.bridge_state_topic("riverside")
LATENESS = timedelta(seconds=RulesConfig().allowed_lateness_seconds)  # 5 min, the default


def test_the_topic_is_named_and_parsed_in_one_place() -> None:
    assert STATE == "warden/v1/_bridge/riverside/state"
    assert topics.parse_bridge_topic(STATE) == "riverside"
    assert topics.parse_bridge_topic("warden/v1/riverside/agent-a/status") is None
    assert topics.parse_bridge_topic("warden/v1/_bridge/a b/state") is None


def test_a_journalled_link_fact_replays_at_the_time_it_was_heard() -> None:
    live, replayed = SiteRules([(SITE, RulesConfig())]), SiteRules([(SITE, RulesConfig())])
    down = EVENING + timedelta(minutes=3)
    entry = journal_entry([link_message(STATE, False, down)], EVENING)

    feed(live, [link_message(STATE, False, down)], EVENING)
    replay(replayed, entry)
    assert replayed.snapshot()["deadman"]["link"] == live.snapshot()["deadman"]["link"]
    assert live.snapshot()["deadman"]["link"]["down_at"] == down.isoformat()


@pytest.fixture
def central(tmp_path: Path) -> Iterator[ShippedBroker]:
    broker = start_shipped_broker(tmp_path / "central", PASSWORDS, extra_acl=WATCH_ACL)
    yield broker
    broker.stop()


def link_state(gateway: Gateway) -> dict[str, Any]:
    return dict(gateway.engine.snapshot()["deadman"]["link"])


def test_a_cut_heard_from_the_broker_opens_one_warning_and_survives_a_restart(central: ShippedBroker, tmp_path: Path) -> None:
    (tmp_path / "gw").mkdir()
    config = local_gateway_config(central.as_user("gateway"), tmp_path / "gw")
    clock = ManualClock(EVENING)
    bridge = make_client(central.as_user("riverside"), "riverside")  # the bridge's own account (deploy/acl)
    bridge.connect(central.host, central.port)
    bridge.loop_start()
    try:
        bridge.publish(STATE, b"0", qos=1, retain=True).wait_for_publish(5)  # as the bridge's will leaves it
        gateway = Gateway(config, SITE, clock)
        gateway.start()
        try:
            # The retained "0" arrives at connect, stamped with the gateway's clock: 18:00.
            assert gateway.wait_until(lambda: link_state(gateway)["down_at"] is not None, timeout=15)
            assert link_state(gateway)["down_at"] == EVENING.isoformat()
            # ... and /api/health tells the campus is unreachable, not that its agents are offline
            cut = {"start": EVENING.isoformat(), "end": None, "minutes": None}  # open: no end, no length yet
            assert gateway.health()["campus_links"] == {"riverside": {"state": "down", "heard_at": EVENING.isoformat(),
                                                                      "cuts": [cut]}}
            clock.advance(timedelta(minutes=10))  # 18:10 = 18:00 + the 10-minute grace
            gateway.tick(clock.now() - LATENESS)
            assert gateway.wait_until(lambda: gateway.store.alerts(rule="site_link_down") != [], timeout=15)
        finally:
            gateway.stop()

        again = Gateway(config, SITE, clock)  # restored from the snapshot written on stop
        again.start()
        try:
            assert again.subscribed.wait(10)
            clock.advance(timedelta(minutes=5))  # the link is back at 18:15
            bridge.publish(STATE, b"1", qos=1, retain=True).wait_for_publish(5)
            assert again.wait_until(lambda: link_state(again)["up_at"] is not None, timeout=15)
            assert again.health()["campus_links"]["riverside"]["state"] == "up"
            # The cut kept its 18:00 start across the restart (from the rules' snapshot): 18:00-18:15, 15 minutes.
            end = (EVENING + timedelta(minutes=15)).isoformat()
            assert again.health()["campus_links"]["riverside"]["cuts"] == [{"start": EVENING.isoformat(), "end": end, "minutes": 15}]
            again.tick(clock.now() - LATENESS)
            assert again.wait_until(lambda: again.store.alerts(rule="site_link_down", state="resolved") != [], timeout=15)
            [alert] = again.store.alerts(rule="site_link_down")
        finally:
            again.stop()
    finally:
        bridge.disconnect()
        bridge.loop_stop()
    # Down at 18:00 (the retained "0" heard at the first start, kept across the restart, not
    # re-stamped by the second start's retained copy), opened at 18:00 + 10 = 18:10, back at 18:15.
    assert (alert.subject, alert.severity) == ("riverside", "warning")
    assert datetime.fromisoformat(alert.opened_at) == EVENING + timedelta(minutes=10)
    assert alert.resolved_at is not None and datetime.fromisoformat(alert.resolved_at) == EVENING + timedelta(minutes=15)
