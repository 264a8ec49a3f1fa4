"""Client ids follow usernames (issue 17, hole 1): the shipped broker replaces a client id
with the username, so warden connects that way everywhere, and refuses an agent config
whose two connections would share one account on one broker (they would throw each other
off in turn)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.config import AgentConfig
from warden.config import BrokerConfig
from warden.mqtt import client_id_for

DEVICES = [{"driver": "mqtt_json", "id": "meter-1", "topic": "devices/riverside/meter-1", "fields": {"power_w": {"quantity": "power", "unit": "W"}}}]


def test_the_client_id_is_the_username_when_there_is_one() -> None:
    assert client_id_for(BrokerConfig(username="riverside/agent-a", password="pw"), "warden-agent-riverside-agent-a") == "riverside/agent-a"
    assert client_id_for(BrokerConfig(), "warden-agent-riverside-agent-a") == "warden-agent-riverside-agent-a"


def test_a_device_broker_may_not_reuse_the_uplinks_account_on_the_same_broker() -> None:
    account = {"host": "broker.lan", "port": 1883, "username": "riverside/agent-a", "password": "pw"}
    with pytest.raises(ValidationError, match="device_broker.username: the uplink's account on the same broker"):
        AgentConfig.model_validate({"id": "agent-a", "site": "riverside", "broker": account, "device_broker": account, "devices": DEVICES})
    own = {**account, "username": "riverside/agent-a-devices"}
    AgentConfig.model_validate({"id": "agent-a", "site": "riverside", "broker": account, "device_broker": own, "devices": DEVICES})
