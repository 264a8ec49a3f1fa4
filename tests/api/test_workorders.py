"""Repair requests (work orders) and alerts for people on duty, over real HTTP against a
gateway on the real broker, with its notifications caught by a real webhook receiver.

The gateway's clock starts at EVENING + 12 h = 2026-11-18 06:00 UTC (tests/api/conftest.py);
every expected time below is that instant plus hours written out."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.auth import hash_token
from rules.alerts import AlertSignal, Severity, SignalAction
from simulators.people import png
from tests.api.conftest import NAMES, TOKENS, Running, gateway_config, start
from tests.support.receivers import WebhookReceiver
from warden.clock import ManualClock
from warden.config import BrokerConfig

NOW = datetime(2026, 11, 18, 6, 0, tzinfo=timezone.utc)  # EVENING (18:00 on the 17th) + 12 h
PLUMBER = "plumber-wu"
PLUMBER_TOKEN = "wdn_test-plumber-0123456789abcdefghijklmnopqrs"
GUARD2 = "guard-kim-phone"
GUARD2_TOKEN = "wdn_test-guard2-0123456789abcdefghijklmnopqrstu"
GUARD, DESK, MANAGER = NAMES["guard"], NAMES["maintenance"], NAMES["manager"]


@pytest.fixture
def desk(broker_config: BrokerConfig, tmp_path: Path, receiver: WebhookReceiver) -> Iterator[Running]:
    """The API's gateway with a second maintenance person and a second guard, a three-level
    ladder of webhooks (/desk, /manager, /director), photos up to 4096 bytes, and escalation
    checked every 50 ms of real time."""
    config = gateway_config(broker_config, tmp_path)
    data = config.model_dump(mode="json")
    data["api"]["tokens"] += [{"name": PLUMBER, "role": "maintenance", "sha256": hash_token(PLUMBER_TOKEN)},
                              {"name": GUARD2, "role": "guard", "guard": "guard-kim", "sha256": hash_token(GUARD2_TOKEN)}]
    data["alerts"] = {
        "escalation": {"levels": [["desk"], ["manager"], ["director"]]},
        "sinks": {name: {"type": "webhook", "url": receiver.url(f"/{name}"), "backoff_seconds": 0.01}
                  for name in ("desk", "manager", "director")},
    }
    data["work_orders"] = {"photo_max_bytes": 4096}
    data["rules"]["deadman"] = {"enabled": False}  # hours of ticks must raise nothing else
    running = start(type(config).model_validate(data), clock_at=NOW, tick_every=0.05)
    yield running
    running.api.stop()
    running.gateway.stop()


def client(running: Running, who: str) -> httpx.Client:
    secret = {PLUMBER: PLUMBER_TOKEN, GUARD2: GUARD2_TOKEN}.get(who) or TOKENS[who]
    return httpx.Client(base_url=running.url, headers={"Authorization": f"Bearer {secret}"}, timeout=10)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def escalation_checked(running: Running, at: datetime) -> None:
    gateway = running.gateway
    assert gateway.wait_until(lambda: (gateway.escalation_checked_at or NOW - timedelta(days=1)) >= at, timeout=10)


def test_a_guard_reports_maintenance_takes_hands_over_and_the_guard_closes_and_rates(
        desk: Running, receiver: WebhookReceiver) -> None:
    guard, maint, plumber = client(desk, "guard"), client(desk, "maintenance"), client(desk, PLUMBER)

    order = ok(guard.post("/api/work-orders", json={"room": "A-204", "text": "Tap drips in the washroom", "category": "plumbing"}), 201)
    assert (order["state"], order["requested_by"], order["owner"]) == ("new", GUARD, None)
    assert order["created_at"] == NOW.isoformat()
    assert order["take_by"] == (NOW + timedelta(hours=2)).isoformat()  # default take_hours 2
    assert order["resolve_by"] == (NOW + timedelta(hours=24)).isoformat()  # the 24-hour promise
    wid = order["id"]

    ok(maint.post(f"/api/work-orders/{wid}/take", json={"note": "on my way"}))
    # First-responder ownership: nobody else takes it, nor moves it on.
    assert plumber.post(f"/api/work-orders/{wid}/take", json={}).status_code == 409  # taken: not in a takeable state
    assert plumber.post(f"/api/work-orders/{wid}/start", json={}).status_code == 403
    assert guard.post(f"/api/work-orders/{wid}/start", json={}).status_code == 403  # a guard does not repair
    ok(maint.post(f"/api/work-orders/{wid}/start", json={}))
    ok(maint.post(f"/api/work-orders/{wid}/wait", json={"note": "washer 1/2 inch ordered"}))
    assert ok(maint.post(f"/api/work-orders/{wid}/hand-over", json={"to": "nobody-here"}), 422)["detail"].startswith("to: no person")
    assert maint.post(f"/api/work-orders/{wid}/hand-over", json={"to": GUARD}).status_code == 422  # a guard cannot own repairs
    handed = ok(maint.post(f"/api/work-orders/{wid}/hand-over", json={"to": PLUMBER, "note": "plumber fits the washer"}))
    assert (handed["owner"], handed["state"]) == (PLUMBER, "waiting")
    assert maint.post(f"/api/work-orders/{wid}/done", json={}).status_code == 403  # no longer the owner
    assert guard.post(f"/api/work-orders/{wid}/close", json={"rating": 5}).status_code == 409  # not done yet
    ok(plumber.post(f"/api/work-orders/{wid}/start", json={}))
    ok(plumber.post(f"/api/work-orders/{wid}/done", json={"note": "washer replaced"}))
    assert maint.post(f"/api/work-orders/{wid}/close", json={"rating": 5}).status_code == 403  # only the requester
    assert guard.post(f"/api/work-orders/{wid}/close", json={}).status_code == 422  # the requester rates
    closed = ok(guard.post(f"/api/work-orders/{wid}/close", json={"rating": 4, "comment": "quick, but came twice"}))
    assert (closed["state"], closed["rating"], closed["rating_comment"]) == ("closed", 4, "quick, but came twice")

    steps = [(h["action"], h["who"], h["from_state"], h["to_state"]) for h in closed["history"]]
    assert steps == [
        ("created", GUARD, None, "new"),
        ("take", DESK, "new", "taken"),
        ("start", DESK, "taken", "in_progress"),
        ("wait", DESK, "in_progress", "waiting"),
        ("hand_over", DESK, "waiting", "waiting"),
        ("start", PLUMBER, "waiting", "in_progress"),
        ("done", PLUMBER, "in_progress", "done"),
        ("close", GUARD, "done", "closed"),
    ]
    assert closed["history"][4]["details"] == {"from": DESK, "to": PLUMBER}
    assert all(h["at"] == NOW.isoformat() for h in closed["history"])  # the manual clock did not move

    # The guard sees it (their request); the other guard does not know it exists.
    assert [o["id"] for o in ok(guard.get("/api/work-orders"))] == [wid]
    assert client(desk, GUARD2).get(f"/api/work-orders/{wid}").status_code == 404
    assert ok(client(desk, GUARD2).get("/api/work-orders")) == []

    # Notifications through the alert sinks: created, taken, handed over (level 0: /desk);
    # done and closed reach it as "updated"/"resolved" (updated is not sent by default).
    posts = receiver.wait_for(4, "/desk")
    kinds = [(p.json()["change"], p.json()["note"]) for p in posts]
    assert kinds[:3] == [("opened", f"reported by {GUARD}"), ("acknowledged", f"taken by {DESK}: on my way"),
                         ("acknowledged", f"handed over by {DESK} to {PLUMBER}: plumber fits the washer")]
    assert kinds[3] == ("resolved", f"closed by {GUARD}, rated 4")
    assert all(p.json()["alert"]["rule"] == "work_order" and p.json()["alert"]["subject"] == f"WO-{wid}" for p in posts)


def test_overdue_orders_climb_the_escalation_ladder(desk: Running, receiver: WebhookReceiver) -> None:
    maint = client(desk, "maintenance")
    clock: ManualClock = desk.gateway.clock  # type: ignore[assignment]
    untaken = ok(maint.post("/api/work-orders", json={"room": "A-GATE", "text": "Barrier stuck", "category": "doors"}), 201)
    urgent = ok(maint.post("/api/work-orders", json={"room": "A-204", "text": "Water on the floor", "priority": "urgent"}), 201)
    # urgent: take 0.5 h, resolve 4 h (the default priorities)
    assert urgent["take_by"] == (NOW + timedelta(minutes=30)).isoformat()
    assert urgent["resolve_by"] == (NOW + timedelta(hours=4)).isoformat()
    ok(maint.post(f"/api/work-orders/{urgent['id']}/take", json={}))

    clock.advance(timedelta(hours=2) - timedelta(seconds=1))  # 07:59:59: nothing is due yet
    escalation_checked(desk, clock.now())
    assert [o.escalation_level for o in desk.gateway.work_orders.open_orders()] == [0, 0]

    clock.advance(timedelta(seconds=1))  # 08:00 = 06:00 + 2 h: the untaken one escalates
    escalation_checked(desk, clock.now())
    [post] = receiver.wait_for(1, "/manager")
    assert post.json()["change"] == "escalated"
    assert post.json()["note"] == "not taken within 2 h: escalated to level 1"
    assert post.json()["alert"]["subject"] == f"WO-{untaken['id']}"
    detail = ok(maint.get(f"/api/work-orders/{untaken['id']}"))
    assert (detail["escalation_level"], detail["escalated_at"]) == (1, (NOW + timedelta(hours=2)).isoformat())

    clock.advance(timedelta(hours=2))  # 10:00 = 06:00 + 4 h: the urgent one is not done in time
    escalation_checked(desk, clock.now())
    levels = {o.id: o.escalation_level for o in desk.gateway.work_orders.open_orders()}
    # untaken: level 1 at 08:00, level 2 at 08:00 + 2 h = 10:00; urgent: level 1 at 10:00
    assert levels == {untaken["id"]: 2, urgent["id"]: 1}
    assert receiver.wait_for(1, "/director")[0].json()["alert"]["subject"] == f"WO-{untaken['id']}"
    assert receiver.wait_for(3, "/manager")  # the 08:00 and both 10:00 escalations

    clock.advance(timedelta(hours=4))  # the top level (2) is the last rung: nothing more for the first
    escalation_checked(desk, clock.now())
    assert {o.id: o.escalation_level for o in desk.gateway.work_orders.open_orders()} == {untaken["id"]: 2, urgent["id"]: 2}


def test_a_manager_assigns_and_acts_for_the_requester_and_reopening_restarts_the_promise(desk: Running) -> None:
    guard, manager, plumber = client(desk, "guard"), client(desk, "manager"), client(desk, PLUMBER)
    clock: ManualClock = desk.gateway.clock  # type: ignore[assignment]
    wid = ok(guard.post("/api/work-orders", json={"room": "A-204", "text": "Light flickers", "category": "electrical"}), 201)["id"]
    assert client(desk, "maintenance").post(f"/api/work-orders/{wid}/assign", json={"to": PLUMBER}).status_code == 403
    assigned = ok(manager.post(f"/api/work-orders/{wid}/assign", json={"to": PLUMBER, "note": "you are near"}))
    assert (assigned["state"], assigned["owner"], assigned["taken_at"]) == ("taken", PLUMBER, NOW.isoformat())
    assert manager.post(f"/api/work-orders/{wid}/take", json={}).status_code == 403  # a manager does not repair
    ok(plumber.post(f"/api/work-orders/{wid}/done", json={}))
    clock.advance(timedelta(hours=3))
    reopened = ok(guard.post(f"/api/work-orders/{wid}/reopen", json={"note": "flickers again"}))
    assert (reopened["state"], reopened["owner"]) == ("reopened", PLUMBER)  # back to its owner
    assert reopened["take_by"] == (NOW + timedelta(hours=3) + timedelta(hours=2)).isoformat()
    assert reopened["resolve_by"] == (NOW + timedelta(hours=3) + timedelta(hours=24)).isoformat()
    assert client(desk, "maintenance").post(f"/api/work-orders/{wid}/take", json={}).status_code == 403  # the plumber's
    ok(plumber.post(f"/api/work-orders/{wid}/take", json={}))
    ok(plumber.post(f"/api/work-orders/{wid}/done", json={}))
    closed = ok(manager.post(f"/api/work-orders/{wid}/close", json={"note": "guard off duty"}))  # for the requester, unrated
    assert (closed["state"], closed["rating"]) == ("closed", None)
    ok(manager.post(f"/api/work-orders/{wid}/notes", json={"note": "checked the ballast"}))
    assert client(desk, GUARD2).post(f"/api/work-orders/{wid}/notes", json={"note": "x"}).status_code == 404
    actions = [h["action"] for h in ok(guard.get(f"/api/work-orders/{wid}"))["history"]]
    assert actions == ["created", "assign", "done", "reopen", "take", "done", "close", "note"]
    assert ok(manager.get("/api/work-orders", params={"state": ["closed"]}))[0]["id"] == wid


def test_photos_are_bounded_in_size_type_and_number(desk: Running) -> None:
    guard = client(desk, "guard")
    wid = ok(guard.post("/api/work-orders", json={"room": "A-GATE", "text": "Cracked glass"}), 201)["id"]
    image = png(2, 2)
    photo = ok(guard.post(f"/api/work-orders/{wid}/photos", content=image, headers={"Content-Type": "image/png"}), 201)
    assert (photo["size"], photo["content_type"], photo["added_by"]) == (len(image), "image/png", GUARD)
    back = guard.get(photo["url"])
    assert (back.status_code, back.content, back.headers["content-type"]) == (200, image, "image/png")
    assert Path(desk.gateway.work_orders.photo_dir, photo["path"]).read_bytes() == image  # on disk beside state.db
    assert desk.gateway.work_orders.photo_dir == desk.gateway.config.state_db.parent / "work-order-photos"

    assert guard.post(f"/api/work-orders/{wid}/photos", content=b"GIF89a...", headers={"Content-Type": "image/gif"}).status_code == 415
    assert guard.post(f"/api/work-orders/{wid}/photos", content=b"not a png", headers={"Content-Type": "image/png"}).status_code == 422
    too_big = b"\x89PNG\r\n\x1a\n" + b"\0" * (4096 - 8 + 1)  # 4097 bytes: one over photo_max_bytes
    refused = guard.post(f"/api/work-orders/{wid}/photos", content=too_big, headers={"Content-Type": "image/png"})
    assert refused.status_code == 413 and "work_orders.photo_max_bytes" in refused.json()["detail"]
    assert client(desk, GUARD2).post(f"/api/work-orders/{wid}/photos", content=image, headers={"Content-Type": "image/png"}).status_code == 404
    for _ in range(2):  # max_photos 3
        ok(guard.post(f"/api/work-orders/{wid}/photos", content=image, headers={"Content-Type": "image/png"}), 201)
    assert guard.post(f"/api/work-orders/{wid}/photos", content=image, headers={"Content-Type": "image/png"}).status_code == 409
    assert len(ok(guard.get(f"/api/work-orders/{wid}"))["photos"]) == 3
    # Elsewhere the API's own body bound still holds (64 KiB by default).
    assert guard.post("/api/work-orders", content=b"{" + b" " * 70_000 + b"}",
                      headers={"Content-Type": "application/json"}).status_code == 413


def leak(running: Running) -> int:
    """A critical burst alert on the washroom meter, as the water rules raise it."""
    signal = AlertSignal("riverside", "water_burst", "ac-a204", SignalAction.RAISE, NOW - timedelta(minutes=5), Severity.CRITICAL,
                         "Flow 18 L/min for 10 min at ac-a204")
    [change] = running.gateway.store.commit_batch([], [signal], {})
    return change.alert.id


def test_a_leak_alert_becomes_a_work_order_linked_both_ways(desk: Running, receiver: WebhookReceiver) -> None:
    alert_id = leak(desk)
    maint = client(desk, "maintenance")
    order = ok(maint.post(f"/api/alerts/{alert_id}/work-order", json={}), 201)
    # room: the device's room in the site; category from water_*; priority from critical
    assert (order["room"], order["category"], order["priority"], order["alert_id"]) == ("A-204", "plumbing", "urgent", alert_id)
    assert order["text"] == "Flow 18 L/min for 10 min at ac-a204"
    assert order["take_by"] == (NOW + timedelta(minutes=30)).isoformat()  # urgent: 0.5 h
    assert ok(maint.get(f"/api/alerts/{alert_id}"))["work_order_id"] == order["id"]
    [listed] = [a for a in ok(maint.get("/api/alerts")) if a["id"] == alert_id]
    assert listed["work_order_id"] == order["id"]
    assert maint.post(f"/api/alerts/{alert_id}/work-order", json={}).status_code == 409  # one per alert
    assert client(desk, "guard").post(f"/api/alerts/{alert_id}/work-order", json={}).status_code == 404  # not the guard's post
    assert maint.post("/api/alerts/99999/work-order", json={}).status_code == 404
    opened = [p.json() for p in receiver.wait_for(2, "/desk") if p.json()["alert"]["rule"] == "work_order"]
    assert opened[0]["alert"]["severity"] == "critical" and opened[0]["alert"]["details"]["alert_id"] == alert_id


def door_forced(running: Running) -> int:
    signal = AlertSignal("riverside", "door_forced", "gate-main", SignalAction.RAISE, NOW - timedelta(hours=4), Severity.CRITICAL,
                         "Door gate-main forced open")
    [change] = running.gateway.store.commit_batch([], [signal], {})
    return change.alert.id


def test_a_guard_sees_and_acknowledges_the_alerts_of_its_post(desk: Running) -> None:
    store = desk.gateway.store
    signals = [
        AlertSignal("riverside", "patrol_round", "north:2026-11-17T23:30", SignalAction.RAISE, NOW - timedelta(hours=6),
                    Severity.WARNING, "Round north 23:30 late"),  # guard-lee walks north
        AlertSignal("riverside", "patrol_round", "south:2026-11-17T23:30", SignalAction.RAISE, NOW - timedelta(hours=6),
                    Severity.WARNING, "Round south 23:30 late"),  # guard-kim's
        AlertSignal("riverside", "ac_after_hours", "A-204", SignalAction.RAISE, NOW - timedelta(hours=8), Severity.WARNING, "AC on"),
    ]
    ids = [change.alert.id for change in store.commit_batch([], signals, {})]
    forced = door_forced(desk)
    guard, guard2 = client(desk, "guard"), client(desk, GUARD2)
    assert sorted(a["id"] for a in ok(guard.get("/api/alerts"))) == sorted([ids[0], forced])
    assert sorted(a["id"] for a in ok(guard2.get("/api/alerts"))) == sorted([ids[1], forced])
    assert guard.get(f"/api/alerts/{ids[2]}").status_code == 404
    assert guard.post(f"/api/alerts/{ids[2]}/acknowledge", json={}).status_code == 404  # not its post
    assert guard.post(f"/api/alerts/{forced}/resolve", json={}).status_code == 403  # a guard does not resolve
    acked = ok(guard.post(f"/api/alerts/{forced}/acknowledge", json={"note": "on my way to the gate"}))
    assert (acked["state"], acked["acknowledged_by"]) == ("acknowledged", GUARD)
    acked = ok(client(desk, "manager").post(f"/api/alerts/{ids[2]}/acknowledge", json={}))  # a manager may acknowledge
    assert acked["acknowledged_by"] == MANAGER


def test_an_alert_is_assigned_to_a_named_person(desk: Running) -> None:
    alert_id = door_forced(desk)
    manager = client(desk, "manager")
    assert ok(manager.post(f"/api/alerts/{alert_id}/assign", json={"to": "nobody"}), 422)["detail"].startswith("to: no person")
    assigned = ok(manager.post(f"/api/alerts/{alert_id}/assign", json={"to": GUARD2, "note": "nearest to the gate"}))
    assert (assigned["assigned_to"], assigned["assigned_at"], assigned["state"]) == (GUARD2, NOW.isoformat(), "open")
    history = ok(manager.get(f"/api/alerts/{alert_id}"))["history"]
    assert (history[-1]["action"], history[-1]["message"]) == ("assigned", f"assigned to {GUARD2} by {MANAGER}: nearest to the gate")
    assert client(desk, "guard").post(f"/api/alerts/{alert_id}/assign", json={"to": GUARD}).status_code == 403
    people = {p["name"]: p for p in ok(manager.get("/api/people"))}
    assert people[GUARD2]["acknowledges_alerts"] and not people[GUARD2]["takes_work_orders"]
    assert people[PLUMBER]["takes_work_orders"]


def test_bad_input_is_refused_with_the_key_named(desk: Running) -> None:
    guard = client(desk, "guard")
    detail = ok(guard.post("/api/work-orders", json={"room": "A-204", "text": "x", "category": "plumbingg"}), 422)["detail"]
    assert detail.startswith("category: unknown 'plumbingg'")
    assert "priority" in ok(guard.post("/api/work-orders", json={"room": "A-204", "text": "x", "priority": "asap"}), 422)["detail"]
    assert "text" in ok(guard.post("/api/work-orders", json={"room": "A-204", "text": ""}), 422)["detail"]
    assert guard.post("/api/work-orders/99999/close", json={"rating": 3}).status_code == 404
    wid = ok(guard.post("/api/work-orders", json={"room": "A-204", "text": "x"}), 201)["id"]
    assert "rating" in ok(guard.post(f"/api/work-orders/{wid}/close", json={"rating": 6}), 422)["detail"]
    assert guard.post(f"/api/work-orders/{wid}/take", json={}).status_code == 403  # the role decides first
    assert client(desk, "maintenance").post(f"/api/work-orders/{wid}/fly", json={}).status_code == 422  # no such step


def test_a_guards_live_stream_carries_only_its_posts_alerts(desk: Running) -> None:
    from tests.api.test_api import Stream

    ac = desk.gateway.store.commit_batch([], [AlertSignal(
        "riverside", "ac_after_hours", "A-204", SignalAction.RAISE, NOW - timedelta(hours=8), Severity.WARNING, "AC on")], {})[0].alert.id
    forced = door_forced(desk)
    stream = Stream(f"{desk.url}/api/alerts/stream", {"Authorization": f"Bearer {TOKENS['guard']}"})
    try:
        assert stream.status == 200
        desk.gateway.acknowledge(ac, MANAGER)  # not the guard's post: not on its stream
        desk.gateway.acknowledge(forced, MANAGER)
        _, event, data = stream.next()
        assert (event, data["change"], data["alert"]["id"]) == ("alert", "acknowledged", forced)
    finally:
        stream.close()
