"""The fault suite (issue 9): a shipped incident scenario (`fault-drill`: an AC left on, a
leak, a forced door on a serial line, a missed checkpoint on a serial reader, a silent
sensor) played through a real `warden agent` and a real `warden gateway` process, with
one fault injected per test at a chosen time of the night (tests/faults/drill.py has the
rig and how time is handled):

broker restart, historian (VictoriaMetrics) outage, gateway kill -9 and restart, agent
kill -9 and restart, serial port unplugged and back; and for end-to-end acknowledgement
(issue 17): the broker killed with its persistence lost, the broker replaced by a fresh
one, and the agent publishing before the gateway's first start; and for a standby
(issue 21, tests/faults/standby.py, events published by hand): the partition's gateway
killed with its standby waiting, and PostgreSQL restarted under a holder and a standby.

After each: every event the devices produced is stored exactly once, and the alerts
equal the scenario's ground truth. The table is printed when the module finishes
(docs/faults.md). Longer runs: WARDEN_FAULT_SPEED (simulated seconds per real second,
default 6000), WARDEN_FAULT_SEEDS (e.g. "1,2,3": every fault once per seed). The
historian outage: WARDEN_FAULT_OUTAGE_MINUTES (of the night, from 00:30; default 180) at
WARDEN_FAULT_OUTAGE_SPEED (the clock's speed meanwhile; default the night's), e.g. 10 and
1 for ten real minutes at real speed (docs/faults.md).
"""

from __future__ import annotations

import os
import signal
import time as real_time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest

from simulators.broker import MosquittoBroker
from simulators.postgres import PostgresServer
from tests.faults.drill import SCENARIO, SPEED, WAIT, Drill, Row, Step
from tests.faults.standby import FORCED, UNCONFIRMED_WAIT, LeasedGateway, Partition, event_counts, judge, seconds_until_stored_grows
from tests.support.receivers import WebhookReceiver
from tests.support.wait import wait_for

SEEDS = [int(s) for s in os.environ.get("WARDEN_FAULT_SEEDS", "1").split(",")]
UNPLUGGED = "patrol-reader-1"
#: The historian outage: from 00:30, this many minutes of the night, with the clock at
#: OUTAGE_SPEED meanwhile (10 minutes at speed 1: a ten-minute outage in real time).
OUTAGE_MINUTES = float(os.environ.get("WARDEN_FAULT_OUTAGE_MINUTES", "180"))
OUTAGE_SPEED = float(os.environ.get("WARDEN_FAULT_OUTAGE_SPEED", str(SPEED)))
OUTAGE_FROM = time(0, 30)
OUTAGE_TO = (datetime.combine(datetime.min, OUTAGE_FROM) + timedelta(minutes=OUTAGE_MINUTES)).time()

RESULTS: list[Row] = []


def format_table(rows: list[Row]) -> list[str]:
    header = ("fault", "seed", "produced", "stored", "duplicates", "lost", "alerts exp/found", "paged during the fault",
              "agent's own", "note")  # fmt: skip
    body = [
        (r.fault, str(r.seed), str(r.produced), str(r.stored), str(r.duplicates), str(r.lost),
         f"{r.alerts_expected}/{r.alerts_found}" + ("" if r.check and r.check.ok else " (differ)"),
         ", ".join(r.pages_during_fault) or "nothing", str(r.agent_own),
         "; ".join(r.notes + ([f"{r.unexpected} unexpected device events"] if r.unexpected else [])))
        for r in rows
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    fmt = lambda line: "| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |"  # noqa: E731
    return [fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, body)]


@pytest.fixture(scope="module", autouse=True)
def fault_table(request: pytest.FixtureRequest) -> Iterator[None]:
    started = real_time.monotonic()
    yield
    lines = [
        f"fault suite: scenario {SCENARIO} at {SPEED:g}x, seeds {SEEDS}, {real_time.monotonic() - started:.0f} s",
        *format_table(RESULTS),
    ]
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    for line in ["", *lines]:
        reporter.write_line(line) if reporter else print(line)


# --------------------------------------------------------------------------- faults
# Each step runs with the clock paused, at its time of the night.


def broker_down(d: Drill) -> None:
    d.wait_agent_read()  # what the broker holds for the agent's clean session would die with it
    d.faulty = True
    d.mosquitto.stop()  # persistence keeps the gateway's session and what is queued for it
    d.simulation.broker_stopped()
    wait_for(lambda: not d.simulation.connection.connected.is_set(), timeout=WAIT, what="the devices losing the broker")


