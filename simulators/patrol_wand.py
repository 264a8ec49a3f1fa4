"""A simulated offline patrol wand and its dock (docs/protocols/patrol-wand.md).

The wand records taps in its memory during a round; `dock()` does what the dock
software does when the wand is put in its cradle: it writes all stored taps as one
batch file into the agent's spool folder, atomically (a hidden temporary name, then a
rename), and clears the wand's memory. `dock(clear=False)` keeps the memory, so the next
dock uploads the same taps again, as a wand does whose upload was not confirmed.

It writes the JSON itself on purpose, without the agent's parser's models: a bug
shared by both sides would otherwise go unnoticed. Tests hold both to the documented example.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

FORMAT = "warden.wand-batch"
VERSION = 1

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


@dataclass(frozen=True)
class StoredTap:
    seq: int
    tag: str
    guard: str | None
    time: datetime


def rfc3339(at: datetime) -> str:
    """UTC with a Z, second resolution, as the wand's clock keeps time."""
    if at.tzinfo is None:
        raise ValueError("wand times must be timezone-aware")
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class PatrolWandSim:
    """One wand; `seq` counts every tap it ever stored (it is not reset by an upload)."""

    def __init__(self, wand: str = "W07", *, first_seq: int = 1) -> None:
        if not _ID.fullmatch(wand):
            raise ValueError(f"wand id {wand!r} is not an identifier")
        self.wand = wand
        self.seq = first_seq
        self.memory: list[StoredTap] = []
        self.uploads = 0

    def tap(self, tag: str, guard: str | None, at: datetime) -> StoredTap:
        for value, what in ((tag, "tag"), (guard, "guard")):
            if value is not None and not _ID.fullmatch(value):
                raise ValueError(f"{what} {value!r} is not an identifier")
        stored = StoredTap(self.seq, tag, guard, at.replace(microsecond=0))
        self.memory.append(stored)
        self.seq += 1
        return stored

    def batch(self, uploaded_at: datetime) -> bytes:
        """The exact bytes the dock writes for the taps in memory."""
        taps = []
        for t in self.memory:
            entry: dict[str, object] = {"seq": t.seq, "tag": t.tag}
            if t.guard is not None:
                entry["guard"] = t.guard
            entry["time"] = rfc3339(t.time)
            taps.append(entry)
        document = {"format": FORMAT, "version": VERSION, "wand": self.wand, "uploaded_at": rfc3339(uploaded_at), "taps": taps}
        return (json.dumps(document, indent=2) + "\n").encode("utf-8")

    def dock(self, spool_dir: Path, uploaded_at: datetime, *, clear: bool = True) -> Path:
        """Upload the memory as one batch file in `spool_dir`; return its final path."""
        self.uploads += 1
        final = deliver(spool_dir, self.batch_name(uploaded_at, self.uploads), self.batch(uploaded_at))
        if clear:
            self.memory.clear()
        return final

    def batch_name(self, uploaded_at: datetime, upload: int) -> str:
        """`<wand>-<YYYYMMDDTHHMMSSZ>-<n>.json`: names sort in upload order."""
        return f"{self.wand}-{rfc3339(uploaded_at).replace('-', '').replace(':', '')}-{upload}.json"


def deliver(spool_dir: Path, name: str, data: bytes) -> Path:
    """Hand a batch file over as the dock does: a hidden name, flushed, then renamed."""
    final = spool_dir / name
    staging = spool_dir / f".{name}.tmp"
    spool_dir.mkdir(parents=True, exist_ok=True)
    with open(staging, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, final)  # the agent sees the whole file or none of it
    return final
