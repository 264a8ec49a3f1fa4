"""A gateway coming back to a broker that queued its session's backlog takes that backlog
in before time passes in its rules (gateway/catch_up.py): otherwise a gateway restarted
after half an hour pages the silences and missed rounds whose data only sits in its queue.
Real Mosquitto, real persistent session."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import yaml

from gateway.config import GatewayConfig
from gateway.service import Gateway
from tests.gateway.test_gateway_faults import SITE, T0, publish_all, readings
from tests.support.gateway_config import local_gateway_config
from warden.clock import ManualClock
from warden.config import BrokerConfig, SiteConfig
from warden.events import encode_events

MESSAGES, PER_MESSAGE = 150, 20


def config(broker: BrokerConfig, tmp_path: Path, **rules: float) -> GatewayConfig:
    (tmp_path / "site.yaml").write_text(yaml.safe_dump(SITE))
    return local_gateway_config(broker, tmp_path, rules={"tick_seconds": 0.02, **rules})


def test_a_restarted_gateway_ticks_only_once_the_brokers_backlog_is_in(broker_config: BrokerConfig, tmp_path: Path) -> None:
    cfg = config(broker_config, tmp_path)
    site = SiteConfig.model_validate(SITE)
    first = Gateway(cfg, site, ManualClock(T0))
    first.start()
    assert first.subscribed.wait(10), "the gateway did not subscribe"
    first.stop()  # its session stays at the broker, which queues for it from now on

    backlog = readings(0, MESSAGES * PER_MESSAGE)
    publish_all(broker_config, [encode_events(backlog[n : n + PER_MESSAGE]) for n in range(0, len(backlog), PER_MESSAGE)])

    again = Gateway(cfg, site, ManualClock(T0 + timedelta(hours=1)))
    stored_at_ticks: list[int] = []
    on_tick = again.engine.on_tick
    again.engine.on_tick = lambda now: (stored_at_ticks.append(again.events_stored), on_tick(now))[1]  # type: ignore[method-assign]
    again.start()
    try:
        assert again.wait_until(lambda: again.last_tick is not None, timeout=60), "the gateway never ticked"
        # 150 messages of 20 readings were queued for it: 3 000 events in before the first tick.
        assert stored_at_ticks[0] == MESSAGES * PER_MESSAGE
    finally:
        again.stop()


def test_without_a_marker_from_the_broker_it_ticks_after_the_wait(broker_config: BrokerConfig, tmp_path: Path) -> None:
    """A broker whose ACL drops the sync topic must not stop time in the rules for good."""
    gateway = Gateway(config(broker_config, tmp_path, catch_up_max_seconds=0.5), SiteConfig.model_validate(SITE), ManualClock(T0))
    gateway._on_subscribe = lambda client, *args: gateway.subscribed.set()  # type: ignore[method-assign]  # no marker sent, none comes back
    gateway.start()
    try:
        assert gateway.subscribed.wait(10)
        assert not gateway.catch_up.caught_up()  # still waiting for the marker
        assert gateway.wait_until(lambda: gateway.last_tick is not None, timeout=30)
        assert gateway.catch_up.caught_up()
    finally:
        gateway.stop()