def broker_up(d: Drill) -> None:
    d.wait_agent_read()
    buffered = len(d.queued() & d.produced.ids())
    assert buffered > 0, "the agent must have buffered events while the broker was down"
    d.mosquitto.start()
    d.agent.wait_log("device topics subscribed", count=2, timeout=WAIT)  # before the devices publish again
    d.simulation.broker_started()
    d.faulty = False
    lost = sum(d.simulation.totals.lost.values())
    d.note(f"down 02:00:30-02:04:30: the agent buffered {buffered} event(s); {lost} MQTT message(s) lost at the devices")


def historian_down(d: Drill) -> None:
    assert d.victoria is not None
    d.victoria.stop()  # a real outage: the server process is gone while the night goes on
    d.clock.speed = OUTAGE_SPEED  # the clock is paused: the new speed applies from its resume
    d.marks["down"] = real_time.monotonic()


def historian_up(d: Drill) -> None:
    assert d.victoria is not None
    stats: dict[str, Any] = {}

    def spooling() -> bool:
        stats.update(d.gateway.health().get("historian", {}))
        return stats.get("points_pending", 0) > 0 and stats.get("failed_attempts", 0) >= 3

    wait_for(spooling, timeout=WAIT, what="the gateway spooling points and failing writes")
    seconds = real_time.monotonic() - d.marks["down"]
    d.clock.speed = SPEED
    d.note(f"down {OUTAGE_FROM:%H:%M}-{OUTAGE_TO:%H:%M} at {OUTAGE_SPEED:g}x ({seconds:.1f} s real): "
           f"{stats['points_pending']:.0f} points spooled, {stats['failed_attempts']:.0f} writes failed")  # fmt: skip
    d.victoria.start()  # same port, same data


def gateway_freeze(d: Drill) -> None:
    d.faulty, d.gateway_alive = True, False
    d.gateway.freeze()  # hung: what the broker delivers meanwhile is neither stored nor acknowledged


def gateway_kill(d: Drill) -> None:
    in_flight = len(d.unstored(d.produced.ids()))
    assert in_flight > 0, "the gateway must die with deliveries it has not stored"
    assert d.gateway.kill() == -9
    d.note(f"hung at 01:30, killed at 01:45 with {in_flight} events not stored, restarted at 02:15")


def gateway_restart(d: Drill) -> None:
    d.faulty = False
    d.start_gateway()  # the broker kept its session: everything meanwhile is queued for it


def link_pause(d: Drill) -> None:
    assert d.network is not None
    d.faulty = True
    d.network.pause()  # PUBLISHes leave the agent, no PUBACK comes back


def agent_kill(d: Drill) -> None:
    assert d.network is not None
    d.wait_agent_read()
    unacked = len(d.queued() & d.produced.ids())
    assert unacked > 0, "the agent must die with unacknowledged events"
    assert d.agent.kill() == -9
    d.network.sever()  # what the dead agent had sent dies with its connection: only its outbox has it
    d.network.resume()
    # The broker fires the dead agent's will; the new agent's "online" must come after it.
    wait_for(lambda: d.gateway.health().get("agents", {}).get(f"{d.scenario.site.id}/{d.scenario.agent}") == "offline",
             timeout=WAIT, what="the gateway seeing the agent offline")  # fmt: skip
    d.start_agent()  # on the same outbox
    d.faulty = False
    d.note(f"killed with {unacked} events unacknowledged in its outbox (the link dropped what it held)")


def serial_unplug(d: Drill) -> None:
    d.wait_agent_read()  # bytes still in the pty would go with it
    d.simulation.unplug(UNPLUGGED)  # the USB adapter is pulled: its pty is gone
    d.agent.wait_log("cannot read port", timeout=WAIT)
    port = d.simulation.plug(UNPLUGGED)  # ... and plugged in again: a new pty
    staging = d.tmp / "next-link"
    staging.symlink_to(port)
    os.replace(staging, d.symlinks[UNPLUGGED])  # the by-id name follows the adapter
    d.agent.wait_log("port open", count=d.serial_ports + 1, timeout=WAIT)
    d.note(f"{UNPLUGGED}'s pty closed mid-round; the agent reopened it by name")


# --- delivery (issue 17, item 8): a broker that loses what it acknowledged

def gateway_hang(d: Drill) -> None:
    """Hung: the broker acknowledges the agent's events and holds them for the gateway."""
    d.faulty, d.gateway_alive, d.hold_rules = True, False, True
    d.gateway.freeze()


