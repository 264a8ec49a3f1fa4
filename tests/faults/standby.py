"""The standby rig of the fault suite (issue 21): one partition's gateway and its standby,
two real `warden gateway` processes with the same `lease:` (PostgreSQL advisory lock), the
same state and history files and the same MQTT session, on a private Mosquitto and a
private PostgreSQL; alerts go to a real webhook receiver, at two paths: a webhook that
drops a repeated idempotency key (the pager) and a WeCom group bot, which cannot (the duty
group sees every message it is sent). Holder and standby stand for two machines: with the
state in PostgreSQL each has its own receipts journal (gateway/notify.py), as on two disks;
with a SQLite state they are one machine and share it.

The events are published by hand, in phases around the fault, so the ground truth is
arithmetic on what was published (no simulator, no rules run to decide it): temperature
readings of a plain room sensor (no rule judges them: no cold room is configured, the
deadman rule is off) and door-forced events (rules/doors.py: a door's first `forced`
opens one critical alert at once; a second `forced` of the same door updates that alert,
its details' count becoming 2, which only a standby that took over the rule state knows).
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import httpx
import psycopg
import yaml

from gateway import db as engines
from simulators.broker import MosquittoBroker, free_port
from simulators.ground_truth import GroundTruthCheck
from simulators.postgres import PostgresServer
from tests.support.agent_process import warden_command
from tests.support.receivers import WebhookReceiver
from tests.support.wait import wait_for
from warden import topics
from warden.config import BrokerConfig
from warden.events import DoorAction, DoorEvent, Event, Reading, encode_events, stable_event_id
from warden.mqtt import make_client
from warden.process import terminate

SITE_ID = "standby-school"
LEASE = "partition-0"
CHECK_SECONDS = 0.5  # the lease's check_seconds: how soon a holder notices, and a standby retries
WAIT = 60.0
SITE = {
    "id": SITE_ID,
    "timezone": "Europe/Berlin",
    "buildings": [{"id": "A", "rooms": [{"id": "A-hall", "devices": ["ctl-gate", "temp-hall"]}]}],
}
HOOK = "/pager"
BOT = "/duty-group"
FORCED = "door_forced"
UNCONFIRMED_WAIT = 30.0  # alerts.unconfirmed_wait_seconds: how long a page another machine claimed waits for its receipt
#: One change in a bot's message: "[CRITICAL] 新告警 opened: ...", its last line "rule · subject · #id · site".
_BOT_CHANGE = re.compile(r"^\[\w+\] \S+ (?P<action>\w+): .*\n(?P<rule>\S+) · (?P<subject>\S+) · #\d+ · \S+$", re.S)


@dataclass
class Published:
    """Everything published so far, in order: the ground truth's only input."""

    events: list[Event] = field(default_factory=list)
    forced: Counter[str] = field(default_factory=Counter)  # door -> `forced` events published

    def ids(self) -> set[str]:
        return {e.id for e in self.events}


