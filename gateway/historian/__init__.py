"""The gateway's time-series storage: SQLite for the demo and small sites, InfluxDB
(or anything speaking its v2 write API) for the rest. See docs/storage.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from gateway.config import HistorianConfig, InfluxHistorianConfig, SqliteHistorianConfig
from gateway.historian.points import Point, Sites, event_point, event_points
from warden.events import Event

__all__ = ["Historian", "Point", "event_point", "event_points", "open_historian"]


@runtime_checkable
class Historian(Protocol):
    """Where validated events end up as points. Methods may be called from any thread."""

    def write(self, events: Sequence[Event]) -> str | None:
        """Store events durably before returning: in the database (SQLite) or in the
        on-disk spool the forwarder sends to the server from (InfluxDB).

        The gateway writes each event id once (its seen ids are committed after the
        write). What a crash between the two leaves behind is handled by position:
        SQLite returns its position after the write, which the gateway commits with the
        batch and later passes to discard_after; InfluxDB returns None, because storing
        the same series and timestamp again overwrites the point.
        """
        ...

    def position(self) -> str | None:
        """Where the history ends now (what write() returns), or None without positions."""
        ...

    def discard_after(self, position: str) -> int:
        """Delete the points written after `position` (a value write() returned); how many."""
        ...

    def flush(self) -> None:
        """Block until everything written so far is stored, or has failed and been counted."""
        ...

    def close(self) -> None:
        """Release connections and threads (InfluxDB: unsent points stay spooled for the
        next start). Writing afterwards is an error."""
        ...

    def stats(self) -> dict[str, float]:
        """Counters for health pages and metrics, e.g. points_written, points_failed."""
        ...


def open_historian(config: HistorianConfig, site: Sites) -> Historian:
    """Build the historian the gateway config asks for."""
    if isinstance(config, SqliteHistorianConfig):
        from gateway.historian.sqlite import SqliteHistorian

        return SqliteHistorian(config.path, site)
    if isinstance(config, InfluxHistorianConfig):
        from gateway.historian.influx import InfluxHistorian  # imports reactivex: only when used

        return InfluxHistorian(config, site)
    raise TypeError(f"unknown historian config: {type(config).__name__}")
