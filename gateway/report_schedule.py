"""Reports on a schedule: the daily report (日报) at a local time each day, the monthly
report on the 1st; each archived as files and sent to configured sinks of `alerts.sinks`
(mail with the HTML inline, webhook with the JSON), durably: what is due is written to
`report_sends` in state.db first and removed from it only when delivered, so a send
interrupted by a restart or an unreachable receiver is retried, with the same key.

Only the latest due report of each kind is made: a gateway that was down for a week
sends last night's report, not seven (past days stay available from the API and CLI).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from gateway import db as engines
from warden.config import ConfigPath, StrictModel, wall_time
from warden.events import Identifier

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS report_sends (
    kind TEXT NOT NULL, label TEXT NOT NULL, sink TEXT NOT NULL,
    created_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, error TEXT,
    PRIMARY KEY (kind, label, sink));
CREATE TABLE IF NOT EXISTS report_archive (
    kind TEXT NOT NULL, label TEXT NOT NULL, folder TEXT NOT NULL, made_at TEXT NOT NULL,
    site TEXT NOT NULL DEFAULT '',  -- issue 21: whose report (a school's token reads its own only)
    PRIMARY KEY (kind, label));
"""

#: The tables SCHEMA makes (gateway/state_copy.py copies them).
TABLES = ("report_sends", "report_archive")