class Partition:
    """The processes, files and servers of one partition with a standby."""

    def __init__(
        self, tmp: Path, mosquitto: MosquittoBroker, postgres: PostgresServer, receiver: WebhookReceiver,
        state: Literal["sqlite", "postgresql"] = "sqlite",
    ) -> None:
        """`state`: "sqlite" (one machine: the same file) or "postgresql" (as across machines: the lease's server)."""
        self.tmp, self.postgres, self.receiver = tmp, postgres, receiver
        self.state_db = "state.db" if state == "sqlite" else postgres.dsn
        self.broker = BrokerConfig(
            host=mosquitto.host, port=mosquitto.port, reconnect_min_seconds=0.05, reconnect_max_seconds=0.5
        )
        (tmp / "site.yaml").write_text(yaml.safe_dump(SITE))
        self.published = Published()
        self.processes: list[LeasedGateway] = []
        # Events of the last hour: the gateways judge them on the system clock.
        self.t0 = datetime.now(timezone.utc) - timedelta(hours=1)
        self._publisher = make_client(self.broker, f"standby-publisher-{os.getpid()}-{tmp.name}"[:60])
        self._publisher.max_inflight_messages_set(100)
        self._publisher.connect(self.broker.host, self.broker.port)
        self._publisher.loop_start()

    def config(self, role: str, machine: str) -> Path:
        """The same gateway (id, session, files, lease) but for its API port: `role` names the file;
        `machine`, its receipts journal when the state is in PostgreSQL."""
        config = {
            "id": f"gw-{self.tmp.name}"[:60],
            "site_file": "site.yaml",
            "broker": self.broker.model_dump(exclude_none=True),
            "historian": {"type": "sqlite", "path": "history.db"},
            "state_db": self.state_db,
            "api": {"host": "127.0.0.1", "port": free_port()},
            "rules": {"deadman": {"enabled": False}, "tick_seconds": 0.2},
            "alerts": {"sinks": {"pager": {"type": "webhook", "url": self.receiver.url(HOOK), "backoff_seconds": 0.01},
                                 "duty": {"type": "webhook", "preset": "wecom", "url": self.receiver.url(BOT),
                                          "backoff_seconds": 0.01}},
                       "unconfirmed_wait_seconds": UNCONFIRMED_WAIT},
            "lease": {"dsn": self.postgres.dsn, "name": LEASE, "check_seconds": CHECK_SECONDS},
        }
        if self.state_db != "state.db":
            config["work_orders"] = {"photo_dir": "photos"}  # files, which a PostgreSQL state does not hold
            config["alerts"]["receipts_file"] = f"machine-{machine}/notify-receipts.log"
        path = self.tmp / f"gateway-{role}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self, role: str, machine: str = "a") -> LeasedGateway:
        process = LeasedGateway(self.config(role, machine), self.tmp / f"gateway-{role}.log", machine)
        self.processes.append(process)
        return process

    def holder_and_standby(self) -> tuple[LeasedGateway, LeasedGateway]:
        """A holder serving the partition (machine a) and a standby waiting on its lease (machine b)."""
        holder = self.start("holder", "a")
        holder.wait_serving()
        standby = self.start("standby", "b")
        wait_for(standby.waiting, timeout=WAIT, what="the standby waiting for the lease")
        return holder, standby

    def restart_postgres(self, serving: LeasedGateway, waiting: LeasedGateway) -> tuple[LeasedGateway, LeasedGateway, float]:
        """PostgreSQL restarted (its sessions end): the holder fences itself (exit 3), systemd starts it
        again on its machine, and one of the two takes the lease. Returns the new holder, the other
        (waiting), and the real seconds from the restart until the new holder served."""
        started = time.monotonic()
        self.postgres.restart()
        assert serving.process.wait(timeout=WAIT) == 3, serving.log()[-2000:]  # fenced: it lost the lease
        assert "lease lost" in serving.log()
        again = self.start(f"{serving.machine}-restarted-{len(self.processes)}", serving.machine)  # Restart=always
        wait_for(lambda: waiting.holds() or again.holds(), timeout=WAIT, what="a new holder of the lease")
        new, other = (waiting, again) if waiting.holds() else (again, waiting)
        new.wait_serving()
        resumed = time.monotonic() - started
        wait_for(other.waiting, timeout=WAIT, what="the other one waiting as a standby")
        return new, other, resumed

    def close(self) -> None:
        for process in self.processes:
            process.stop()
        self._publisher.disconnect()
        self._publisher.loop_stop()

    # ----------------------------------------------------------------- publishing

    def publish(self, readings: range, forced: list[str]) -> None:
        """Temperature readings numbered `readings` (ten a message), then a `forced` event
        per door named; returns once the broker has acknowledged every message."""
        start = len(self.published.events)
        batch: list[Event] = [
            Reading(id=stable_event_id(SITE_ID, "temp-hall", "temperature", n), site=SITE_ID, device="temp-hall",
                    event_time=self.t0 + timedelta(seconds=n), quantity="temperature", value=20.0 + n % 7, unit="C")
            for n in readings
        ]  # fmt: skip
        for door in forced:
            self.published.forced[door] += 1
            at = self.t0 + timedelta(minutes=40, seconds=start + len(batch))  # later with every event published
            event_id = stable_event_id(SITE_ID, "ctl-gate", door, "forced", at.isoformat())
            batch.append(DoorEvent(id=event_id, site=SITE_ID, device="ctl-gate", event_time=at,
                                   action=DoorAction.FORCED, door=door))
        topic = topics.events_topic(SITE_ID, "agent-a")
        messages = [encode_events(batch[i : i + 10]) for i in range(0, len(batch), 10)]
        infos = [self._publisher.publish(topic, message, qos=1) for message in messages]
        for info in infos:
            info.wait_for_publish(30)
        self.published.events += batch

    # ----------------------------------------------------------------- what is stored

    def stored(self) -> Counter[str]:
        """Event id -> points the historian holds for it (one per stored event)."""
        path = self.tmp / "history.db"
        if not path.exists():
            return Counter()
        db = sqlite3.connect(path, timeout=10)
        try:
            return Counter(event_id for (event_id,) in db.execute("SELECT event_id FROM points"))
        except sqlite3.OperationalError:  # not created yet
            return Counter()
        finally:
            db.close()

    def wait_stored(self) -> None:
        wanted = self.published.ids()
        wait_for(lambda: wanted <= set(self.stored()), timeout=WAIT, what="every published event stored")

    def holders(self) -> int:
        """Sessions holding an advisory lock under the lease's application name, at the server."""
        with psycopg.connect(self.postgres.dsn, autocommit=True) as db:
            row = db.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                " WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = %s",
                (f"warden lease {LEASE}",),
            ).fetchone()
        return int(row[0]) if row else 0

    def repeats_logged(self) -> list[str]:
        """The gateways' log lines of pages sent again after an attempt cut short (gateway/notify.py)."""
        return [line for process in self.processes for line in process.log().splitlines() if "notification sent again" in line]

    def outbox_waiting(self) -> int:
        """Notifications the partition's outbox still holds (all sinks)."""
        db = engines.connect(self.state_db if self.state_db != "state.db" else self.tmp / "state.db")
        try:
            return int(db.execute("SELECT COUNT(*) FROM notification_outbox").fetchone()[0])
        finally:
            db.close()

    def bot_deliveries(self) -> Counter[tuple[str, str, str]]:
        """(change, rule, subject) -> times the group bot was sent it (a message may carry several changes)."""
        found: Counter[tuple[str, str, str]] = Counter()
        for post in self.receiver.received(BOT):
            for text in post.json()["text"]["content"].split("\n\n"):
                change = _BOT_CHANGE.match(text)
                assert change is not None, text
                found[(change["action"], change["rule"], change["subject"])] += 1
        return found

    def opened_deliveries(self) -> dict[str, Counter[str]]:
        """Door -> idempotency key -> webhook posts of its alert's `opened` change."""
        found: dict[str, Counter[str]] = {}
        for post in self.receiver.received(HOOK):
            body = post.json()
            if body["change"] == "opened" and body["alert"]["rule"] == FORCED:
                found.setdefault(body["alert"]["subject"], Counter())[post.headers["Idempotency-Key"]] += 1
        return found


