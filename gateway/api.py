"""The gateway's HTTP API (FastAPI; OpenAPI docs at /docs) and the dashboard.

Every endpoint declares the permission it needs (gateway/auth.py); tokens and roles are in
docs/api.md. Nothing that changes state is reachable without a token in the
`Authorization` header; reads may be public on a kiosk gateway (`api.public_read`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import uvicorn
from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, PlainTextResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from gateway import auth
from gateway.auth import Authenticator, Principal, require
from gateway.service import Gateway
from gateway.store import Alert, AlertNotFound, AlertStateConflict
from gateway.web.stream import AlertBroadcaster, sse_events
from rules.alerts import AlertState, Severity
from warden.config import ApiConfig, SqliteHistorianConfig

log = logging.getLogger(__name__)

WEB = Path(__file__).parent / "web"


class PersonAction(BaseModel):
    """What a person says when acknowledging or resolving: shown in the alert's history."""

    note: str | None = Field(default=None, max_length=2000)


def create_app(gateway: Gateway, config: ApiConfig | None = None) -> FastAPI:
    config = config or gateway.config.api
    app = FastAPI(title="warden gateway", version="1", description="Alerts, devices, patrols, reports. Auth: docs/api.md")
    app.state.auth = Authenticator(config)
    if app.state.auth.public_read and config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("API reads need no token", extra={"host": config.host, "tokens": len(config.tokens),
                                                      "hint": "set api.public_read: false (docs/api.md)"})
    app.state.broadcaster = broadcaster = AlertBroadcaster()
    gateway.alert_listeners.append(broadcaster.publish)
    if config.cors_origins:  # closed unless origins are named
        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"], allow_credentials=False)
    app.add_middleware(_SecurityHeaders)
    _monitoring(app, gateway, config)
    _alerts(app, gateway, broadcaster)
    _devices(app, gateway)
    _patrols(app, gateway)
    _reports_and_admin(app, gateway)
    _dashboard(app, gateway)
    return app


class _SecurityHeaders:
    """Plain ASGI (not BaseHTTPMiddleware, which buffers and mishandles endless streams)."""

    HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


# --------------------------------------------------------------------------- monitoring


