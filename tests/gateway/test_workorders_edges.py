"""Repair requests at their edges, judged against how a facilities office works: the 24-hour
promise over a weekend, a holiday and a daylight-saving change (clock hours, the same instant
for escalation, the overdue gauge and the daily report), a request reopened by its requester,
a hand-over handed back, and two people taking one request at the same instant over real HTTP
on SQLite and on PostgreSQL. Every expected time is written out by hand from the scenario."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from gateway.auth import hash_token
from gateway.config import EscalationConfig
from gateway.escalation import EscalationPolicy, overdue
from gateway.monthly import build_monthly_report
from gateway.store import StateStore
from gateway.workorders import WorkOrderConfig, WorkOrderConflict, WorkOrderForbidden, WorkOrders, as_alert_change, day_counts
from rules.alerts import AlertSignal, Severity, SignalAction
from tests.api.conftest import SITE, TOKENS, Running, gateway_config, start
from tests.support.state_db import state_db  # noqa: F401  (the fixture: once per engine)
from warden.clock import ManualClock
from warden.config import BrokerConfig

SHANGHAI, BERLIN = ZoneInfo("Asia/Shanghai"), ZoneInfo("Europe/Berlin")
LADDER = EscalationConfig.model_validate({"levels": [["desk"], ["manager"], ["director"]]})


def sqlite_orders(tmp_path: Path, clock: ManualClock) -> WorkOrders:
    StateStore(tmp_path / "state.db").close()
    return WorkOrders(tmp_path / "state.db", WorkOrderConfig(photo_dir=tmp_path / "photos"), "riverside", clock)


def judged_overdue(orders: WorkOrders, tmp_path: Path, order_id: int, at: datetime) -> tuple[bool, bool, bool]:
    """(escalation due, overdue gauge, daily report's overdue count > 0) at `at`: the three must agree."""
    order = orders.get(order_id)
    db = sqlite3.connect(tmp_path / "state.db")
    try:
        counted = day_counts(db, at - timedelta(days=3), at)
    finally:
        db.close()
    assert counted is not None
    return EscalationPolicy(LADDER).due_work_order(order, at) is not None, overdue(order, at), counted["overdue"] > 0


def monthly_overdue(tmp_path: Path, at: datetime) -> int:
    """Overdue repair requests in November 2026's monthly report, made at `at`."""
    store = StateStore(tmp_path / "state.db")
    try:
        [row] = build_monthly_report(store, SITE, "2026-11", generated_at=at)["work_orders_site"]
    finally:
        store.close()
    return int(row["overdue"])


def test_the_24_hour_promise_is_clock_hours_over_a_holiday_weekend(tmp_path: Path) -> None:
    # Friday 2026-10-02, a National Day holiday, 17:00 in Shanghai = 09:00 UTC; the next two days
    # are the weekend and Sunday 2026-10-11 a make-up workday: none of that pauses the promise,
    # which is 24 clock hours (docs/api.md "Deadlines"): resolve by Saturday 09:00 UTC = 17:00 local.
    clock = ManualClock(datetime(2026, 10, 2, 17, 0, tzinfo=SHANGHAI))
    orders = sqlite_orders(tmp_path, clock)
    order = orders.create(room="A-204", text="水龙头一直在滴水 💧", by="guard").order
    assert order.text == "水龙头一直在滴水 💧"
    assert order.resolve_by == "2026-10-03T09:00:00+00:00"  # 09:00 UTC + 24 h
    orders.act(order.id, "take", "desk")  # 09:00 UTC, well inside the 2 h to take
    due = datetime(2026, 10, 3, 9, 0, tzinfo=timezone.utc)
    assert judged_overdue(orders, tmp_path, order.id, due - timedelta(seconds=1)) == (False, False, False)
    assert judged_overdue(orders, tmp_path, order.id, due) == (True, True, True)


def test_the_promise_across_a_daylight_saving_change_is_24_real_hours(tmp_path: Path) -> None:
    # Berlin, Saturday 2026-10-24 12:00 CEST (UTC+2) = 10:00 UTC. Clocks go back at 03:00 CEST on
    # Sunday the 25th, so 24 h later is 10:00 UTC = 11:00 CET on the wall, not 12:00.
    clock = ManualClock(datetime(2026, 10, 24, 12, 0, tzinfo=BERLIN))
    orders = sqlite_orders(tmp_path, clock)
    order = orders.create(room="B-101", text="radiator cold", by="guard").order
    assert order.created_at == "2026-10-24T10:00:00+00:00"
    assert order.resolve_by == "2026-10-25T10:00:00+00:00"
    assert datetime.fromisoformat(order.resolve_by).astimezone(BERLIN).hour == 11
    orders.act(order.id, "take", "desk")
    due = datetime(2026, 10, 25, 11, 0, tzinfo=BERLIN)  # = 10:00 UTC
    assert judged_overdue(orders, tmp_path, order.id, due - timedelta(seconds=1)) == (False, False, False)
    assert judged_overdue(orders, tmp_path, order.id, due) == (True, True, True)


def test_a_reopened_order_not_taken_again_is_overdue_everywhere_at_once(tmp_path: Path) -> None:
    # 06:00 created, 06:10 taken, 07:00 done, 07:05 closed rated 2, 09:00 reopened by the guard:
    # fresh deadlines from 09:00, take by 09:00 + 2 h = 11:00, resolve by 09:00 + 24 h.
    t0 = datetime(2026, 11, 18, 6, 0, tzinfo=timezone.utc)
    clock = ManualClock(t0)
    orders = sqlite_orders(tmp_path, clock)
    order_id = orders.create(room="A-204", text="tap drips", by="guard").order.id
    for minutes, action, who in ((10, "take", "desk"), (60, "done", "desk"), (65, "close", "guard"), (180, "reopen", "guard")):
        clock.advance(t0 + timedelta(minutes=minutes) - clock.now())
        orders.act(order_id, action, who, rating=2 if action == "close" else None)
    order = orders.get(order_id)
    assert (order.state, order.owner, order.rating, order.closed_at, order.done_at) == ("reopened", "desk", None, None, None)
    assert (order.take_by, order.resolve_by) == ("2026-11-18T11:00:00+00:00", "2026-11-19T09:00:00+00:00")
    steps = [(h["action"], h["details"].get("rating")) for h in orders.history(order_id)]
    assert steps == [("created", None), ("take", None), ("done", None), ("close", 2), ("reopen", None)]  # the rating stays on record
    take_by = datetime(2026, 11, 18, 11, 0, tzinfo=timezone.utc)
    assert judged_overdue(orders, tmp_path, order_id, take_by - timedelta(seconds=1)) == (False, False, False)
    assert judged_overdue(orders, tmp_path, order_id, take_by) == (True, True, True)
    assert monthly_overdue(tmp_path, take_by - timedelta(seconds=1)) == 0
    assert monthly_overdue(tmp_path, take_by + timedelta(seconds=1)) == 1  # the 06:10 take does not meet 11:00
    clock.advance(take_by + timedelta(minutes=5) - clock.now())  # the owner takes it again at 11:05: late, but taken
    orders.act(order_id, "take", "desk")
    assert judged_overdue(orders, tmp_path, order_id, take_by + timedelta(minutes=6))[:2] == (False, False)


def test_a_hand_over_handed_back(tmp_path: Path) -> None:
    orders = sqlite_orders(tmp_path, ManualClock(datetime(2026, 11, 18, 6, 0, tzinfo=timezone.utc)))
    order_id = orders.create(room="A-204", text="socket sparks", by="guard").order.id
    orders.act(order_id, "take", "desk")
    orders.act(order_id, "hand_over", "desk", to="electrician")
    orders.act(order_id, "hand_over", "electrician", to="desk", note="not electrical: a loose cover")
    assert orders.get(order_id).owner == "desk"
    with pytest.raises(WorkOrderConflict):  # handing it to its owner is no hand-over
        orders.act(order_id, "hand_over", "desk", to="desk")
    moves = [(h["details"]["from"], h["details"]["to"]) for h in orders.history(order_id) if h["action"] == "hand_over"]
    assert moves == [("desk", "electrician"), ("electrician", "desk")]
    assert orders.get(order_id).state == "taken"


# --------------------------------------------------------------------------- same instant, real HTTP

TECHS = {f"tech-{n}": f"wdn_test-tech{n}-0123456789abcdefghijklmnopqrstuv" for n in range(6)}


@pytest.fixture
def served(broker_config: BrokerConfig, tmp_path: Path, state_db: str | Path) -> Iterator[Running]:  # noqa: F811
    """The API's gateway on SQLite or PostgreSQL, with six maintenance people."""
    techs = [{"name": name, "role": "maintenance", "sha256": hash_token(secret)} for name, secret in TECHS.items()]
    yield from serving(broker_config, tmp_path, {"photo_dir": str(tmp_path / "photos")}, state_db=str(state_db), tokens=techs)


def serving(broker: BrokerConfig, tmp_path: Path, work_orders: dict[str, object], **extra: object) -> Iterator[Running]:
    """The API tests' gateway with these `work_orders` settings (and `state_db`, extra `tokens`), deadman off."""
    config = gateway_config(broker, tmp_path)
    data = config.model_dump(mode="json")
    data["api"]["tokens"] += extra.pop("tokens", [])
    data |= {"work_orders": work_orders, **extra}
    data["rules"]["deadman"] = {"enabled": False}
    running = start(type(config).model_validate(data))
    yield running
    running.api.stop()
    running.gateway.stop()


def test_six_people_taking_one_request_at_once_leave_exactly_one_owner(served: Running) -> None:
    guard = httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {TOKENS['guard']}"}, timeout=10)
    made = guard.post("/api/work-orders", json={"room": "A-204", "text": "门锁坏了 🔒"})
    assert made.status_code == 201, made.text
    order_id = made.json()["id"]
    clients = {name: httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {secret}"}, timeout=20)
               for name, secret in TECHS.items()}
    for c in clients.values():  # connections open before the start, so the takes arrive together
        assert c.get("/api/work-orders?limit=1").status_code == 200
    start_line = threading.Barrier(len(clients))
    answers: dict[str, int] = {}

    def take(name: str) -> None:
        start_line.wait(timeout=10)
        answers[name] = clients[name].post(f"/api/work-orders/{order_id}/take", json={}).status_code

    threads = [threading.Thread(target=take, args=(name,)) for name in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    winners = [name for name, status in answers.items() if status == 200]
    assert len(answers) == 6 and len(winners) == 1, answers
    assert sorted(answers.values()) == [200, 409, 409, 409, 409, 409]  # the others: it is taken already
    detail = guard.get(f"/api/work-orders/{order_id}").json()
    assert (detail["owner"], detail["state"], detail["text"]) == (winners[0], "taken", "门锁坏了 🔒")
    assert [h["who"] for h in detail["history"] if h["action"] == "take"] == winners


def test_an_alert_resolving_on_its_own_leaves_its_order_open_with_a_step_saying_so(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    signal = AlertSignal("riverside", "water_burst", "wm-a204", SignalAction.RAISE, datetime(2026, 11, 18, 5, 55, tzinfo=timezone.utc),
                         Severity.CRITICAL, "Flow 18 L/min for 10 min")
    [raised] = store.commit_batch([], [signal], {})
    orders = sqlite_orders(tmp_path, ManualClock(datetime(2026, 11, 18, 6, 0, tzinfo=timezone.utc)))
    order_id = orders.create(room="A-204", text="burst", by="desk", alert_id=raised.alert.id, priority="urgent").order.id
    change = orders.alert_resolved(raised.alert.id, None)  # the flow stopped: the rules resolved it
    assert change is not None and change.note == f"alert {raised.alert.id} resolved on its own"
    order = orders.get(order_id)
    assert (order.state, order.take_by) == ("new", "2026-11-18T06:30:00+00:00")  # still to be taken: 06:00 + 0.5 h
    assert orders.history(order_id)[-1] | {"details": None} == {
        "at": "2026-11-18T06:00:00+00:00", "who": "warden", "action": "alert_resolved", "from_state": "new", "to_state": "new",
        "note": f"alert {raised.alert.id} resolved on its own", "details": None}
    assert orders.alert_resolved(12345, None) is None  # no order from that alert
    store.close()


def test_a_person_resolving_the_alert_is_on_the_order_over_http(served: Running) -> None:
    manager = httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {TOKENS['manager']}"}, timeout=10)
    signal = AlertSignal("riverside", "door_forced", "gate-main", SignalAction.RAISE, served.gateway.clock.now(), Severity.CRITICAL,
                         "Door gate-main forced open")
    [raised] = served.gateway.store.commit_batch([], [signal], {})
    made = manager.post(f"/api/alerts/{raised.alert.id}/work-order", json={})
    assert made.status_code == 201, made.text
    desk = httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {TOKENS['maintenance']}"}, timeout=10)
    assert desk.post(f"/api/alerts/{raised.alert.id}/resolve", json={}).status_code == 200
    detail = manager.get(f"/api/work-orders/{made.json()['id']}").json()
    assert detail["state"] == "new"  # the door still wants looking at; the requester closes
    assert (detail["history"][-1]["action"], detail["history"][-1]["note"]) == (
        "alert_resolved", f"alert {raised.alert.id} resolved by facilities-desk")  # NAMES["maintenance"]


# --------------------------------------------------------------------------- one hostile client


@pytest.fixture
def capped(broker_config: BrokerConfig, tmp_path: Path) -> Iterator[Running]:
    """SQLite, at most 3 new requests a person an hour, photos up to 2048 bytes."""
    yield from serving(broker_config, tmp_path, {"max_new_per_hour": 3, "photo_max_bytes": 2048})


def test_one_person_flooding_requests_is_refused_429_and_others_are_not(capped: Running) -> None:
    guard = httpx.Client(base_url=capped.url, headers={"Authorization": f"Bearer {TOKENS['guard']}"}, timeout=10)
    desk = httpx.Client(base_url=capped.url, headers={"Authorization": f"Bearer {TOKENS['maintenance']}"}, timeout=10)
    statuses = [guard.post("/api/work-orders", json={"room": "A-204", "text": f"spam {n}"}).status_code for n in range(5)]
    assert statuses == [201, 201, 201, 429, 429]  # 3 an hour, then refused
    refused = guard.post("/api/work-orders", json={"room": "A-204", "text": "spam"})
    assert "work_orders.max_new_per_hour" in refused.json()["detail"]
    assert desk.post("/api/work-orders", json={"room": "A-204", "text": "真的坏了"}).status_code == 201  # another person
    assert len(desk.get("/api/work-orders").json()) == 4  # 3 + 1: the refused ones left nothing
    clock: ManualClock = capped.gateway.clock  # type: ignore[assignment]
    clock.advance(timedelta(hours=1))  # the first three are an hour old: out of the window
    assert guard.post("/api/work-orders", json={"room": "A-204", "text": "again"}).status_code == 201


def test_a_streamed_photo_past_its_cap_and_a_disguised_one_are_refused(capped: Running, tmp_path: Path) -> None:
    guard = httpx.Client(base_url=capped.url, headers={"Authorization": f"Bearer {TOKENS['guard']}"}, timeout=10)
    order_id = guard.post("/api/work-orders", json={"room": "A-204", "text": "crack"}).json()["id"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size is only known by reading
        yield b"\x89PNG\r\n\x1a\n"
        for _ in range(10):
            yield b"\0" * 512  # 8 + 5120 bytes > 2048

    big = guard.post(f"/api/work-orders/{order_id}/photos", content=chunks(), headers={"Content-Type": "image/png"})
    assert big.status_code == 413, big.text
    jpeg_as_png = guard.post(f"/api/work-orders/{order_id}/photos", content=b"\xff\xd8\xff\xe0" + b"\0" * 100,
                             headers={"Content-Type": "image/png"})
    assert jpeg_as_png.status_code == 422, jpeg_as_png.text
    gif = guard.post(f"/api/work-orders/{order_id}/photos", content=b"GIF89a" + b"\0" * 100, headers={"Content-Type": "image/gif"})
    assert gif.status_code == 415, gif.text
    assert guard.get(f"/api/work-orders/{order_id}").json()["photos"] == []


def test_a_long_chinese_request_is_told_to_the_bots_in_a_bounded_message(tmp_path: Path) -> None:
    # A WeCom group bot takes at most 2048 bytes of text; the request may be 2000 characters of
    # Chinese (3 bytes each in UTF-8) and emoji (4 bytes): 6000+ bytes. The notification carries
    # the first 200 characters and an ellipsis; the order keeps the whole text.
    orders = sqlite_orders(tmp_path, ManualClock(datetime(2026, 11, 18, 6, 0, tzinfo=timezone.utc)))
    text = "漏" * 1999 + "💧"
    change = orders.create(room="A-204", text=text, by="guard")
    assert orders.get(change.order.id).text == text
    told = as_alert_change(change).alert.message
    assert told == f"Work order #{change.order.id} (general, normal) in A-204: " + "漏" * 200 + "…"
    assert len(told.encode()) <= 700  # 42 ASCII bytes + 200 × 3 + 3 (the ellipsis) = 645
    handed = orders.act(change.order.id, "take", "desk", note="说明" * 1000)
    assert len(as_alert_change(handed).note) == len("taken by desk: ") + 200 + 1


def test_an_owner_on_leave_the_ladder_tells_the_manager_who_reassigns(tmp_path: Path) -> None:
    # 06:00 created, 06:05 taken by desk, who then goes on leave. resolve by 06:00 + 24 h; at that
    # instant level 1 (the manager) hears; the manager assigns it to plumber, who may finish it and
    # desk no longer may. The promise is the requester's: reassigning does not restart it.
    t0 = datetime(2026, 11, 18, 6, 0, tzinfo=timezone.utc)
    clock = ManualClock(t0)
    orders = sqlite_orders(tmp_path, clock)
    order_id = orders.create(room="A-204", text="toilet blocked", by="guard").order.id
    clock.advance(timedelta(minutes=5))
    orders.act(order_id, "take", "desk")
    policy = EscalationPolicy(LADDER)
    clock.advance(timedelta(hours=24, minutes=-5))  # 06:00 next day
    [up] = orders.escalate(lambda order: policy.due_work_order(order, clock.now()), clock.now())
    assert (up.order.escalation_level, up.note) == (1, "not done within 24 h: escalated to level 1")
    orders.act(order_id, "assign", "manager", may_act_for_others=True, to="plumber", note="desk on leave")
    with pytest.raises(WorkOrderForbidden):
        orders.act(order_id, "done", "desk")
    order = orders.get(order_id)
    assert (order.owner, order.resolve_by, order.escalation_level) == ("plumber", "2026-11-19T06:00:00+00:00", 1)
    # level 2 at 06:00 + 24 h more: each rung gets the order's full time
    assert policy.due_work_order(order, datetime(2026, 11, 20, 6, 0, tzinfo=timezone.utc) - timedelta(seconds=1)) is None
    assert policy.due_work_order(order, datetime(2026, 11, 20, 6, 0, tzinfo=timezone.utc)) is not None
    orders.act(order_id, "done", "plumber")
    assert orders.get(order_id).state == "done"
