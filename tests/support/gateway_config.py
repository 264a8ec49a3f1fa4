"""The gateway config tests start from: its own persistent session, SQLite files under tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig
from warden.config import BrokerConfig


def local_gateway_config(broker: BrokerConfig, tmp_path: Path, **extra: Any) -> GatewayConfig:
    """`extra`: further top-level keys (api, rules, dead_letters...)."""
    return GatewayConfig.model_validate({
        "id": f"gw-{tmp_path.name}"[:60],  # a persistent session of the test's own
        "site_file": str(tmp_path / "site.yaml"),
        "broker": broker.model_dump(),
        "historian": {"type": "sqlite", "path": str(tmp_path / "history.db")},
        "state_db": str(tmp_path / "state.db"),
        **extra,
    })  # fmt: skip
