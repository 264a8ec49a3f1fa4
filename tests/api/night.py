"""A known night at a small school, run through the real rules into a state DB and a
SQLite historian, without a broker: the input of the morning-report tests.

Night of Tuesday 17 November 2026, Europe/Berlin (UTC+1), tariff 0.32 EUR/kWh:

- AC A-204 draws 1200 W from 19:00 to 20:00: 1.20 kWh, 0.384 EUR.
- AC A-101 draws 800 W from 22:00 to 22:30, then falls silent: 0.40 kWh, 0.128 EUR, and
  a deadman alert at 22:45.
- Water meter wm-1 (B-WC) runs at 1.0 L/min all night: a night-flow leak, 180 L lost in
  02:00-05:00; 835 L over the night (readings 18:00-07:55).
- Door gate-main forced at 01:12; door lab used after hours at 19:12 (resolved 07:30).
- Route north (cp-gate, cp-hall, cp-204; 23:30 and 02:00), walked by guard-lee: the 23:30
  round misses cp-204, the 02:00 round taps it 5 min late. Route south (cp-yard, 03:00,
  guard-kim) is not walked at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from gateway.config import GatewayConfig
from gateway.historian.sqlite import SqliteHistorian
from gateway.store import StateStore
from rules.config import RulesConfig
from rules.engine import RuleEngine
from warden.config import SiteConfig
from warden.events import DoorEvent, Event, PatrolTap, Reading, stable_event_id

NIGHT = "2026-11-17"
START = datetime(2026, 11, 17, 17, 0, tzinfo=timezone.utc)  # 18:00 local
END = datetime(2026, 11, 18, 7, 0, tzinfo=timezone.utc)  # 08:00 local

SITE_DOC = {
    "id": "riverside",
    "name": "Riverside School",
    "timezone": "Europe/Berlin",
    "tariff": {"energy_per_kwh": 0.32, "currency": "EUR"},
    "schedules": {"school-day": [{"days": "mon-fri", "hours": "07:30-18:00"}]},
    "buildings": [
        {"id": "A", "rooms": [
            {"id": "A-101", "schedule": "school-day", "devices": ["ac-a101"]},
            {"id": "A-204", "schedule": "school-day", "devices": ["ac-a204", "lab-ctl"]},
            {"id": "A-GATE", "devices": ["patrol-reader-1", "gate-ctl"]},
        ]},
        {"id": "B", "rooms": [{"id": "B-WC", "devices": ["wm-1"]}]},
    ],
}
RULES_DOC = {
    "patrol": {"routes": [
        {"id": "north", "checkpoints": ["cp-gate", "cp-hall", "cp-204"], "rounds": ["23:30", "02:00"]},
        {"id": "south", "checkpoints": ["cp-yard"], "rounds": ["03:00"], "guard": "guard-kim"},
    ]},
}
SITE = SiteConfig.model_validate(SITE_DOC)
RULES = RulesConfig.model_validate(RULES_DOC)


def local(hour: int, minute: int = 0, second: int = 0) -> datetime:
    """A local time of the night (hours before 12 are the next morning), in UTC."""
    day = 18 if hour < 12 else 17
    return datetime(2026, 11, day, hour, minute, second, tzinfo=timezone.utc) - timedelta(hours=1)


def _every(start: datetime, end: datetime, minutes: int = 5) -> Iterator[datetime]:
    at = start
    while at < end:
        yield at
        at += timedelta(minutes=minutes)


def power(device: str, at: datetime, watts: float) -> Reading:
    return Reading(id=stable_event_id("riverside", device, "p", at.isoformat()), site="riverside", device=device,
                   event_time=at, quantity="power", value=watts, unit="W")


def flow(at: datetime, l_per_min: float) -> Reading:
    return Reading(id=stable_event_id("riverside", "wm-1", "f", at.isoformat()), site="riverside", device="wm-1",
                   event_time=at, quantity="flow", value=l_per_min, unit="L/min")


def door(controller: str, door_id: str, action: str, at: datetime) -> DoorEvent:
    return DoorEvent(id=stable_event_id("riverside", controller, action, at.isoformat()), site="riverside",
                     device=controller, event_time=at, action=action, door=door_id, card="0042")


def tap(tag: str, at: datetime) -> PatrolTap:
    return PatrolTap(id=stable_event_id("riverside", "tap", tag, at.isoformat()), site="riverside",
                     device="patrol-reader-1", event_time=at, reader="patrol-reader-1", tag=tag, guard="guard-lee")


def events() -> list[Event]:
    found: list[Event] = []
    for at in _every(START, END + timedelta(minutes=10)):
        found.append(power("ac-a204", at, 1200 if local(19) <= at < local(20) else 0))
        found.append(flow(at, 1.0))
        if at <= local(22, 30):
            found.append(power("ac-a101", at, 800 if local(22) <= at < local(22, 30) else (40 if at == local(22, 30) else 0)))
    found += [
        door("lab-ctl", "lab", "granted", local(19, 12)), door("lab-ctl", "lab", "opened", local(19, 12, 4)),
        door("lab-ctl", "lab", "closed", local(19, 12, 30)),
        door("gate-ctl", "gate-main", "forced", local(1, 12)), door("gate-ctl", "gate-main", "closed", local(1, 15)),
        tap("cp-gate", local(23, 35)), tap("cp-hall", local(23, 45)),
        tap("cp-gate", local(2, 5)), tap("cp-hall", local(2, 12)), tap("cp-204", local(2, 35)),
    ]
    return sorted(found, key=lambda e: e.event_time)


@dataclass(frozen=True)
class NightFiles:
    state_db: Path
    history_db: Path
    site_file: Path
    gateway_file: Path


def run_night(folder: Path) -> NightFiles:
    """Feed the night through the rules minute by minute, as the gateway would."""
    folder.mkdir(parents=True, exist_ok=True)
    files = NightFiles(folder / "state.db", folder / "history.db", folder / "site.yaml", folder / "gateway.yaml")
    store, history = StateStore(files.state_db), SqliteHistorian(files.history_db, SITE)
    engine = RuleEngine(SITE, RULES)
    pending = events()
    try:
        for now in _every(START - timedelta(minutes=5), END + timedelta(minutes=10), minutes=1):
            due = [e for e in pending if e.event_time <= now]
            pending = pending[len(due):]
            history.write(due)
            signals = [s for e in due for s in engine.on_event(e)] + engine.on_tick(now)
            store.commit_batch([e.id for e in due], signals, engine.snapshot())
    finally:
        store.close()
        history.close()
    files.site_file.write_text(yaml.safe_dump(SITE_DOC))
    files.gateway_file.write_text(yaml.safe_dump({
        "site_file": "site.yaml", "state_db": "state.db",
        "historian": {"type": "sqlite", "path": "history.db"}, "rules": RULES_DOC,
    }))
    GatewayConfig.model_validate({"site_file": str(files.site_file), "rules": RULES_DOC})  # a valid config
    return files
