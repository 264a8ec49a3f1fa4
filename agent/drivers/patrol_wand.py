"""Offline patrol wands: a wand stores taps on its round and, docked, its dock drops
them as one batch file in a spool folder (docs/protocols/patrol-wand.md).

The file is the dock's acknowledgement channel: the driver moves a batch out of the
spool folder only after every tap in it is in the agent's outbox on disk. A crash or
`kill -9` in between leaves the file where it is, and the next run reads it again; the
taps get the same ids, so the gateway drops the copies. Nothing a dock delivered is lost.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from agent.drivers.base import Driver, DriverCounters, DriverHost, Emit
from agent.drivers.registry import DriverSpec
from warden.clock import Clock
from warden.config import ConfigPath, StrictModel
from warden.events import Identifier, PatrolTap, TapSource, stable_event_id

log = logging.getLogger(__name__)

FORMAT = "warden.wand-batch"
VERSION = 1
DONE, REJECTED = "done", "rejected"


class PatrolWandDevice(StrictModel):
    """A dock for offline patrol wands that drops batch files in a spool folder
    (docs/protocols/patrol-wand.md)."""

    driver: Literal["patrol_wand"]
    id: Identifier
    spool_dir: ConfigPath = Field(description="Folder the dock writes batch files (*.json) to")
    poll_seconds: float = Field(default=2.0, gt=0)
    keep_files: bool = Field(default=True, description="Move processed batches to done/ (false: delete them)")
    max_file_bytes: int = Field(default=10 * 1024 * 1024, gt=0)


# --------------------------------------------------------------------------- format


class _Lenient(BaseModel):
    """Docks may add fields of their own (battery, firmware); they are ignored, not refused."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class WandTap(_Lenient):
    seq: int = Field(ge=0, le=2**32 - 1)
    tag: Identifier
    guard: Identifier | None = None
    time: AwareDatetime


class BatchHeader(_Lenient):
    format: str
    version: int
    wand: Identifier
    uploaded_at: AwareDatetime | None = None
    taps: list[Any]


class BatchError(ValueError):
    """A file that is not a batch at all; `reason` names it for the counters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Batch:
    wand: str
    taps: list[WandTap]
    bad_taps: list[tuple[int, str]]  # index in the file, why


def parse_batch(data: bytes) -> Batch:
    """Parse one batch file; whole-file faults raise BatchError, bad taps are listed."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BatchError("not_json", str(exc)) from None
    if not isinstance(document, dict):
        raise BatchError("bad_batch", f"expected a JSON object, got {type(document).__name__}")
    try:
        header = BatchHeader.model_validate(document)
    except ValidationError as exc:
        raise BatchError("bad_batch", _first_error(exc)) from None
    if header.format != FORMAT or header.version != VERSION:
        raise BatchError("bad_batch", f"expected format {FORMAT!r} version {VERSION}, got {header.format!r} {header.version}")
    taps, bad = [], []
    for index, raw in enumerate(header.taps):
        try:
            taps.append(WandTap.model_validate(raw))
        except ValidationError as exc:
            bad.append((index, _first_error(exc)))
    return Batch(wand=header.wand, taps=taps, bad_taps=bad)


def tap_event_id(site: str, wand: str, tap: WandTap) -> str:
    """Independent of the dock: the same wand memory read through any dock is one tap."""
    return stable_event_id(site, "wand", wand, tap.seq, tap.time.astimezone(timezone.utc).isoformat())


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "document"
    return f"{where}: {error['msg']}"


# --------------------------------------------------------------------------- driver