class LeasedGateway:
    """A `warden gateway` process with a lease: started at once, holder or standby as the lease decides."""

    def __init__(self, config: Path, log: Path, machine: str) -> None:
        self.log_path = log
        self.machine = machine
        self.api_port = int(yaml.safe_load(config.read_text())["api"]["port"])
        with log.open("ab") as out:
            command = [*warden_command(), "gateway", "--config", str(config), "--log-level", "INFO"]
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=out)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def holds(self) -> bool:
        return "lease taken" in self.log()

    def waiting(self) -> bool:
        return f"standby: waiting for the lease of {LEASE}" in self.log()

    def connected(self) -> bool:
        try:
            return bool(httpx.get(f"http://127.0.0.1:{self.api_port}/api/health", timeout=1).json().get("connected"))
        except (httpx.HTTPError, ValueError):
            return False

    def wait_serving(self) -> None:
        def serving() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"gateway exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            return self.connected()

        wait_for(serving, timeout=WAIT, what="the gateway holding the lease and connected")

    def alerts(self) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.api_port}/api/alerts"
        return list(httpx.get(url, params={"limit": 5000}, timeout=10).raise_for_status().json())

    def kill(self) -> int:
        self.process.send_signal(signal.SIGKILL)
        return self.process.wait(timeout=10)

    def stop(self) -> None:
        terminate(self.process, timeout=15)


def judge(partition: Partition, serving: LeasedGateway) -> tuple[GroundTruthCheck, dict[str, Any]]:
    """The alerts against the ground truth from what was published: one door_forced alert
    per door forced, its count the `forced` events of that door; and its `opened` change
    delivered to the pager once (one idempotency key; a repeat of the same key is a
    retried delivery a receiver drops, counted apart)."""
    alerts = serving.alerts()  # the gateway serves this one site
    expected = sorted((FORCED, door) for door in partition.published.forced)
    found = sorted((a["rule"], a["subject"]) for a in alerts)
    missing = list((Counter(expected) - Counter(found)).elements())
    extra = list((Counter(found) - Counter(expected)).elements())
    counts = {a["subject"]: a["details"].get("count") for a in alerts if a["rule"] == FORCED}
    deliveries = partition.opened_deliveries()
    facts = {
        "counts_wrong": {d: (counts.get(d), n) for d, n in partition.published.forced.items() if counts.get(d) != n},
        "notified": {d: len(keys) for d, keys in deliveries.items()},
        "repeats": sum(n - 1 for keys in deliveries.values() for n in keys.values()),
    }
    return GroundTruthCheck(expected=expected, found=found, missing=missing, false_pages=extra), facts


def event_counts(partition: Partition) -> tuple[int, int, int, int]:
    """Produced (published), stored at least once, lost, and stored more than once."""
    stored = partition.stored()
    produced = partition.published.ids()
    kept = sum(1 for i in produced if stored[i] >= 1)
    duplicates = sum(n - 1 for i, n in stored.items() if n > 1)
    return len(produced), kept, len(produced) - kept, duplicates


def seconds_until_stored_grows(partition: Partition, since: float) -> float:
    """Real seconds from `since` (monotonic) until the historian holds more than it did now."""
    before = sum(partition.stored().values())
    grown = lambda: sum(partition.stored().values()) > before  # noqa: E731
    wait_for(grown, timeout=WAIT, what="the standby storing its first event")
    return time.monotonic() - since