def _monitoring(app: FastAPI, gateway: Gateway, config: ApiConfig) -> None:
    guard = [] if config.public_metrics else [require(auth.SYSTEM_READ)]

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=guard, tags=["monitoring"])
    def metrics() -> PlainTextResponse:
        """Prometheus text exposition."""
        return PlainTextResponse(gateway.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/health", dependencies=guard, tags=["monitoring"])
    def health() -> dict[str, Any]:
        return gateway.health()

    @app.get("/api/dead-letters", dependencies=[require(auth.SYSTEM_READ)], tags=["monitoring"])
    def dead_letters(limit: int = Query(default=100, ge=1, le=1000)) -> list[dict[str, Any]]:
        return [{**row, "payload": row["payload"][:1024].decode("utf-8", "replace")} for row in gateway.store.dead_letters(limit)]

    @app.get("/api/me", tags=["auth"])
    def me(request: Request, principal: Principal | None = Depends(auth.caller)) -> dict[str, Any]:
        """Who the token belongs to and what it may do (the dashboard shows buttons by it)."""
        public = request.app.state.auth.public_read
        if principal is None:
            permissions = sorted(auth.PUBLIC_READ_PERMISSIONS) if public else []
            return {"name": None, "role": None, "permissions": permissions, "public_read": public}
        return {"name": principal.name, "role": principal.role, "permissions": sorted(principal.permissions), "public_read": public}


# --------------------------------------------------------------------------- alerts


def _alerts(app: FastAPI, gateway: Gateway, broadcaster: AlertBroadcaster) -> None:
    store = gateway.store

    @app.get("/api/alerts", dependencies=[require(auth.ALERTS_READ)], tags=["alerts"])
    def list_alerts(
        site: str | None = None,
        rule: str | None = None,
        state: list[AlertState] | None = Query(default=None, description="Repeat for several, e.g. state=open&state=acknowledged"),
        severity: list[Severity] | None = Query(default=None),
        subject: str | None = None,
        since: datetime | None = Query(default=None, description="Alerts still open at or after this instant (ISO 8601 with zone)"),
        until: datetime | None = Query(default=None, description="Alerts opened before this instant"),
        limit: int = Query(default=500, ge=1, le=5000),
    ) -> list[dict[str, Any]]:
        """Newest first. The time range selects alerts active at some moment in [since, until)."""
        bounds = [_utc_iso(since, "since"), _utc_iso(until, "until")]
        one_state = state[0] if state and len(state) == 1 else None
        narrow = not (state and len(state) > 1) and severity is None and subject is None and since is None and until is None
        alerts = store.alerts(site=site, rule=rule, state=one_state, limit=limit if narrow else 1_000_000)
        picked = [a for a in alerts if _matches(a, state, severity, subject, *bounds)]
        return [_alert_json(a) for a in picked[:limit]]

    @app.get("/api/alerts/stream", dependencies=[require(auth.ALERTS_READ, cookie=True)], tags=["alerts"],
             response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
    async def alert_stream(request: Request) -> StreamingResponse:
        """Server-sent events: `alert` (data: {"change", "alert"}) for every new or changed
        alert, `reset` when changes were missed (refetch), `bye` at shutdown. Browsers
        authenticate with the cookie from POST /api/session; others with the header."""
        subscriber = broadcaster.subscribe(request.headers.get("last-event-id"))
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(sse_events(broadcaster, subscriber), media_type="text/event-stream", headers=headers)

    @app.post("/api/session", tags=["auth"])
    def open_browser_session(request: Request, response: Response, principal: Principal | None = Depends(auth.caller)) -> dict[str, Any]:
        """For the dashboard: sets an HttpOnly, SameSite=Strict cookie standing for the token
        (signed, 12 h), accepted only by GET /api/alerts/stream and GET /api/reports/*:
        what EventSource and a plain link cannot send a header to. Needs the token itself."""
        if principal is None:
            raise HTTPException(status_code=401, detail="a token is required", headers={"WWW-Authenticate": "Bearer"})
        ticket = request.app.state.auth.issue_session_ticket(principal)
        response.set_cookie(auth.SESSION_COOKIE, ticket, max_age=auth.SESSION_SECONDS, path="/api",
                            httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return {"name": principal.name, "role": principal.role, "expires_in": auth.SESSION_SECONDS}

    @app.delete("/api/session", tags=["auth"])
    def close_browser_session(response: Response, principal: Principal | None = Depends(auth.caller)) -> dict[str, Any]:
        """Signing out: drops the cookie. Like every non-GET endpoint, it needs the token."""
        if principal is None:
            raise HTTPException(status_code=401, detail="a token is required", headers={"WWW-Authenticate": "Bearer"})
        response.delete_cookie(auth.SESSION_COOKIE, path="/api")
        return {}

    @app.get("/api/alerts/{alert_id}", dependencies=[require(auth.ALERTS_READ)], tags=["alerts"])
    def alert_detail(alert_id: int) -> dict[str, Any]:
        alert = store.alert(alert_id)
        if alert is None:
            raise HTTPException(status_code=404, detail=f"no alert {alert_id}")
        return {**_alert_json(alert), "history": store.alert_history(alert_id)}

    @app.post("/api/alerts/{alert_id}/acknowledge", tags=["alerts"])
    def acknowledge(alert_id: int, body: PersonAction = Body(default_factory=PersonAction),
                    principal: Principal = require(auth.ALERTS_WRITE)) -> dict[str, Any]:
        """Take ownership of an open alert (first-responder ownership); 409 if it is not open."""
        return _person_action(gateway.acknowledge, alert_id, principal, body)

    @app.post("/api/alerts/{alert_id}/resolve", tags=["alerts"])
    def resolve(alert_id: int, body: PersonAction = Body(default_factory=PersonAction),
                principal: Principal = require(auth.ALERTS_WRITE)) -> dict[str, Any]:
        """Close an alert, e.g. after a repair; the note says what was done. 409 if resolved."""
        return _person_action(gateway.resolve, alert_id, principal, body)


def _person_action(action: Any, alert_id: int, principal: Principal, body: PersonAction) -> dict[str, Any]:
    try:
        change = action(alert_id, principal.name, body.note)
    except AlertNotFound:
        raise HTTPException(status_code=404, detail=f"no alert {alert_id}") from None
    except AlertStateConflict as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    log.info("alert " + change.action + " by a person", extra={"alert": alert_id, "who": principal.name})
    return _alert_json(change.alert)


def _alert_json(alert: Alert) -> dict[str, Any]:
    return asdict(alert)


def _utc_iso(value: datetime | None, name: str) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise HTTPException(status_code=422, detail=f"{name}: give a time zone, e.g. 2026-11-17T18:00:00Z")
    return value.astimezone(timezone.utc).isoformat()


def _matches(a: Alert, states: list[AlertState] | None, severities: list[Severity] | None, subject: str | None,
             since: str | None, until: str | None) -> bool:
    return (
        (not states or a.state in states)
        and (not severities or a.severity in severities)
        and (subject is None or a.subject == subject)
        and (until is None or a.opened_at < until)
        and (since is None or a.resolved_at is None or a.resolved_at >= since)
    )


# --------------------------------------------------------------------------- devices


def _devices(app: FastAPI, gateway: Gateway) -> None:
    @app.get("/api/devices", dependencies=[require(auth.DEVICES_READ)], tags=["devices"])
    def list_devices() -> list[dict[str, Any]]:
        """Every device the site lists or the gateway heard, and the agents: status
        (ok, silent, offline, unknown), last seen, event counts and heartbeat counters."""
        return _device_views(gateway)

    @app.get("/api/devices/{device}", dependencies=[require(auth.DEVICES_READ)], tags=["devices"])
    def device_detail(device: str) -> dict[str, Any]:
        found = next((d for d in _device_views(gateway) if d["id"] == device), None)
        if found is None:
            raise HTTPException(status_code=404, detail=f"no device {device}")
        return found

    @app.get("/api/devices/{device}/series", dependencies=[require(auth.DEVICES_READ)], tags=["devices"])
    def device_series(
        device: str,
        measurement: str | None = Query(default=None, description="power, energy, flow, volume, door, patrol_tap, device_status, ..."),
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = Query(default=1000, ge=1, le=10_000),
    ) -> list[dict[str, Any]]:
        """The latest points of a device from the historian, oldest first (default: 24 h)."""
        series = getattr(gateway.historian, "series", None)
        if series is None:
            raise HTTPException(status_code=501, detail=(
                f"the {gateway.config.historian.type} historian offers no query here yet: "
                "query it directly (measurement per quantity, tag device); see docs/storage.md"))
        for name, value in (("since", since), ("until", until)):
            _utc_iso(value, name)  # refuses a time without a zone
        start = since or gateway.clock.now() - timedelta(hours=24)
        points = series(device, measurement, start, until, limit)
        return [{"time": p.time.isoformat(), "measurement": p.measurement, "tags": p.tags, "fields": p.fields} for p in points]


def _device_views(gateway: Gateway) -> list[dict[str, Any]]:
    seen = gateway.devices.snapshot()
    silent = {a.subject: a for rule in ("deadman", "deadman_agent") for state in (AlertState.OPEN, AlertState.ACKNOWLEDGED)
              for a in gateway.store.alerts(site=gateway.site.id, rule=rule, state=state, limit=10_000)}
    listed = {d: (b.id, r.id) for b in gateway.site.buildings for r in b.rooms for d in r.devices}
    agents = {key.split("/", 1)[1]: state for key, state in gateway.agents.items() if key.startswith(f"{gateway.site.id}/")}
    views = []
    for device_id in sorted(set(listed) | set(seen) | set(agents)):
        info = seen.get(device_id) or _from_history(gateway, device_id)
        building, room = listed.get(device_id, ("", ""))
        alert = silent.get(device_id)
        state = agents.get(device_id) or (info or {}).get("state")
        status = "silent" if alert else "offline" if state == "offline" else "ok" if info else "unknown"
        views.append({
            "id": device_id, "building": building, "room": room, "agent": device_id in agents, "status": status,
            "last_seen": (info or {}).get("last_seen"), "received_at": (info or {}).get("received_at"),
            "events": (info or {}).get("events", {}), "state": state, "counters": (info or {}).get("counters", {}),
            "alert_id": alert.id if alert else None, "silent_since": alert.opened_at if alert else None,
        })
    return views


def _from_history(gateway: Gateway, device: str) -> dict[str, Any] | None:
    """Last seen of a device the gateway has not heard since it started, from the
    historian (one indexed query), so a restart does not make every device 'unknown'."""
    series = getattr(gateway.historian, "series", None)
    if series is None:
        return None
    try:
        points = series(device, None, None, None, 1)
    except Exception:  # noqa: BLE001 - a busy historian must not break the device list
        log.warning("historian lookup failed", extra={"device": device}, exc_info=True)
        return None
    if not points:
        return None
    return {"last_seen": points[-1].time.isoformat(), "received_at": None, "events": {}, "state": None, "counters": {}}


# --------------------------------------------------------------------------- patrols


def _patrols(app: FastAPI, gateway: Gateway) -> None:
    routes = gateway.config.rules.patrol.routes

    @app.get("/api/patrols/routes", tags=["patrols"])
    def patrol_routes(principal: Principal = require(auth.PATROLS_OWN)) -> list[dict[str, Any]]:
        """The configured routes; a guard sees only the routes they walk."""
        visible = principal.visible_routes(routes)
        return [
            {"id": r.id, "guard": r.guard, "rounds": [f"{t:%H:%M}" for t in r.rounds], "days": sorted(r.days),
             "checkpoints": [{"tag": c.tag, "allowance_minutes": c.allowance_minutes or r.allowance_minutes} for c in r.checkpoints]}
            for r in routes if visible is None or r.id in visible
        ]

    @app.get("/api/patrols/rounds", tags=["patrols"])
    def patrol_rounds(
        night: str | None = Query(default=None, description="YYYY-MM-DD (the date the night starts on) or 'tonight'; none: every round followed"),
        principal: Principal = require(auth.PATROLS_OWN),
    ) -> list[dict[str, Any]]:
        """Rounds being followed, each checkpoint visited, late, missed or pending."""
        visible = principal.visible_routes(routes)
        guards = {r.id: r.guard for r in routes}
        rounds = [{**rnd, "guard": guards.get(str(rnd["route"]))} for rnd in gateway.patrol_rounds
                  if visible is None or rnd["route"] in visible]
        if night is not None:
            start, end = _night_bounds(gateway, _parse_night(gateway, night))
            rounds = [rnd for rnd in rounds if start <= datetime.fromisoformat(str(rnd["starts_at"])) < end]
        return rounds


def _parse_night(gateway: Gateway, night: str) -> date:
    if night == "tonight":
        return current_night(gateway)
    try:
        return date.fromisoformat(night)
    except ValueError:
        raise HTTPException(status_code=422, detail=f"night: expected YYYY-MM-DD or 'tonight', got {night!r}") from None


def current_night(gateway: Gateway) -> date:
    """The night under way or just ended: before noon local it is the one that began yesterday."""
    local = gateway.clock.now().astimezone(gateway.site.zone)
    return local.date() - timedelta(days=1) if local.hour < 12 else local.date()


def _night_bounds(gateway: Gateway, night: date) -> tuple[datetime, datetime]:
    from warden.report import night_bounds

    return night_bounds(gateway.site, night)


# --------------------------------------------------------------------------- reports, config


def _reports_and_admin(app: FastAPI, gateway: Gateway) -> None:
    @app.get("/api/reports/{night}", dependencies=[require(auth.REPORTS_READ, cookie=True)], tags=["reports"],
             responses={200: {"content": {"text/html": {}, "application/json": {}, "text/csv": {}}}})
    def morning_report(night: date, format: Literal["html", "json", "csv"] = "html") -> Response:  # noqa: A002
        """The morning report of the night starting on `night` (18:00-08:00 local)."""
        from warden import report as reports

        data = reports.build_morning_report(gateway.store, _report_history(gateway), gateway.site, night, gateway.config.rules)
        name = f"morning-report-{gateway.site.id}-{night.isoformat()}"
        if format == "json":
            return Response(reports.render_json(data), media_type="application/json")
        if format == "csv":
            return Response(reports.render_csv(data), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
        return HTMLResponse(reports.render_html(data, reports.energy_chart_svg(data)))

    @app.get("/api/config", dependencies=[require(auth.CONFIG_READ)], tags=["admin"])
    def effective_config() -> dict[str, Any]:
        """The gateway's configuration as loaded, secrets left out."""
        data = gateway.config.model_dump(mode="json")
        data["broker"].pop("password", None)
        data["historian"].pop("token", None)
        data["api"]["tokens"] = [{k: v for k, v in t.items() if k != "sha256"} for t in data["api"]["tokens"]]
        return data


def _report_history(gateway: Gateway) -> Any:
    from warden.report import SqliteHistory, open_history

    if isinstance(gateway.config.historian, SqliteHistorianConfig):
        return SqliteHistory(gateway.config.historian.path)
    return open_history(gateway.historian, gateway.site)


# --------------------------------------------------------------------------- dashboard


def _dashboard(app: FastAPI, gateway: Gateway) -> None:
    templates = Jinja2Templates(directory=str(WEB / "templates"))
    app.mount("/static", StaticFiles(directory=str(WEB / "static")), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard(request: Request) -> HTMLResponse:
        """The page holds no data: the script fetches it with the browser's token."""
        night = current_night(gateway)
        nights = [night - timedelta(days=i) for i in range(7)]
        response = templates.TemplateResponse(request, "dashboard.html", {
            "site": gateway.site, "tonight": night.isoformat(), "nights": [n.isoformat() for n in nights],
            "public_read": request.app.state.auth.public_read,
        })
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
        return response


# --------------------------------------------------------------------------- server


class ApiServer:
    """uvicorn in a background thread, so the gateway process runs ingest and API together."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.app = app
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="api", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout / 0.05)):
            if self.server.started:
                return
            deadline.wait(0.05)  # uvicorn offers no start event to wait on
        raise RuntimeError("API server did not start")

    @property
    def url(self) -> str:
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        broadcaster = getattr(self.app.state, "broadcaster", None)
        if broadcaster is not None:
            broadcaster.close()  # open event streams would hold the shutdown up
        self.server.should_exit = True
        self._thread.join(timeout=10)