def _held_only_by_broker_and_agent(d: Drill) -> int:
    d.wait_agent_read()
    held = len(d.unstored(d.produced.ids()))  # PUBACKed by the broker, not stored: kept by the agent
    assert held > 0, "the broker must go holding events the gateway has not stored"
    return held


def broker_kill_losing_state(d: Drill) -> None:
    held = _held_only_by_broker_and_agent(d)
    process = d.mosquitto._process  # kill -9: nothing is saved on the way out
    assert process is not None
    process.kill()
    process.wait()
    d.mosquitto._process = None
    (d.mosquitto.workdir / "mosquitto.db").unlink(missing_ok=True)  # ... and what it had saved is gone too
    d.simulation.broker_stopped()
    wait_for(lambda: not d.simulation.connection.connected.is_set(), timeout=WAIT, what="the devices losing the broker")
    d.note(f"killed at 02:00:30 with {held} events acknowledged to the agent and not stored; its persistence file deleted")


def broker_replace(d: Drill) -> None:
    held = _held_only_by_broker_and_agent(d)
    d.mosquitto.stop()  # saves its state, which the new broker never sees
    d.simulation.broker_stopped()
    wait_for(lambda: not d.simulation.connection.connected.is_set(), timeout=WAIT, what="the devices losing the broker")
    d.note(f"stopped at 02:00:30 with {held} events acknowledged to the agent and not stored")


def _broker_back(d: Drill, broker: MosquittoBroker | None = None) -> None:
    """The broker is back (`broker`: a new one on the same port), the hung gateway wakes
    up, and the rules move on once it has what only the agent still held."""
    if broker is None:
        d.mosquitto.start()
    else:
        d.mosquitto = broker
    d.agent.wait_log("device topics subscribed", count=2, timeout=WAIT)
    d.simulation.broker_started()
    d.gateway.process.send_signal(signal.SIGCONT)
    d.catch_up_held()


def broker_empty_start(d: Drill) -> None:
    _broker_back(d)


def broker_fresh_start(d: Drill) -> None:
    fresh = MosquittoBroker(port=d.mosquitto.port, workdir=d.tmp / "mosquitto-fresh")  # another machine's, empty
    d._cleanup.append(fresh.stop)
    _broker_back(d, fresh)
    d.note("a fresh broker (no sessions, no queues, no retained messages) took the old one's port at 02:04:30")


def gateway_first_start(d: Drill) -> None:
    held = len(d.unstored(d.produced.ids()))
    assert held > 0, "the agent must have published before the gateway existed"
    d.first_gateway_start()
    d.catch_up_held()
    d.note(f"the agent published {held} events from 22:00 with no gateway session at the broker; gateway first started at 22:35")


@dataclass(frozen=True)
class Fault:
    steps: tuple[Step, ...]
    options: dict[str, Any] = field(default_factory=dict)
    #: Alerts the fault itself may page, judged live: (rule, subject, why).
    pages: tuple[tuple[str, str, str], ...] = ()


