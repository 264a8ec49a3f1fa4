"""Each role's limits, proven by enumerating the app's routes: every route must appear in
EXPECTED (a new endpoint without a decision fails here), and every role is tried against
every route over real HTTP."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from gateway.api import create_app
from tests.api.conftest import NAMES, ROLES, TOKENS, Running, auth_headers, gateway_config, start
from warden.config import BrokerConfig

PUBLIC = {"anonymous", "guard", "maintenance", "manager", "admin"}
TOKENED = PUBLIC - {"anonymous"}
READERS = {"maintenance", "manager", "admin"}  # alerts, devices, patrols
MANAGERS = {"manager", "admin"}  # reports, system
WRITERS = {"maintenance", "admin"}  # resolve; work orders: take, start, wait, done, hand over
DISPATCHERS = {"maintenance", "manager", "admin"}  # assign an alert to a person (issue 18)

#: (method, path) -> roles allowed through, on a gateway whose reads need a token.
EXPECTED: dict[tuple[str, str], set[str]] = {
    ("GET", "/"): PUBLIC,  # the page holds no data
    ("GET", "/static"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs-assets"): PUBLIC,  # Swagger UI and ReDoc scripts, served here, not from a CDN (issue 17)
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,  # api.public_metrics: true (the default)
    ("GET", "/api/health"): PUBLIC,
    ("GET", "/api/me"): PUBLIC,
    ("POST", "/api/session"): TOKENED,
    ("DELETE", "/api/session"): TOKENED,
    ("GET", "/api/dead-letters"): MANAGERS,
    ("GET", "/api/alerts"): TOKENED,  # a guard: the alerts of its post (issue 18)
    ("GET", "/api/alerts/stream"): TOKENED,  # a guard: its post's alerts only
    ("GET", "/api/alerts/{alert_id}"): TOKENED,
    ("POST", "/api/alerts/{alert_id}/acknowledge"): TOKENED,  # a guard its post's, a manager any (issue 18)
    ("POST", "/api/alerts/{alert_id}/resolve"): WRITERS,
    ("POST", "/api/alerts/{alert_id}/assign"): DISPATCHERS,
    ("POST", "/api/alerts/{alert_id}/work-order"): TOKENED,
    ("GET", "/api/people"): TOKENED,
    ("GET", "/work-orders"): PUBLIC,  # the page holds no data
    ("GET", "/api/work-orders"): TOKENED,  # a guard: its own requests
    ("POST", "/api/work-orders"): TOKENED,  # anyone reports a fault
    ("GET", "/api/work-orders/{order_id}"): TOKENED,
    ("POST", "/api/work-orders/{order_id}/photos"): TOKENED,
    ("GET", "/api/work-orders/{order_id}/photos/{photo_id}"): TOKENED,
    ("POST", "/api/work-orders/{order_id}/{action}"): WRITERS,  # take, start, wait, done
    ("POST", "/api/work-orders/{order_id}/hand-over"): WRITERS,
    ("POST", "/api/work-orders/{order_id}/assign"): MANAGERS,
    ("POST", "/api/work-orders/{order_id}/close"): TOKENED,  # the requester (or a manager for them)
    ("POST", "/api/work-orders/{order_id}/reopen"): TOKENED,
    ("POST", "/api/work-orders/{order_id}/notes"): TOKENED,
    ("GET", "/api/devices"): READERS,
    ("GET", "/api/devices/{device}"): READERS,
    ("GET", "/api/devices/{device}/series"): READERS,
    ("GET", "/api/patrols/routes"): TOKENED,  # a guard: own routes only
    ("GET", "/api/patrols/rounds"): TOKENED,
    ("GET", "/api/reports/{night}"): MANAGERS,
    ("GET", "/api/statistics"): READERS,
    ("GET", "/api/reports/month/{month}"): MANAGERS,
    ("GET", "/api/reports/archive"): MANAGERS,
    ("GET", "/api/energy/waste"): MANAGERS,  # reports:read (issue 19: the dashboard's energy view)
    ("GET", "/api/reports/archive/{kind}/{label}"): MANAGERS,
    ("GET", "/api/config"): {"admin"},
    ("GET", "/api/sites"): TOKENED,  # issue 21: the sites the token sees
    ("GET", "/api/overview"): MANAGERS,  # reports:read, per site
}

SAFE = {"GET", "HEAD", "OPTIONS"}


def app_routes(app) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    found = set()
    for route in app.routes:
        if isinstance(route, Mount):
            found.add(("GET", route.path))
        elif isinstance(route, (APIRoute, Route)):
            found.update((method, route.path) for method in route.methods or () if method != "HEAD")
    return found


def call(client: httpx.Client, method: str, path: str, role: str, alert_id: int) -> int:
    url = (path.replace("{alert_id}", str(alert_id)).replace("{device}", "ac-a204").replace("{night}", "2026-11-17")
           .replace("{order_id}", "1").replace("{photo_id}", "1").replace("{action}", "take")  # order 1: seed_alert's
           .replace("{month}", "2026-11").replace("{kind}", "daily").replace("{label}", "2026-11-17"))
    if path == "/api/statistics":
        url += "?since=2026-11-17T00:00:00Z&until=2026-11-18T00:00:00Z"
    if path == "/static":
        url = "/static/dashboard.js"
    if path == "/docs-assets":
        url = "/docs-assets/swagger-ui-bundle.js"
    headers = auth_headers(role)
    if path == "/api/alerts/stream":
        with client.stream(method, url, headers=headers) as response:
            return response.status_code
    json_body = {"note": f"by {role}"} if method == "POST" else None
    return client.request(method, url, headers=headers, json=json_body).status_code


def seed_alert(running: Running) -> int:
    from datetime import datetime, timezone

    from rules.alerts import AlertSignal, SignalAction

    signal = AlertSignal("riverside", "door_forced", "gate-main", SignalAction.RAISE,
                         datetime(2026, 11, 17, 23, 0, tzinfo=timezone.utc), message="Door gate-main forced open")
    [change] = running.gateway.store.commit_batch([], [signal], {})
    running.gateway.work_orders.create(room="A-GATE", text="Gate lock broken", by=NAMES["guard"])  # work order 1
    return change.alert.id


def test_every_route_has_a_decision(running: Running) -> None:
    app = running.api.app
    assert app_routes(app) == set(EXPECTED), "add the new route to EXPECTED with the roles it allows"


@pytest.mark.parametrize("role", ROLES)
def test_each_role_against_every_route(running: Running, role: str) -> None:
    alert_id = seed_alert(running)
    with httpx.Client(base_url=running.url, timeout=10) as client:
        for (method, path), allowed in sorted(EXPECTED.items()):
            status = call(client, method, path, role, alert_id)
            if role in allowed:
                assert status not in (401, 403), f"{role} refused {method} {path}: {status}"
                assert status < 500, f"{role} {method} {path}: {status}"
            else:
                expected = 401 if role == "anonymous" else 403
                assert status == expected, f"{role} {method} {path}: {status}, expected {expected}"


def test_nothing_changes_without_a_token_even_on_a_public_read_gateway(broker_config: BrokerConfig, tmp_path: Path) -> None:
    running = start(gateway_config(broker_config, tmp_path, public_read=True))
    try:
        alert_id = seed_alert(running)
        with httpx.Client(base_url=running.url, timeout=10) as client:
            routes = app_routes(running.api.app)
            writes = [(m, p) for m, p in routes if m not in SAFE]
            assert len(writes) >= 4
            for method, path in writes:
                assert call(client, method, path, "anonymous", alert_id) == 401, f"{method} {path}"
            for method, path in routes - set(writes):  # a kiosk reads everything but the config
                private = path == "/api/config" or path.startswith(("/api/work-orders", "/api/people"))  # issue 18
                expected = 401 if private else 200
                if path.startswith("/api/reports/archive/"):
                    expected = 404  # nothing archived
                assert call(client, method, path, "anonymous", alert_id) == expected, f"{method} {path}"
        assert running.gateway.store.alert(alert_id).state == "open"  # type: ignore[union-attr]
    finally:
        running.api.stop()
        running.gateway.stop()


def test_a_gateway_without_tokens_reads_openly_and_changes_nothing(broker_config: BrokerConfig, tmp_path: Path) -> None:
    """A fresh install, the demo: no token configured, so nothing can be written."""
    config = gateway_config(broker_config, tmp_path)
    config = config.model_copy(update={"api": config.api.model_copy(update={"tokens": []})})
    running = start(config)
    try:
        alert_id = seed_alert(running)
        client = running.client()
        assert client.get("/api/alerts").status_code == 200
        assert client.post(f"/api/alerts/{alert_id}/acknowledge", json={}).status_code == 401
        fake = {"Authorization": "Bearer wdn_anything"}
        assert client.post(f"/api/alerts/{alert_id}/acknowledge", json={}, headers=fake).status_code == 401
    finally:
        running.api.stop()
        running.gateway.stop()


def test_a_wrong_token_is_refused_not_taken_as_anonymous(broker_config: BrokerConfig, tmp_path: Path) -> None:
    running = start(gateway_config(broker_config, tmp_path, public_read=True))
    try:
        client = running.client()
        for bad in ("Bearer wdn_wrong", f"Bearer {TOKENS['admin'][:-1]}", f"Bearer {TOKENS['admin']}x",
                    f"Basic {TOKENS['admin']}", "Bearer"):
            assert client.get("/api/alerts", headers={"Authorization": bad}).status_code == 401, bad
        assert client.get("/api/alerts").status_code == 200  # no token at all: the kiosk
    finally:
        running.api.stop()
        running.gateway.stop()


def test_a_guard_sees_only_the_routes_they_walk(running: Running) -> None:
    guard = running.client("guard")
    assert [r["id"] for r in guard.get("/api/patrols/routes").raise_for_status().json()] == ["north"]
    assert [r["id"] for r in running.client("manager").get("/api/patrols/routes").json()] == ["north", "south"]
    me = guard.get("/api/me").raise_for_status().json()
    # issue 18: a guard also sees and acknowledges its post's alerts and reports faults
    assert (me["name"], me["role"], me["permissions"]) == (NAMES["guard"], "guard", [
        "alerts:ack", "alerts:own", "patrols:own", "work_orders:create", "work_orders:read"])


def test_tokens_are_never_logged(running: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    alert_id = seed_alert(running)
    with httpx.Client(base_url=running.url, timeout=10) as client:
        for role in ROLES:
            for (method, path) in EXPECTED:
                call(client, method, path, role, alert_id)
        client.get("/api/alerts", headers={"Authorization": "Bearer wdn_not-a-real-token-xyz"})
    assert "refused API token" in caplog.text
    for secret in (*TOKENS.values(), "wdn_not-a-real-token-xyz"):
        assert secret not in caplog.text


def test_cors_is_closed_by_default(running: Running) -> None:
    response = httpx.options(f"{running.url}/api/alerts", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert "access-control-allow-origin" not in response.headers
    response = httpx.get(f"{running.url}/api/alerts", headers={"Origin": "https://evil.example", **auth_headers("manager")})
    assert "access-control-allow-origin" not in response.headers


def test_cors_for_configured_origins(broker_config: BrokerConfig, tmp_path: Path) -> None:
    running = start(gateway_config(broker_config, tmp_path, cors_origins=["https://wall.example"]))
    try:
        response = httpx.options(f"{running.url}/api/alerts", headers={
            "Origin": "https://wall.example", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization"})
        assert response.headers.get("access-control-allow-origin") == "https://wall.example"
        other = httpx.options(f"{running.url}/api/alerts", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in other.headers
    finally:
        running.api.stop()
        running.gateway.stop()


def test_the_config_holds_no_secret_and_the_admin_view_hides_hashes(running: Running) -> None:
    config = running.client("admin").get("/api/config").raise_for_status().json()
    assert {t["name"] for t in config["api"]["tokens"]} == set(NAMES.values())
    text = str(config)
    assert "sha256" not in text and not any(secret in text for secret in TOKENS.values())


def test_app_factory_registers_its_stream_once_per_app(running: Running) -> None:
    listeners = len(running.gateway.alert_listeners)
    create_app(running.gateway)
    assert len(running.gateway.alert_listeners) == listeners + 1