class ReportSendConfig(StrictModel):
    """When reports are made, archived and sent (gateway/report_schedule.py)."""

    daily_at: time | None = Field(default=None, description="Local time the daily report is made and sent; null: never")
    monthly_at: time | None = Field(default=None, description="Local time on the 1st the previous month's report is sent")
    sinks: list[Identifier] = Field(default_factory=list, description="Names of alerts.sinks (webhook, smtp) to send to")
    archive_dir: ConfigPath = Path("data/reports")
    retry_seconds: float = Field(default=60.0, gt=0, description="Real seconds between checks and retries")

    @field_validator("daily_at", "monthly_at", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        return value if value is None else wall_time(value)


@dataclass(frozen=True)
class Made:
    """A report made and archived: what the sinks get."""

    kind: str  # "daily" or "monthly"
    label: str  # "2026-11-17" or "2026-11"
    folder: Path
    html: str
    summary: dict[str, Any]


def create_schema(db: sqlite3.Connection, site: str | None = None) -> None:
    """The tables; an archive from before issue 21 gets its site column: a label "<site>/<label>"
    names its site, a plain label is `site`'s (the one site the gateway served; none: '', which
    only tokens seeing every site read)."""
    db.executescript(SCHEMA)
    if "site" not in engines.table_columns(db, "report_archive"):
        _add_site(db, site)


def _add_site(db: sqlite3.Connection, site: str | None) -> None:
    """Checked again under the write lock, so two processes opening one database do not both migrate."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if "site" not in engines.table_columns(db, "report_archive"):
            db.execute("ALTER TABLE report_archive ADD COLUMN site TEXT NOT NULL DEFAULT ''")
            for kind, label in db.execute("SELECT kind, label FROM report_archive").fetchall():
                owner = label.split("/", 1)[0] if "/" in label else site or ""
                db.execute("UPDATE report_archive SET site = ? WHERE kind = ? AND label = ?", (owner, kind, label))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class ThreadConnections:
    """A connection to `path` (or a postgresql:// URL, gateway/db.py) per calling thread, where
    `with db:` is one transaction, for the scheduler's own thread; close() closes them all
    once the threads using them are done (the gateway's stop), so none is left open."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self._local = threading.local()
        self._opened: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            if engines.is_postgres_url(self.path):
                db = engines.connect(self.path)
            else:  # closed by close() from the stopping thread: never used by two threads at once
                db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
                db.row_factory = sqlite3.Row  # by index as before, and by name (gateway/db.py table_columns)
                db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
            with self._lock:
                self._opened.append(db)
        return db  # type: ignore[no-any-return]

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        self._local = threading.local()
        for db in opened:
            db.close()


def connections(path: Path | str) -> ThreadConnections:
    return ThreadConnections(path)


def due(config: ReportSendConfig, zone: Any, day_start: time, now: datetime) -> list[tuple[str, str]]:
    """The (kind, label) reports due at `now`: the day that ended at the last day boundary
    once `daily_at` has passed, and last month once `monthly_at` has passed on the 1st."""
    local = now.astimezone(zone)
    out = []
    if config.daily_at is not None and local.time() >= config.daily_at:
        ended = local.date() - timedelta(days=1) if local.time() >= day_start else local.date() - timedelta(days=2)
        out.append(("daily", ended.isoformat()))
    if config.monthly_at is not None and (local.day > 1 or local.time() >= config.monthly_at):
        first = local.date().replace(day=1)
        previous = first - timedelta(days=1)
        out.append(("monthly", f"{previous.year:04d}-{previous.month:02d}"))
    return out


class ReportScheduler:
    """Makes due reports (`make(kind, label) -> Made`, given by the gateway), archives them
    and delivers them through `senders` (sink name -> callable taking a Made and a key)."""

    def __init__(self, db: Callable[[], sqlite3.Connection], config: ReportSendConfig, site_id: str,
                 make: Callable[[str, str], Made], senders: dict[str, Callable[[Made, str], None]],
                 scoped: bool = False) -> None:
        """`scoped`: one of several sites' schedulers sharing the tables (issue 21): its rows'
        labels are "<site>/<label>", so each site's reports are made and sent once."""
        self.db, self.config, self.site_id, self.make, self.senders = db, config, site_id, make, senders
        self._prefix = f"{site_id}/" if scoped else ""
        create_schema(db(), None if scoped else site_id)

    def close(self) -> None:
        """Close the scheduler's connections (after its thread has stopped)."""
        close = getattr(self.db, "close", None)
        if close is not None:
            close()

    def _queued(self) -> list[tuple[str, str, str]]:
        """This scheduler's rows of report_sends, oldest first (the unscoped: labels without a site)."""
        rows = self.db().execute("SELECT kind, label, sink FROM report_sends ORDER BY created_at").fetchall()
        return [row for row in rows if (row[1].startswith(self._prefix) if self._prefix else "/" not in row[1])]

    def run_due(self, due_now: list[tuple[str, str]], now: datetime) -> list[Made]:
        """Make and archive what is due and not yet archived, queue its sends, and try every
        queued send once. Returns the reports made now."""
        made = []
        for kind, label in due_now:
            if self.archived(kind, label) is not None:
                continue
            report = self.make(kind, label)
            db = self.db()
            with db:
                db.execute("INSERT INTO report_archive (kind, label, folder, made_at, site) VALUES (?, ?, ?, ?, ?)"
                           " ON CONFLICT (kind, label) DO UPDATE SET folder = excluded.folder, made_at = excluded.made_at",
                           (kind, self._prefix + label, str(report.folder), now.isoformat(), self.site_id))
                db.executemany("INSERT INTO report_sends (kind, label, sink, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                               [(kind, self._prefix + label, sink, now.isoformat()) for sink in self.config.sinks])
            log.info("report made", extra={"kind": kind, "label": label, "folder": str(report.folder)})
            made.append(report)
        self.deliver()
        return made

    def deliver(self) -> int:
        """Try each queued send once; how many got through."""
        db = self.db()
        delivered = 0
        for kind, stored, sink in self._queued():
            label = stored.removeprefix(self._prefix)
            send = self.senders.get(sink)
            folder = self.archived(kind, label)
            if send is None or folder is None:
                continue
            key = f"report-{self.site_id}-{kind}-{label}-{sink}"
            try:
                send(load_archived(kind, label, folder), key)
            except Exception as exc:  # noqa: BLE001 - a receiver's failure waits for the next try
                with db:
                    db.execute("UPDATE report_sends SET attempts = attempts + 1, error = ?"
                               " WHERE kind = ? AND label = ? AND sink = ?", (str(exc)[:500], kind, stored, sink))
                log.warning("report not delivered; retried later",
                            extra={"kind": kind, "label": label, "sink": sink, "error": str(exc)[:200]})
                continue
            with db:
                db.execute("DELETE FROM report_sends WHERE kind = ? AND label = ? AND sink = ?", (kind, stored, sink))
            delivered += 1
        return delivered

    def archived(self, kind: str, label: str) -> Path | None:
        row = self.db().execute("SELECT folder FROM report_archive WHERE kind = ? AND label = ?",
                                (kind, self._prefix + label)).fetchone()
        return None if row is None else Path(row[0])

    def pending(self) -> int:
        return len(self._queued())


def archive_list(db: sqlite3.Connection, sites: list[str], only: str | None = None) -> list[dict[str, str]]:
    """The archived reports of `sites`, newest first, each with its site and its label without the
    site prefix a scheduler of several sites stores. `only`: the gateway's one site (migrates an old archive)."""
    create_schema(db, only)
    rows = db.execute("SELECT kind, label, made_at, site FROM report_archive"
                      f" WHERE site IN ({_site_list(db)})"
                      " ORDER BY made_at DESC, label DESC", (json.dumps(sites),))
    return [{"kind": r[0], "label": r[1].removeprefix(f"{r[3]}/"), "site": r[3], "made_at": r[2]} for r in rows]


def _site_list(db: sqlite3.Connection) -> str:
    """The values of one JSON-array parameter, as a subquery, on either engine."""
    if engines.dialect(db) == "postgres":
        return "SELECT value FROM jsonb_array_elements_text(?::jsonb) AS value"
    return "SELECT value FROM json_each(?)"


def archive_folder(db: sqlite3.Connection, kind: str, label: str, site: str, only: str | None = None) -> Path | None:
    """The folder of site `site`'s archived report (stored as `label` or "<site>/<label>")."""
    create_schema(db, only)
    row = db.execute("SELECT folder FROM report_archive WHERE kind = ? AND site = ? AND label IN (?, ?)",
                     (kind, site, label, f"{site}/{label}")).fetchone()
    return None if row is None else Path(row[0])


def archived_html(folder: Path, kind: str) -> Path:
    return folder / ("report.html" if kind == "daily" else f"month-{folder.name}.html")


def load_archived(kind: str, label: str, folder: Path) -> Made:
    """A report as archived (sends after a restart read the files, not memory)."""
    summary_file = folder / ("report.json" if kind == "daily" else f"month-{label}.json")
    data = json.loads(summary_file.read_text(encoding="utf-8"))
    if kind == "daily":
        summary = data.get("summary", {})
    else:
        summary = {"site_totals": data.get("site_totals"), "groups": data.get("groups")}
    if kind == "daily" and "repair_requests" in data:
        summary = {**summary, "repair_requests": data["repair_requests"]}
    return Made(kind, label, folder, archived_html(folder, kind).read_text(encoding="utf-8"), summary)


def webhook_body(made: Made, site_id: str, key: str) -> bytes:
    return json.dumps({"type": "report", "kind": made.kind, "label": made.label, "site": site_id,
                       "summary": made.summary, "idempotency_key": key}, sort_keys=True, default=str).encode()


def report_mail(made: Made, site_id: str, key: str, sender: str, to: list[str], prefix: str) -> EmailMessage:
    """The mail: a plain-text line and the report's HTML inline (an alternative part)."""
    mail = EmailMessage()
    mail["Message-ID"] = f"<{key}@warden>"
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    name = "daily report" if made.kind == "daily" else "monthly report"
    mail["Subject"] = f"{prefix} {site_id} {name} {made.label}".strip()
    mail.set_content(f"The {name} of {site_id} for {made.label}; open the HTML part to read it.")
    mail.add_alternative(made.html, subtype="html")
    return mail


def first_of_month(day: date) -> date:
    return day.replace(day=1)
