"""Structured logging: one line per record, `key=value` fields after the message.

Library code logs with `extra={...}`; this formatter renders those fields, so logs can be
grepped by port, device or reason without parsing prose.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        if fields:
            base += " " + " ".join(f"{k}={_render(v)}" for k, v in fields.items())
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


def _render(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (" " in text or not text) else text


#: Top-level packages of this project; any other logger is a library's.
OWN_PACKAGES = frozenset({"warden", "agent", "gateway", "rules", "simulators", "cli", "bench"})


class LibraryFilter(logging.Filter):
    """Lets a library's records (amqtt, paho, uvicorn, pymodbus, asyncio...) through only
    from `min_level` up; this project's own records are left to the level set on the root."""

    def __init__(self, min_level: int) -> None:
        super().__init__()
        self.min_level = min_level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".", 1)[0] in OWN_PACKAGES or record.levelno >= self.min_level


#: Reasons a driver gives for its own trouble (a port, a spool folder), never for input it dropped.
_OWN_TROUBLE = frozenset({"port_error", "spool_error"})
#: (logger, message) of the connection changes a broker restart causes (agent/runner.py,
#: gateway/service.py): expected on a night whose scenario restarts the broker.
_OUTAGE_LINES = frozenset({
    ("agent.runner", "uplink lost; buffering to disk"),
    ("gateway.service", "lost the MQTT broker connection; reconnecting"),
    ("gateway.service", "cannot reach the MQTT broker; retrying with back-off, quietly until it answers"),
    ("gateway.service", "MQTT broker connection back"),
})


class ExpectedFaults(logging.Filter):
    """Counts, instead of printing, the warnings of agent drivers dropping device input
    (line noise, malformed payloads): on a simulated night the simulator injects them on
    purpose, so they are summarised once at the end. Installed by the demo only; a real
    deployment logs every one."""

    def __init__(self, broker_restart: bool = False) -> None:
        """`broker_restart`: the night restarts the broker on purpose, so the connection
        changes it causes are counted too (in `outage`, by component)."""
        super().__init__()
        self.counts: Counter[tuple[str, str]] = Counter()  # (device, reason) -> records
        self.broker_restart = broker_restart
        self.outage: Counter[str] = Counter()  # "agent" / "gateway" -> connection warnings

    def filter(self, record: logging.LogRecord) -> bool:
        if self.broker_restart and record.levelno == logging.WARNING and (record.name, record.msg) in _OUTAGE_LINES:
            self.outage[record.name.split(".", 1)[0]] += 1
            return False
        reason = getattr(record, "reason", None)
        if record.levelno != logging.WARNING or not record.name.startswith("agent.drivers.") or not isinstance(reason, str):
            return True
        if reason in _OWN_TROUBLE:
            return True
        device = str(getattr(record, "device", "?"))
        dropped = getattr(record, "dropped", None)
        if isinstance(dropped, dict):  # a driver's summary of what it dropped since its last line
            for code, n in dropped.items():
                self.counts[(device, str(code))] += int(n)
            return False
        code = reason.split(":", 1)[0]  # "not_json: Expecting value..." -> not_json
        self.counts[(device, code if code.isidentifier() else "malformed")] += 1
        return False

    def summary(self) -> str:
        """e.g. `patrol-reader-1: garbage 3, bad_checksum 2; wm-d: malformed 4`, or ""."""
        devices: dict[str, list[str]] = {}
        for (device, code), n in sorted(self.counts.items()):
            devices.setdefault(device, []).append(f"{code} {n}")
        return "; ".join(f"{device}: {', '.join(codes)}" for device, codes in devices.items())


def configure_logging(level: str = "INFO", *, libraries: int | None = None) -> logging.Handler:
    """One stderr handler on the root logger, returned so a command can add filters.
    `libraries`: the least level at which third-party loggers are shown (None: as ours)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    if libraries is not None:
        handler.addFilter(LibraryFilter(libraries))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pymodbus logs every timeout at ERROR with a frame dump; the modbus_rtu driver counts
    # and logs those itself, with the device and register, so keep pymodbus for debugging.
    logging.getLogger("pymodbus").setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.CRITICAL)
    return handler
