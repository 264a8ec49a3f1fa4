"""People in a scenario: who works the night (an API token each) and what they do when,
played against the gateway's real HTTP API on the scenario's accelerated clock.

A scenario's `people` section names the staff (token name, role, a guard's badge) and
their actions in time order: a guard reports a fault from her phone, a plumber takes it,
hands it over, the requester closes and rates it; a plumber turns the night's leak alert
into a work order. Orders are named by a label of the scenario's own (`order: tap`).

The outcome each order must have (state, owner, requester, who closed it, rating, minutes
to take and to close) is derived here from the actions alone, with a table of its own, not
by the gateway's work-order code: it is the ground truth the played night is compared with
(`PeoplePlayer.outcome`, written by `warden demo` as work-orders.json).

Each action runs as a simulation `Interruption` (clock stopped); the accelerated clock may
stand a little past the action's time (the simulator lags it), so it is set back to that
time first: the gateway records what the person did at exactly the scenario's time.
"""

from __future__ import annotations

import logging
import struct
import zlib
from datetime import datetime
from typing import Any, Literal

import httpx
from pydantic import Field, model_validator

from simulators.clock import PausableClock
from simulators.night import Interruption
from simulators.scenario import Scenario, StrictModel, When
from warden.events import Identifier

log = logging.getLogger(__name__)

Do = Literal["report", "from_alert", "take", "start", "wait", "done", "hand_over", "close", "reopen", "note"]
CREATES = frozenset({"report", "from_alert"})
#: The ground truth's own table: action -> the state it leads to (None: unchanged).
_LEADS_TO: dict[str, str | None] = {
    "report": "new", "from_alert": "new", "take": "taken", "start": "in_progress", "wait": "waiting", "done": "done",
    "close": "closed", "reopen": "reopened", "hand_over": None, "note": None,
}


class Person(StrictModel):
    """Someone on the site's staff, with an API token of `role` (gateway/auth.py's roles)."""

    name: Identifier = Field(description="The token's name: who the work-order history names")
    role: Identifier = Field(description="guard, maintenance, manager or admin")
    guard: Identifier | None = Field(default=None, description="role guard: the badge whose alerts they see")


class AlertRef(StrictModel):
    rule: str
    subject: str