FAULTS: dict[str, Fault] = {
    # Between two rounds of the MQTT meters' 5-minute grid, across the 02:00 round's first tap.
    "broker restart": Fault((Step(time(2, 0, 30), broker_down), Step(time(2, 4, 30), broker_up))),
    "historian outage": Fault((Step(OUTAGE_FROM, historian_down), Step(OUTAGE_TO, historian_up)), {"influx": True}),
    "gateway kill -9": Fault((Step(time(1, 30), gateway_freeze), Step(time(1, 45), gateway_kill), Step(time(2, 15), gateway_restart))),
    "agent kill -9": Fault(
        (Step(time(1, 25), link_pause), Step(time(1, 40), agent_kill)), {"proxy": True},
        # 15 minutes with nothing from the agent, then its will: longer than the 5 minutes
        # (rules.deadman.agent_offline_minutes) after which an agent gone dark is paged.
        pages=(("deadman_agent", "agent-a", "the agent's link stalled 01:25-01:40, then it died"),),
    ),
    "serial unplug": Fault((Step(time(2, 8), serial_unplug),), {"unplug": UNPLUGGED}),
    # Hung from 01:45, so the broker holds what the agent sent meanwhile; down 02:00:30-02:04:30.
    "broker kill -9, persistence lost": Fault(
        (Step(time(1, 45), gateway_hang), Step(time(2, 0, 30), broker_kill_losing_state), Step(time(2, 4, 30), broker_empty_start))
    ),
    "broker replaced by a fresh one": Fault(
        (Step(time(1, 45), gateway_hang), Step(time(2, 0, 30), broker_replace), Step(time(2, 4, 30), broker_fresh_start))
    ),
    "agent before the gateway's first start": Fault((Step(time(22, 35), gateway_first_start),), {"late_gateway": True}),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fault", list(FAULTS))
def test_every_produced_event_is_stored_once_and_the_alerts_are_the_ground_truth(
    fault: str, seed: int, tmp_path: Path
) -> None:
    spec = FAULTS[fault]
    drill = Drill(tmp_path, spec.steps, seed=seed, **spec.options)
    try:
        drill.start()
        drill.play()
        try:
            drill.settle()
        except AssertionError as exc:  # still judged and counted: the row shows what is missing
            drill.note(f"not settled: {exc}")
        check = drill.judge(spec.pages)
        row = drill.count(fault, check)
    finally:
        drill.close()
    RESULTS.append(row)
    assert row.produced == drill.simulation.totals.events  # the drivers' view agrees with the simulators' count
    assert (row.lost, row.duplicates, row.unexpected) == (0, 0, 0), row
    assert row.stored == row.produced > 0
    assert check.ok, check.as_dict()  # every alert opened during the night, withdrawn ones included
    assert not [n for n in row.notes if n.startswith("not settled")], row.notes  # the outbox or spool did not drain


# --------------------------------------------------------------------------- a standby (issue 21)
# Two real gateway processes under one lease (tests/faults/standby.py); the ground truth is
# arithmetic on the events published by hand, phase by phase.


def standby_row(fault: str, partition: Partition, serving: LeasedGateway, notes: list[str], pages: str) -> Row:
    """`pages`: the doors first forced from just before the fault on (the scenario's pages, not the fault's)."""
    check, facts = judge(partition, serving)
    produced, stored, lost, duplicates = event_counts(partition)
    row = Row(fault, 1, produced=produced, stored=stored, lost=lost, duplicates=duplicates, check=check,
              alerts_expected=len(check.expected), alerts_found=len(check.found), notes=notes,
              pages_during_fault=[pages])  # fmt: skip
    if facts["repeats"]:
        row.notes.append(f"{facts['repeats']} page(s) delivered again under the same idempotency key")
    RESULTS.append(row)
    assert not facts["counts_wrong"], facts  # each forced door's alert counted every `forced` published, once
    # One page per alert: one idempotency key per door's `opened`.
    assert set(facts["notified"].values()) == {1} and len(facts["notified"]) == len(check.expected), facts
    return row


@pytest.mark.parametrize("state", ["sqlite", "postgresql"])
def test_a_killed_gateways_standby_takes_over_losing_and_repeating_nothing(
    state: Literal["sqlite", "postgresql"], tmp_path: Path, private_mosquitto: MosquittoBroker,
    private_postgres: PostgresServer, receiver: WebhookReceiver,
) -> None:
    partition = Partition(tmp_path, private_mosquitto, private_postgres, receiver, state)
    try:
        holder, standby = partition.holder_and_standby()
        # 1: 600 readings, doors d01-d04 forced; all stored and paged before the fault.
        partition.publish(range(0, 600), ["d01", "d02", "d03", "d04"])
        partition.wait_stored()
        wait_for(lambda: len(partition.opened_deliveries()) == 4, timeout=WAIT, what="the first four pages")
        # 2: the holder hangs (SIGSTOP: its lease session stays up), so what the broker delivers
        # meanwhile, 600 readings, d05-d08 forced and d01 a second time, is held unstored; then kill -9.
        holder.process.send_signal(signal.SIGSTOP)
        partition.publish(range(600, 1200), ["d05", "d06", "d07", "d08", "d01"])
        in_flight = len(partition.published.ids() - set(partition.stored()))
        assert in_flight == 600 + 5  # all of phase 2
        assert holder.kill() == -9
        killed = real_time.monotonic()
        # 3: while the standby takes over: 600 readings, d09-d12 forced and d05 a second time.
        partition.publish(range(1200, 1800), ["d09", "d10", "d11", "d12", "d05"])
        takeover = seconds_until_stored_grows(partition, killed)
        standby.wait_serving()
        partition.wait_stored()
        wait_for(lambda: len(partition.opened_deliveries()) == 12, timeout=WAIT, what="a page for every forced door")
        assert partition.holders() == 1
        notes = [f"hung, then killed with {in_flight} events delivered and not stored; "
                 f"the standby stored its first event {takeover:.1f} s after the kill"]  # fmt: skip
        fault = "gateway kill -9, standby takes over" + (", state in PostgreSQL" if state == "postgresql" else "")
        row = standby_row(fault, partition, standby, notes, "door_forced d05-d12")
    finally:
        partition.close()
    # Published: 3 x 600 readings + (4 + 5 + 5) door events = 1814, each stored once.
    assert (row.produced, row.stored, row.lost, row.duplicates) == (1814, 1814, 0, 0), row
    # Doors d01-d12 forced: 12 alerts, d01 and d05 updated (count 2), not opened again.
    assert row.check is not None and row.check.ok and row.alerts_found == 12, row.check
    assert takeover < 15, takeover  # check_seconds 0.5: a retry, the 1.5 s grace, a gateway start; seconds, not minutes


@pytest.mark.parametrize("state", ["sqlite", "postgresql"])
def test_a_postgresql_restart_leaves_exactly_one_holder_and_the_work_resumes(
    state: Literal["sqlite", "postgresql"], tmp_path: Path, private_mosquitto: MosquittoBroker,
    private_postgres: PostgresServer, receiver: WebhookReceiver,
) -> None:
    """Three restarts: one at an arbitrary moment, two as the group bot takes a page (the
    holder's mark in the outbox meets the database going away). The bot cannot drop a
    repeat: each change reaches it exactly once."""
    partition = Partition(tmp_path, private_mosquitto, private_postgres, receiver, state)
    try:
        holder, standby = partition.holder_and_standby()
        # 1: 400 readings, d01-d03 forced.
        partition.publish(range(0, 400), ["d01", "d02", "d03"])
        partition.wait_stored()
        # 2: 400 readings and d04 forced, then PostgreSQL restarted (its sessions end).
        partition.publish(range(400, 800), ["d04"])
        new, other, resumed = partition.restart_postgres(holder, standby)
        notes = [f"the holder exited with 3; the {'standby' if new.machine != holder.machine else 'restarted holder'} "
                 f"held the lease and served {resumed:.1f} s after the restart began"]  # fmt: skip
        # 3: 400 readings, d05 forced and d01 a second time.
        partition.publish(range(800, 1200), ["d05", "d01"])
        partition.wait_stored()
        wait_for(lambda: len(partition.opened_deliveries()) == 5, timeout=WAIT, what="a page for every forced door")
        assert partition.holders() == 1 and not other.holds() and other.process.poll() is None
        # 4 and 5: 400 readings and one door forced each; PostgreSQL restarted the moment the bot has its page.
        for first, door in ((1200, "d06"), (1600, "d07")):
            partition.publish(range(first, first + 400), [door])
            wait_for(lambda: partition.bot_deliveries()[("opened", FORCED, door)] >= 1, timeout=WAIT, what=f"{door} at the bot")
            new, other, resumed = partition.restart_postgres(new, other)
            notes.append(f"restarted as the bot took {door}'s page: served again {resumed:.1f} s later")
        partition.wait_stored()
        wait_for(lambda: len(partition.opened_deliveries()) == 7, timeout=WAIT, what="a page for every forced door")
        wait_for(lambda: not partition.outbox_waiting(), timeout=WAIT + UNCONFIRMED_WAIT, what="the outbox emptied")
        bot = partition.bot_deliveries()
        fault = "PostgreSQL restart under a holder and a standby" + (", state in it" if state == "postgresql" else "")
        twice = sum(n - 1 for n in bot.values())
        notes.append(f"3 restarts; the group bot got {sum(bot.values())} change(s), {twice} of them again")
        row = standby_row(fault, partition, new, notes, "door_forced d04-d07")
        other.process.terminate()  # systemctl stop: a waiting standby leaves at once, cleanly
        assert other.process.wait(timeout=15) == 0
    finally:
        partition.close()
    # Published: 5 x 400 readings + (3 + 1 + 2 + 1 + 1) door events = 2008, each stored once.
    assert (row.produced, row.stored, row.lost, row.duplicates) == (2008, 2008, 0, 0), row
    # Doors d01-d07 forced: 7 alerts, d01 updated (count 2).
    assert row.check is not None and row.check.ok and row.alerts_found == 7, row.check
    # The bot hears of openings (its route's default: no updates): d01-d07 opened, each exactly once.
    assert bot == Counter({("opened", FORCED, f"d{n:02d}"): 1 for n in range(1, 8)}), (bot, partition.repeats_logged())