class PatrolWandDriver:
    """Scans the spool folder every `poll_seconds`; batches are handled oldest name first."""

    def __init__(self, config: PatrolWandDevice, site: str, emit: Emit, clock: Clock) -> None:
        self.config = config
        self.site = site
        self.device_id = config.id
        self.counters = DriverCounters()
        self.batches = 0  # batch files fully handled (health, and lets tests wait)
        self._emit = emit
        self._clock = clock
        self._stuck: set[tuple[str, int, int]] = set()  # handled but could not be moved away

    @property
    def spool(self) -> Path:
        return self.config.spool_dir

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.scan(stop)
            if self._clock.wait(stop, self.config.poll_seconds):
                break

    def scan(self, stop: threading.Event | None = None) -> int:
        """Handle every complete batch waiting in the folder; return how many."""
        try:
            for folder in (self.spool, self.spool / DONE, self.spool / REJECTED):
                folder.mkdir(parents=True, exist_ok=True)
            names = sorted(e.name for e in os.scandir(self.spool) if _is_batch_name(e.name) and e.is_file())
        except OSError as exc:
            self._spool_error("list", self.spool, exc)
            return 0
        handled = 0
        for name in names:
            if stop is not None and stop.is_set():
                break
            handled += self._handle(self.spool / name)
        return handled

    def _handle(self, path: Path) -> int:
        try:
            stat = path.stat()
            key = (path.name, stat.st_size, stat.st_mtime_ns)
            if key in self._stuck:
                return 0
            if stat.st_size > self.config.max_file_bytes:
                raise BatchError("too_large", f"{stat.st_size} bytes, limit {self.config.max_file_bytes}")
            batch = parse_batch(path.read_bytes())
        except FileNotFoundError:
            return 0  # taken away by someone else between listing and reading
        except OSError as exc:
            self._spool_error("read", path, exc)
            return 0
        except BatchError as exc:
            self._reject(path, key, exc)
            return 1
        try:
            self._forward(path, batch)
        except (OSError, sqlite3.Error) as exc:  # the outbox cannot take it (disk full...)
            self.counters.count_error("queue_error")
            log.error(
                "wand batch %s: cannot queue its taps (%s); keeping the file, retrying in %gs",
                path.name,
                exc,
                self.config.poll_seconds,
                extra={"device": self.device_id, "file": str(path), "reason": "queue_error", "error": str(exc)},
            )
            return 0
        self._put_away(path, key)
        self.batches += 1
        return 1

    def _forward(self, path: Path, batch: Batch) -> None:
        now = self._clock.now()
        for index, reason in batch.bad_taps:
            self.counters.count_error("bad_tap")
            log.warning(
                "wand batch %s: dropped tap %d: %s",
                path.name,
                index,
                reason,
                extra={"device": self.device_id, "file": str(path), "wand": batch.wand, "index": index, "reason": "bad_tap"},
            )
        for tap in batch.taps:
            self._emit(
                PatrolTap(
                    id=tap_event_id(self.site, batch.wand, tap),
                    site=self.site,
                    device=self.device_id,
                    event_time=tap.time,
                    receive_time=now,
                    reader=batch.wand,
                    tag=tap.tag,
                    guard=tap.guard,
                    source=TapSource.WAND,
                )
            )
            self.counters.count_event(now)
        log.info(
            "wand batch %s: forwarded %d taps",
            path.name,
            len(batch.taps),
            extra={"device": self.device_id, "file": str(path), "wand": batch.wand, "taps": len(batch.taps), "bad_taps": len(batch.bad_taps)},
        )

    def _put_away(self, path: Path, key: tuple[str, int, int]) -> None:
        """Only now, with every tap on disk in the outbox, does the batch leave the spool."""
        try:
            if self.config.keep_files:
                os.replace(path, self.spool / DONE / path.name)
            else:
                path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            self._stuck.add(key)  # do not forward it again every scan while this process lives
            self._spool_error("move", path, exc)

    def _reject(self, path: Path, key: tuple[str, int, int], exc: BatchError) -> None:
        self.counters.count_error(exc.reason)
        log.warning(
            "wand batch %s rejected: %s",
            path.name,
            exc,
            extra={"device": self.device_id, "file": str(path), "reason": exc.reason},
        )
        try:
            os.replace(path, self.spool / REJECTED / path.name)
        except OSError as move_error:
            self._stuck.add(key)
            self._spool_error("move", path, move_error)

    def _spool_error(self, action: str, path: Path, exc: OSError) -> None:
        self.counters.count_error("spool_error")
        log.warning(
            "wand spool %s: cannot %s %s (%s); retrying in %gs",
            self.spool,
            action,
            path,
            exc,
            self.config.poll_seconds,
            extra={"device": self.device_id, "file": str(path), "reason": "spool_error", "error": str(exc)},
        )


def _is_batch_name(name: str) -> bool:
    """Complete batches only: the dock writes `.name.tmp` and renames it to `name.json`."""
    return name.endswith(".json") and not name.startswith(".")


def _build(device: PatrolWandDevice, host: DriverHost) -> Driver:
    return PatrolWandDriver(device, host.site, host.emit, host.clock)


DRIVER = DriverSpec(model=PatrolWandDevice, build=_build)