class Action(StrictModel):
    """What `who` does at `at` to the order labelled `order`."""

    at: When
    who: Identifier
    do: Do
    order: Identifier = Field(description="The scenario's label for the order; `report`/`from_alert` give it")
    room: str | None = Field(default=None, description="report: where")
    text: str | None = Field(default=None, description="report: what is wrong; from_alert: optional")
    category: str | None = None
    priority: Literal["low", "normal", "high", "urgent"] | None = None
    photo: bool = Field(default=False, description="report: attach a photo taken with the phone")
    alert: AlertRef | None = Field(default=None, description="from_alert: the alert, by rule and subject")
    to: Identifier | None = Field(default=None, description="hand_over: who owns it from now on")
    rating: int | None = Field(default=None, ge=1, le=5, description="close: the service's rating")
    comment: str | None = None
    note: str = ""

    @model_validator(mode="after")
    def _complete(self) -> Action:
        needs = {"report": ("room", "text"), "from_alert": ("alert",), "hand_over": ("to",)}.get(self.do, ())
        missing = [name for name in needs if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{self.do} needs {', '.join(missing)}")
        return self


class People(StrictModel):
    staff: list[Person] = Field(min_length=1)
    actions: list[Action] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> People:
        names = [p.name for p in self.staff]
        if len(set(names)) != len(names):
            raise ValueError("staff: names must be unique")
        created: set[str] = set()
        for n, action in enumerate(self.actions):
            where = f"actions[{n}]"
            for field in ("who", "to"):
                if (name := getattr(action, field)) is not None and name not in names:
                    raise ValueError(f"{where}.{field}: {name!r} is not one of staff ({', '.join(names)})")
            if action.do in CREATES and action.order in created:
                raise ValueError(f"{where}.order: {action.order!r} was created already")
            if action.do not in CREATES and action.order not in created:
                raise ValueError(f"{where}.order: {action.order!r} is not created by an earlier action")
            created.add(action.order)
        return self


class ScenarioWithPeople(Scenario):
    """A scenario whose night also has people acting through the API (optional)."""

    people: People | None = None

    @model_validator(mode="after")
    def _people_in_the_night(self) -> ScenarioWithPeople:
        if self.people is None:
            return self
        times = [self.instant(a.at) for a in self.people.actions]
        for n, at in enumerate(times):
            if not self.start_utc < at < self.end_utc:
                raise ValueError(f"people.actions[{n}].at: not inside the night")
            if n and at < times[n - 1]:
                raise ValueError(f"people.actions[{n}].at: before the action above it (list them in time order)")
        return self


# --------------------------------------------------------------------------- ground truth


def expected_orders(scenario: ScenarioWithPeople) -> dict[str, dict[str, Any]]:
    """Per order label, what the actions imply: state, owner, requester, who closed it, the
    rating, minutes from creation to taken and to closed, and the alert it came from."""
    orders: dict[str, dict[str, Any]] = {}
    created: dict[str, datetime] = {}
    for action in scenario.people.actions if scenario.people else []:
        at = scenario.instant(action.at)
        if action.do in CREATES:
            created[action.order] = at
            orders[action.order] = {
                "state": "new", "owner": None, "requested_by": action.who, "closed_by": None, "rating": None,
                "take_minutes": None, "close_minutes": None,
                "alert": [action.alert.rule, action.alert.subject] if action.alert else None,
            }  # fmt: skip
            continue
        order = orders[action.order]
        minutes = (at - created[action.order]).total_seconds() / 60
        if action.do == "take" or (action.do == "hand_over" and order["state"] in ("new", "reopened")):
            order["state"] = "taken"
            order["take_minutes"] = order["take_minutes"] if order["take_minutes"] is not None else minutes
        if action.do in ("take", "hand_over"):
            order["owner"] = action.who if action.do == "take" else action.to
        elif action.do == "close":
            order.update(closed_by=action.who, rating=action.rating, close_minutes=minutes)
        elif action.do == "reopen":
            order.update(closed_by=None, rating=None, close_minutes=None)
        if (target := _LEADS_TO[action.do]) is not None:
            order["state"] = target
    return orders


def png(width: int = 1, height: int = 1) -> bytes:
    """A valid PNG of red pixels, made from the format's definition (signature, IHDR, IDAT,
    IEND): the phone's photo of the fault, and the tests' uploads."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


# --------------------------------------------------------------------------- playing


class PeoplePlayer:
    """Plays a scenario's people against the API once `attach`ed (base URL and each
    person's token secret)."""

    def __init__(self, scenario: ScenarioWithPeople, clock: PausableClock) -> None:
        if scenario.people is None:
            raise ValueError("the scenario has no people")
        self.scenario, self.people, self.clock = scenario, scenario.people, clock
        self._url: str | None = None
        self._secrets: dict[str, str] = {}
        self.ids: dict[str, int] = {}  # order label -> work order id
        self.alert_ids: dict[str, int] = {}  # order label -> the alert it was made from

    @classmethod
    def of(cls, scenario: Scenario, clock: PausableClock) -> PeoplePlayer | None:
        """A player for a scenario with people, else None."""
        people = getattr(scenario, "people", None)
        return cls(scenario, clock) if isinstance(scenario, ScenarioWithPeople) and people is not None else None

    def interruptions(self) -> list[Interruption]:
        return [Interruption(self.scenario.instant(a.at), f"people: {a.who} {a.do} {a.order}",
                             lambda a=a: self.act(a)) for a in self.people.actions]

    def attach(self, url: str, secrets: dict[str, str]) -> None:
        self._url, self._secrets = url, secrets

    def _client(self, who: str) -> httpx.Client:
        if self._url is None:
            raise RuntimeError("people: the player is not attached to an API")
        return httpx.Client(base_url=self._url, headers={"Authorization": f"Bearer {self._secrets[who]}"}, timeout=30)

    def act(self, action: Action) -> None:
        """Do `action` through the API now, with the clock stopped at (or set back to) its time."""
        at = self.scenario.instant(action.at)
        if self.clock.now() > at:
            self.clock.jump(at)  # paused here: the person acts at the scenario's time, not the simulator's lag
        with self._client(action.who) as client:
            order = self._request(client, action)
        self.ids.setdefault(action.order, int(order["id"]))
        log.info("person acted", extra={"who": action.who, "do": action.do, "order": action.order, "state": order["state"]})

    def _request(self, client: httpx.Client, action: Action) -> dict[str, Any]:
        if action.do == "report":
            body = {"room": action.room, "text": action.text, "category": action.category or "general",
                    "priority": action.priority or "normal"}
            order = _ok(client.post("/api/work-orders", json=body), action)
            if action.photo:
                _ok(client.post(f"/api/work-orders/{order['id']}/photos", content=png(),
                                headers={"Content-Type": "image/png"}), action)
            return order
        if action.do == "from_alert":
            assert action.alert is not None
            alert_id = self._find_alert(client, action.alert, action)
            self.alert_ids[action.order] = alert_id
            body = {k: v for k, v in (("text", action.text), ("category", action.category),
                                      ("priority", action.priority)) if v is not None}
            return _ok(client.post(f"/api/alerts/{alert_id}/work-order", json=body), action)
        order_id = self.ids[action.order]
        if action.do == "hand_over":
            return _ok(client.post(f"/api/work-orders/{order_id}/hand-over", json={"to": action.to, "note": action.note}), action)
        if action.do == "close":
            body = {"note": action.note, "rating": action.rating, "comment": action.comment}
            return _ok(client.post(f"/api/work-orders/{order_id}/close", json=body), action)
        if action.do == "note":
            return _ok(client.post(f"/api/work-orders/{order_id}/notes", json={"note": action.note}), action)
        return _ok(client.post(f"/api/work-orders/{order_id}/{action.do}", json={"note": action.note}), action)

    @staticmethod
    def _find_alert(client: httpx.Client, ref: AlertRef, action: Action) -> int:
        alerts = _ok(client.get("/api/alerts", params={"limit": 5000}), action)
        found = [a for a in alerts if (a["rule"], a["subject"]) == (ref.rule, ref.subject)]
        if not found:
            raise RuntimeError(f"people: {action.who} found no alert {ref.rule} {ref.subject} at {action.at}")
        return int(max(found, key=lambda a: a["opened_at"])["id"])

    def observed(self) -> dict[str, dict[str, Any]]:
        """Per order label, the same fields as `expected_orders`, read back through the API
        (each order as its requester sees it)."""
        out = {}
        requesters = {a.order: a.who for a in self.people.actions if a.do in CREATES}
        for label, order_id in self.ids.items():
            with self._client(requesters[label]) as client:
                order = client.get(f"/api/work-orders/{order_id}").raise_for_status().json()
            closes = [h["who"] for h in order["history"] if h["action"] == "close"]
            alert = None
            if order["alert_id"] is not None:
                ref = next(a.alert for a in self.people.actions if a.order == label and a.alert is not None)
                alert = [ref.rule, ref.subject] if order["alert_id"] == self.alert_ids.get(label) else ["other", str(order["alert_id"])]
            out[label] = {
                "state": order["state"], "owner": order["owner"], "requested_by": order["requested_by"],
                "closed_by": closes[-1] if order["state"] == "closed" and closes else None, "rating": order["rating"],
                "take_minutes": _minutes(order["created_at"], order["taken_at"]),
                "close_minutes": _minutes(order["created_at"], order["closed_at"]), "alert": alert,
                "photos": len(order["photos"]), "history": [(h["who"], h["action"]) for h in order["history"]],
            }  # fmt: skip
        return out

    def outcome(self) -> dict[str, Any]:
        """Expected and observed orders, and whether they agree (work-orders.json)."""
        expected, observed = expected_orders(self.scenario), self.observed()
        fields = ("state", "owner", "requested_by", "closed_by", "rating", "take_minutes", "close_minutes", "alert")
        differences = [f"{label}.{f}: expected {want[f]!r}, got {observed.get(label, {}).get(f)!r}"
                       for label, want in expected.items() for f in fields if observed.get(label, {}).get(f) != want[f]]
        return {"ok": not differences, "differences": differences, "expected": expected, "observed": observed}


def _ok(response: httpx.Response, action: Action) -> Any:
    if response.status_code >= 400:
        raise RuntimeError(f"people: {action.who} could not {action.do} {action.order} at {action.at}: "
                           f"{response.status_code} {response.text}")
    return response.json()


def _minutes(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() / 60
