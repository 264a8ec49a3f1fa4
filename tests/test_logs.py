"""The demo's log configuration: libraries quiet unless asked, expected device noise
counted instead of printed, and everything else of ours untouched."""

from __future__ import annotations

import logging

from warden.logs import ExpectedFaults, LibraryFilter


def record(name: str, level: int = logging.WARNING, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord(name, level, __file__, 1, "message", None, None)
    made.__dict__.update(extra)
    return made


def test_libraries_are_shown_only_from_their_level_and_ours_always() -> None:
    quiet = LibraryFilter(logging.CRITICAL + 1)
    verbose = LibraryFilter(logging.WARNING)
    for library in ("amqtt.client", "paho.mqtt.client", "uvicorn.error", "pymodbus.logging", "asyncio"):
        assert not quiet.filter(record(library, logging.ERROR))
        assert verbose.filter(record(library, logging.WARNING)) and not verbose.filter(record(library, logging.INFO))
    for ours in ("gateway.service", "agent.runner", "cli.main", "simulators.night", "rules.engine"):
        assert quiet.filter(record(ours, logging.INFO))


def test_dropped_device_input_is_counted_and_everything_else_passes() -> None:
    faults = ExpectedFaults()
    dropped = [
        record("agent.drivers.patrol_line", device="reader-1", reason="garbage"),
        record("agent.drivers.patrol_line", device="reader-1", reason="garbage"),
        record("agent.drivers.mqtt_device", device="wm-d", reason="not_json: Expecting value: line 1 column 1"),
        # a driver's periodic summary: 3 + 2 more
        record("agent.drivers.patrol_line", device="reader-1", reason="summary", dropped={"garbage": 3, "truncated": 2}),
    ]
    kept = [
        record("agent.drivers.patrol_line", device="reader-1", reason="port_error"),  # the agent's own trouble
        record("agent.drivers.patrol_line", logging.ERROR, device="reader-1", reason="garbage"),
        record("agent.runner", device="reader-1", reason="garbage"),
        record("gateway.service", reason="garbage"),
    ]
    assert [faults.filter(r) for r in dropped] == [False] * 4
    assert [faults.filter(r) for r in kept] == [True] * 4
    # reader-1: garbage 1 + 1 + 3 = 5, truncated 2; wm-d: not_json 1
    assert faults.counts == {("reader-1", "garbage"): 5, ("reader-1", "truncated"): 2, ("wm-d", "not_json"): 1}
    assert faults.summary() == "reader-1: garbage 5, truncated 2; wm-d: not_json 1"


def test_connection_changes_count_only_on_a_night_that_restarts_the_broker() -> None:
    lost = record("gateway.service")
    lost.msg = "lost the MQTT broker connection; reconnecting"
    uplink = record("agent.runner")
    uplink.msg = "uplink lost; buffering to disk"
    assert ExpectedFaults().filter(lost)  # an ordinary night: a real problem, printed
    restart = ExpectedFaults(broker_restart=True)
    assert not restart.filter(lost) and not restart.filter(uplink)
    assert restart.outage == {"gateway": 1, "agent": 1}
