"""The gateway's HTTP API (FastAPI; OpenAPI docs at /docs) and the dashboard.

Every endpoint declares the permission it needs (gateway/auth.py); tokens and roles are in
docs/api.md. Nothing that changes state is reachable without a token in the
`Authorization` header; reads may be public on a kiosk gateway (`api.public_read`).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import fastapi_offline
import uvicorn
from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from gateway import auth, workorders_api
from gateway.auth import Authenticator, Principal, require
from gateway.config import ApiConfig
from gateway.historian.points import SeriesUnavailable
from gateway.service import Gateway
from gateway.store import Alert, AlertNotFound, AlertStateConflict
from gateway.text import TypedText
from gateway.web.pages import page_gettext, page_locale, page_site, page_strings
from gateway.web.stream import AlertBroadcaster, sse_events
from rules.alerts import AlertState, Severity
from rules.config import ALERT_RULES
from warden import names
from warden.config import SiteConfig
from warden.events import EARLIEST_TIME
from warden.i18n import N_, localise, pick_locale, site_names

log = logging.getLogger(__name__)

WEB = Path(__file__).parent / "web"
#: The `site` query parameter (issue 21), for lists and for endpoints of one site.
_SITE_LIST = "Only this site's; none: every site the token sees"
_SITE_ONE = "The site (id); may be left out when the token sees one site"
#: How much of a dead letter's payload GET /api/dead-letters shows.
DEAD_LETTER_PREVIEW_BYTES = 1024


class PersonAction(BaseModel):
    """What a person says when acknowledging or resolving: shown in the alert's history."""

    note: TypedText | None = Field(default=None, max_length=2000)


def create_app(gateway: Gateway, config: ApiConfig | None = None) -> FastAPI:
    config = config or gateway.config.api
    app = FastAPI(title="warden gateway", version="1", description="Alerts, devices, patrols, reports. Auth: docs/api.md",
                  docs_url=None, redoc_url=None)  # served below from the installed package, not a CDN
    app.state.auth = Authenticator(config)
    partitioned = getattr(gateway.config, "partition", None) is not None
    auth.check_token_sites(config, list(gateway.sites), partitioned=partitioned)
    app.state.site_locale = gateway.site.locale
    app.state.site_locales = {site_id: site.locale for site_id, site in gateway.sites.items()}
    if app.state.auth.public_read and config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("API reads need no token", extra={"host": config.host, "tokens": len(config.tokens),
                                                      "hint": "set api.public_read: false (docs/api.md)"})
    if len(gateway.sites) > 1:  # per-site gauges beside the totals (issue 21)
        gateway.metrics.watch_sites(list(gateway.sites),
                                    lambda: [(a.site, a.severity, a.rule) for a in gateway.store.alerts_live()])
    app.state.broadcaster = broadcaster = AlertBroadcaster()
    gateway.alert_listeners.append(broadcaster.publish)
    if config.cors_origins:  # closed unless origins are named
        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"], allow_credentials=False)
    app.add_middleware(_SecurityHeaders)
    app.add_middleware(_BodyLimit, limit=config.max_body_bytes,  # added last: runs first, before any parsing
                       larger={workorders_api.PHOTO_PATH: gateway.config.work_orders.photo_max_bytes})
    _error_bodies(app)
    _offline_docs(app)
    _monitoring(app, gateway, config)
    _sites(app, gateway)
    _alerts(app, gateway, broadcaster)
    _devices(app, gateway)
    _patrols(app, gateway)
    _statistics_and_archive(app, gateway)  # before the reports' /api/reports/{night}
    _reports_and_admin(app, gateway)
    _dashboard(app, gateway)
    _declare_errors(app)
    return app


class ErrorBody(BaseModel):
    """Every error the API answers: one line saying what is wrong."""

    detail: str


class _BodyLimit:
    """Refuses a request body over `limit` bytes with 413 before anything parses it or asks
    for a token: at once when Content-Length says so (nothing is read), else as soon as the
    streamed body passes the limit (at most limit + one chunk is read). The body is held
    here, so the app never sees a request larger than the limit. Plain ASGI."""

    def __init__(self, app: Any, limit: int, larger: dict[str, int] | None = None) -> None:
        """`larger`: path pattern -> the limit of those paths instead (a photo upload)."""
        self.app = app
        self.limit = limit
        self.larger = [(re.compile(pattern), bound) for pattern, bound in (larger or {}).items()]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = next((bound for pattern, bound in self.larger if pattern.match(scope.get("path", ""))), self.limit)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            return await self._refuse(send, limit)
        held: list[Any] = []
        size = 0
        while True:
            message = await receive()
            held.append(message)
            if message["type"] != "http.request":
                break  # a disconnect: let the app see it
            size += len(message.get("body", b""))
            if size > limit:
                return await self._refuse(send, limit)
            if not message.get("more_body", False):
                break

        async def replay() -> Any:
            return held.pop(0) if held else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any, limit: int) -> None:
        setting = "api.max_body_bytes" if limit == self.limit else "work_orders.photo_max_bytes"
        body = json.dumps({"detail": f"request body larger than {limit} bytes ({setting})"}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close"),
            *_SecurityHeaders.HEADERS]})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Any) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _error_bodies(app: FastAPI) -> None:
    """Every error as {"detail": "one line"}: validation errors too (FastAPI's own are a
    list), and a date or time out of range (e.g. year 1 or 9999 in a path) is a 422, never a 500."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": "; ".join(problems) or "invalid request"})

    @app.exception_handler(OverflowError)
    async def out_of_range(request: Request, exc: OverflowError) -> JSONResponse:
        log.info("request out of range", extra={"path": request.url.path, "error": str(exc)})
        return JSONResponse(status_code=422, content={"detail": "a date or time out of the supported range"})


#: Assets of Swagger UI and ReDoc, from the installed fastapi-offline package: /docs and
#: /redoc work on a site without internet.
_DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"


def _offline_docs(app: FastAPI) -> None:
    app.mount("/docs-assets", StaticFiles(directory=str(_DOCS_ASSETS)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="warden gateway - API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title="warden gateway - API",
                              redoc_js_url="/docs-assets/redoc.standalone.js",
                              redoc_favicon_url="/docs-assets/favicon.png", with_google_fonts=False)


#: Errors a route answers besides those of its dependencies, by endpoint name.
_ROUTE_ERRORS: dict[str, dict[int, str]] = {
    "alert_detail": {404: "No such alert"},
    "acknowledge": {404: "No such alert", 409: "The alert is not open"},
    "resolve": {404: "No such alert", 409: "The alert is already resolved"},
    "device_detail": {404: "No such device"},
    "device_series": {501: "The historian in use offers no query here"},
    "open_browser_session": {401: "No token, or a wrong one"},
    "close_browser_session": {401: "No token, or a wrong one"},
    **workorders_api.ROUTE_ERRORS,
}


def _declare_errors(app: FastAPI) -> None:
    """Put in the OpenAPI document the errors each route answers (401/403 where a
    permission is required, 404/409/501 where the route raises them, 413 for bodies,
    422 as {"detail": ...}), and mark /api/me as working with or without a token."""
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        errors: dict[int, str] = {422: "Invalid input, or a date or time out of range"}
        if _permission(route.dependant) is not None:
            errors |= {401: "No token (reads may be public: api.public_read), or a wrong one",
                       403: "The token's role lacks the permission"}
        if route.methods & {"POST", "PUT", "PATCH"}:
            errors[413] = "Request body over api.max_body_bytes"
        errors |= _ROUTE_ERRORS.get(route.name, {})
        for status, description in errors.items():
            route.responses.setdefault(status, {"model": ErrorBody, "description": description})

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            for operation in schema["paths"].get("/api/me", {}).values():
                operation["security"] = [{}, {"HTTPBearer": []}]  # optional: answers anonymous callers too
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _permission(dependant: Any) -> str | None:
    """The permission a route's dependencies require (gateway/auth.py: require), if any."""
    for dependency in dependant.dependencies:
        found = getattr(dependency.call, "permission", None) or _permission(dependency)
        if found is not None:
            return str(found)
    return None


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
        """Newest first: `code` (the reason code, as in the rejected metric), `reason`, `size`
        (of the whole payload) and `payload`: its first DEAD_LETTER_PREVIEW_BYTES bytes as text
        (`truncated` says whether there is more; the store keeps up to 64 KiB of it)."""
        return [{**row, "payload": row["payload"][:DEAD_LETTER_PREVIEW_BYTES].decode("utf-8", "replace"),
                 "truncated": row["size"] > DEAD_LETTER_PREVIEW_BYTES} for row in gateway.store.dead_letters(limit)]

    @app.get("/api/me", tags=["auth"])
    def me(request: Request, principal: Principal | None = Depends(auth.caller)) -> dict[str, Any]:
        """Who the token belongs to and what it may do (the dashboard shows buttons by it)."""
        public = request.app.state.auth.public_read
        if principal is None:
            permissions = sorted(auth.PUBLIC_READ_PERMISSIONS) if public else []
            return {"name": None, "role": None, "permissions": permissions, "public_read": public}
        sites = auth.visible_sites(principal, list(gateway.sites))
        visible = principal.visible_routes(r for s in sites for r in gateway.rules_for(s).patrol.routes)
        # A guard's board explains itself when no route is theirs (None: every route).
        routes = sorted(visible) if visible is not None else None
        return {"name": principal.name, "role": principal.role, "permissions": sorted(principal.permissions), "public_read": public,
                "guard": principal.guard, "patrol_routes": routes, "sites": sites}


# --------------------------------------------------------------------------- sites (issue 21)


def _one_site(gateway: Gateway, principal: Principal, site: str | None) -> str:
    """The site an endpoint of one site answers for (gateway/auth.py: one_site)."""
    return auth.one_site(principal, list(gateway.sites), site)


def _routes_of(gateway: Gateway, site_id: str) -> list[Any]:
    """Site `site_id`'s patrol routes (none for a site this gateway does not serve)."""
    return list(gateway.rules_for(site_id).patrol.routes) if site_id in gateway.sites else []


def _names_of(gateway: Gateway, site_id: str) -> Any:
    """The names alert texts use for site `site_id` (the first site's for an unknown one)."""
    site = gateway.sites.get(site_id, gateway.site)
    return site_names(site, gateway.rules_for(site.id))


def _sites(app: FastAPI, gateway: Gateway) -> None:
    @app.get("/api/sites", tags=["sites"])
    def list_sites(request: Request, principal: Principal | None = Depends(auth.caller)) -> list[dict[str, Any]]:
        """The sites this token may see, in the gateway's order (anonymous on a kiosk: all)."""
        if principal is None:
            if not request.app.state.auth.public_read:
                raise HTTPException(status_code=401, detail="a token is required",
                                    headers={"WWW-Authenticate": "Bearer"})
            principal = auth.ANONYMOUS_READER
        return [_site_json(gateway.sites[s]) for s in auth.visible_sites(principal, list(gateway.sites))]

    @app.get("/api/overview", tags=["sites"])
    def overview(principal: Principal = require(auth.REPORTS_READ)) -> list[dict[str, Any]]:
        """Per site the token sees: open (and acknowledged) alerts by severity, energy wasted
        after hours today (as GET /api/energy/waste), last night's patrol compliance (the
        checkpoints judged so far and those visited on time, as the patrol board shows them)
        and the devices silent now (as GET /api/devices says). The alerts are read once for
        every site (bench/overview.py: a few queries per site cost 200 ms at 50 sites on PostgreSQL)."""
        recent: dict[str, list[Alert]] = {}
        for alert in gateway.store.alerts_recent(gateway.clock.now() - _OVERVIEW_ALERT_DAYS):
            recent.setdefault(alert.site, []).append(alert)
        return [_site_overview(gateway, s, recent.get(s, [])) for s in auth.visible_sites(principal, list(gateway.sites))]


def _site_json(site: Any) -> dict[str, Any]:
    return {"id": site.id, "name": site.name or site.id, "timezone": site.timezone, "locale": site.locale}


#: How far back the overview reads resolved alerts: this week's waste counts alerts since Monday 00:00 local
#: (at most 7 days and a zone's offset ago), with a day to spare.
_OVERVIEW_ALERT_DAYS = timedelta(days=9)


def _site_overview(gateway: Gateway, site_id: str, recent: list[Alert]) -> dict[str, Any]:
    """One row of GET /api/overview; `recent`: the site's unresolved alerts and those resolved
    in the last _OVERVIEW_ALERT_DAYS (store.alerts_recent)."""
    unresolved = [a for a in recent if a.state in (AlertState.OPEN, AlertState.ACKNOWLEDGED)]
    by_severity = {severity.value: sum(1 for a in unresolved if a.severity == severity) for severity in Severity}
    today = _waste(gateway, site_id, recent)["today"]
    local_today = gateway.clock.now().astimezone(gateway.sites[site_id].zone).date()
    night = local_today - timedelta(days=1)  # last night began yesterday evening
    start, end = _night_bounds(gateway, night, site_id)
    rounds = [rnd for rnd in _site_rounds(gateway, site_id) if start <= datetime.fromisoformat(str(rnd["starts_at"])) < end]
    checkpoints = [c for rnd in rounds for c in rnd["checkpoints"]]
    due = [c for c in checkpoints if c["state"] != "pending"]
    on_time = sum(1 for c in due if c["state"] == "visited")
    watched = {a.subject for a in unresolved if a.rule in _SILENT_RULES}
    silent = [d for d in _view_ids(gateway, site_id) if d in watched]  # as _device_views' status says
    return {
        **_site_json(gateway.sites[site_id]),
        "open_alerts": {"total": len(unresolved), **by_severity},
        "waste_today": {"kwh": today["total_kwh"], "cost": today["total_cost"], "currency": today["currency"]},
        "patrols": {"night": night.isoformat(), "checkpoints_due": len(due), "checkpoints_on_time": on_time,
                    "compliance": round(on_time / len(due), 3) if due else None},
        "silent_devices": {"count": len(silent), "devices": silent},
    }


# --------------------------------------------------------------------------- alerts


def _alerts(app: FastAPI, gateway: Gateway, broadcaster: AlertBroadcaster) -> None:
    store = gateway.store

    def visible_alert(alert_id: int, principal: Principal) -> Alert:
        """The alert if the caller may see it (its sites; a guard: its post's), else 404."""
        alert = store.alert(alert_id)
        if alert is None or not sees(principal, alert):
            raise HTTPException(status_code=404, detail=f"no alert {alert_id}")
        return alert

    def sees(principal: Principal, alert: Alert) -> bool:
        routes = _routes_of(gateway, alert.site)
        return principal.sees_site(alert.site) and principal.sees_alert(alert.rule, alert.subject, routes)

    def with_links(alerts: list[Alert], locale: str = "en") -> list[dict[str, Any]]:
        """The alerts as JSON in `locale`, each with the repair request made from it, if any."""
        links = gateway.work_orders.by_alerts([a.id for a in alerts])
        names = {site: _names_of(gateway, site) for site in {a.site for a in alerts}}
        return [{**_alert_json(a, locale, names[a.site]), "work_order_id": links.get(a.id)} for a in alerts]

    @app.get("/api/alerts", tags=["alerts"])
    def list_alerts(
        site: str | None = Query(default=None, description=_SITE_LIST),
        rule: str | None = None,
        state: list[AlertState] | None = Query(default=None, description="Repeat for several, e.g. state=open&state=acknowledged"),
        severity: list[Severity] | None = Query(default=None),
        subject: str | None = None,
        room: str | None = Query(default=None, description="Alerts about this room: its id, or a device in it, as subject or detail"),
        since: datetime | None = Query(default=None, description="Alerts still open at or after this instant (ISO 8601 with zone)"),
        until: datetime | None = Query(default=None, description="Alerts opened before this instant"),
        limit: int = Query(default=500, ge=1, le=5000),
        principal: Principal = require(auth.ALERTS_OWN),
        locale: str = Depends(reader_locale),
    ) -> list[dict[str, Any]]:
        """Newest first. The time range selects alerts active at some moment in [since, until).
        A guard (alerts:own) sees the alerts of its post: doors and the rounds it walks.
        `work_order_id`: the repair request made from the alert, if any. `text` (and
        `end_text`) is the message in the reader's locale: the token's, else the site's
        (Accept-Language for anonymous readers); `message` stays the rule's English."""
        bounds = [_utc_iso(since, "since"), _utc_iso(until, "until")]
        _in_range(since, "since")
        _in_range(until, "until")
        sites = auth.sites_asked(principal, list(gateway.sites), site)
        every_site = site is None and len(sites) == len(gateway.sites)
        one_state = state[0] if state and len(state) == 1 else None
        narrow = not (state and len(state) > 1) and severity is None and subject is None and since is None and until is None \
            and room is None and (every_site or len(sites) == 1)
        alerts = store.alerts(site=None if every_site or len(sites) > 1 else sites[0], rule=rule, state=one_state,
                              limit=limit if narrow else 1_000_000)
        in_room = _room_subjects(gateway, room, sites)
        picked = [a for a in alerts if _matches(a, state, severity, subject, *bounds) and _in_room(a, in_room)
                  and (every_site or a.site in sites) and sees(principal, a)]
        return with_links(picked[:limit], locale)

    @app.get("/api/alerts/stream", tags=["alerts"],
             response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
    async def alert_stream(request: Request, principal: Principal = require(auth.ALERTS_OWN, cookie=True)) -> StreamingResponse:
        """Server-sent events: `alert` (data: {"change", "alert"}) for every new or changed
        alert, `reset` when changes were missed (refetch), `bye` at shutdown. Browsers
        authenticate with the cookie from POST /api/session; others with the header.
        A guard's stream carries only the alerts of its post."""
        subscriber = broadcaster.subscribe(request.headers.get("last-event-id"))
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        frames = sse_events(broadcaster, subscriber)
        if not principal.can(auth.ALERTS_READ) or principal.sites:
            frames = _of_post(frames, principal, lambda site: _routes_of(gateway, site))
        return StreamingResponse(frames, media_type="text/event-stream", headers=headers)

    browser_session_routes(app)

    @app.get("/api/alerts/{alert_id}", tags=["alerts"])
    def alert_detail(alert_id: int, principal: Principal = require(auth.ALERTS_OWN),
                     locale: str = Depends(reader_locale)) -> dict[str, Any]:
        alert = visible_alert(alert_id, principal)
        names = _names_of(gateway, alert.site)
        history = [{**step, "text": localise(step["message"], step["message_id"], step["params"], locale, names)}
                   for step in store.alert_history(alert_id)]
        return {**with_links([alert], locale)[0], "history": history}

    @app.post("/api/alerts/{alert_id}/acknowledge", tags=["alerts"])
    def acknowledge(alert_id: int, body: PersonAction = Body(default_factory=PersonAction),
                    principal: Principal = require(auth.ALERTS_ACK)) -> dict[str, Any]:
        """Take ownership of an open alert (first-responder ownership); 409 if it is not open.
        A guard acknowledges the alerts of its post, a manager any."""
        alert = visible_alert(alert_id, principal)
        site = gateway.sites.get(alert.site, gateway.site)
        return _person_action(gateway.acknowledge, alert_id, principal, body, site)

    @app.post("/api/alerts/{alert_id}/resolve", tags=["alerts"])
    def resolve(alert_id: int, body: PersonAction = Body(default_factory=PersonAction),
                principal: Principal = require(auth.ALERTS_WRITE)) -> dict[str, Any]:
        """Close an alert, e.g. after a repair; the note says what was done. 409 if resolved."""
        alert = visible_alert(alert_id, principal)
        site = gateway.sites.get(alert.site, gateway.site)
        return _person_action(gateway.resolve, alert_id, principal, body, site)


def browser_session_routes(app: FastAPI) -> None:
    """POST and DELETE /api/session (the dashboard's cookie), for the gateway and the view across partitions."""

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


async def _of_post(frames: AsyncIterator[str], principal: Principal,
                   routes: Callable[[str], Any]) -> AsyncIterator[str]:
    """The frames of an alert stream, without the `alert` events of alerts the caller may
    not see (another site's; a guard: other posts'); keep-alives, resets and bye pass.
    `routes`: a site's patrol routes."""
    async for frame in frames:
        head, found, data = frame.partition("\nevent: alert\ndata: ")
        if found:
            alert = json.loads(data)["alert"]
            site = str(alert.get("site", ""))
            if not principal.sees_site(site) or not principal.sees_alert(alert["rule"], alert["subject"], routes(site)):
                continue
        yield frame


def _person_action(action: Any, alert_id: int, principal: Principal, body: PersonAction, site: Any = None) -> dict[str, Any]:
    """`site`: to word the answer in the person's locale (their token's, else the site's)."""
    try:
        change = action(alert_id, principal.name, body.note)
    except AlertNotFound:
        raise HTTPException(status_code=404, detail=f"no alert {alert_id}") from None
    except AlertStateConflict as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from None
    log.info("alert " + change.action + " by a person", extra={"alert": alert_id, "who": principal.name})
    if site is None:
        return _alert_json(change.alert)
    return _alert_json(change.alert, principal.locale or site.locale, site_names(site))


def _alert_json(alert: Alert, locale: str = "en", names: Any = None) -> dict[str, Any]:
    """The alert as stored, with `text`/`end_text`: its message and ending in `locale`."""
    data = asdict(alert)
    data["text"] = localise(alert.message, alert.message_id, alert.params, locale, names)
    data["end_text"] = (localise(alert.end_message, alert.end_message_id, alert.end_params, locale, names)
                        if alert.end_message is not None else None)
    return data


def reader_locale(request: Request, principal: Principal | None = Depends(auth.caller)) -> str:
    """Who reads, in which language: the token's locale, else (anonymous, e.g. a kiosk) the
    browser's Accept-Language among the shipped ones, else the site's (of several: the
    first the token sees)."""
    site_locale: str = request.app.state.site_locale
    if principal is not None and not principal.anonymous:
        locales: dict[str, str] = request.app.state.site_locales
        return principal.locale or next((loc for s, loc in locales.items() if principal.sees_site(s)), site_locale)
    return pick_locale(request.headers.get("accept-language"), site_locale)


def _utc_iso(value: datetime | None, name: str) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise HTTPException(status_code=422, detail=f"{name}: give a time zone, e.g. 2026-11-17T18:00:00Z")
    return value.astimezone(timezone.utc).isoformat()


#: Query times outside [EARLIEST_TIME, LATEST_QUERY_TIME) are refused (422): no event is
#: stored outside them, and the historians' integer times cannot hold year 1 or 9999.
LATEST_QUERY_TIME = datetime(2100, 1, 1, tzinfo=timezone.utc)


def _in_range(value: datetime | None, name: str) -> None:
    if value is not None and not EARLIEST_TIME <= value < LATEST_QUERY_TIME:
        raise HTTPException(status_code=422, detail=f"{name}: expected a time from {EARLIEST_TIME.date()} to {LATEST_QUERY_TIME.date()}")


def _matches(a: Alert, states: list[AlertState] | None, severities: list[Severity] | None, subject: str | None,
             since: str | None, until: str | None) -> bool:
    return (
        (not states or a.state in states)
        and (not severities or a.severity in severities)
        and (subject is None or a.subject == subject)
        and (until is None or a.opened_at < until)
        and (since is None or a.resolved_at is None or a.resolved_at >= since)
    )


def _room_subjects(gateway: Gateway, room: str | None, sites: list[str]) -> frozenset[str] | None:
    """The ids an alert about `room` names: the room and the devices `sites` list in it (None: no filter)."""
    if room is None:
        return None
    devices = [d for s in sites for b in gateway.sites[s].buildings for r in b.rooms if r.id == room for d in r.devices]
    return frozenset([room, *devices])


def _in_room(a: Alert, subjects: frozenset[str] | None) -> bool:
    """The alert's subject, or the room or device its details name, is one of `subjects`."""
    if subjects is None:
        return True
    return a.subject in subjects or str(a.details.get("room", "")) in subjects or str(a.details.get("device", "")) in subjects


# --------------------------------------------------------------------------- devices


def _devices(app: FastAPI, gateway: Gateway) -> None:
    @app.get("/api/devices", tags=["devices"])
    def list_devices(site: str | None = Query(default=None, description=_SITE_ONE),
                     principal: Principal = require(auth.DEVICES_READ)) -> list[dict[str, Any]]:
        """Every device the site lists or the gateway heard, and the agents: status
        (ok, silent, offline, unknown), last seen, event counts and heartbeat counters."""
        return _device_views(gateway, _one_site(gateway, principal, site))

    @app.get("/api/devices/{device}", tags=["devices"])
    def device_detail(device: str, site: str | None = Query(default=None, description=_SITE_ONE),
                      principal: Principal = require(auth.DEVICES_READ)) -> dict[str, Any]:
        views = _device_views(gateway, _one_site(gateway, principal, site))
        found = next((d for d in views if d["id"] == device), None)
        if found is None:
            raise HTTPException(status_code=404, detail=f"no device {device}")
        return found

    @app.get("/api/devices/{device}/series", tags=["devices"])
    def device_series(
        device: str,
        site: str | None = Query(default=None, description=_SITE_ONE),
        principal: Principal = require(auth.DEVICES_READ),
        measurement: str | None = Query(default=None, description="power, energy, flow, volume, door, patrol_tap, device_status, ..."),
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = Query(default=1000, ge=1, le=10_000),
    ) -> list[dict[str, Any]]:
        """The latest points of a device from the historian, oldest first (default: 24 h)."""
        site_id = _one_site(gateway, principal, site)
        if len(gateway.sites) > 1 and device not in _site_devices(gateway, site_id):
            raise HTTPException(status_code=404, detail=f"no device {device}")
        series = getattr(gateway.historian, "series", None)
        if series is None:
            raise HTTPException(status_code=501, detail=(
                f"the {gateway.config.historian.type} historian offers no query here yet: "
                "query it directly (measurement per quantity, tag device); see docs/storage.md"))
        for name, value in (("since", since), ("until", until)):
            _utc_iso(value, name)  # refuses a time without a zone
            _in_range(value, name)
        start = since or gateway.clock.now() - timedelta(hours=24)
        try:
            points = series(device, measurement, start, until, limit, **_one_sites(gateway, site_id))
        except SeriesUnavailable as exc:
            raise HTTPException(status_code=501, detail=str(exc)) from None
        return [{"time": p.time.isoformat(), "measurement": p.measurement, "tags": p.tags, "fields": p.fields} for p in points]


def _device_views(gateway: Gateway, site_id: str) -> list[dict[str, Any]]:
    """The devices of one site. With several sites a device heard but listed by no site
    counts only if the registry says it is this site's."""
    site = gateway.sites[site_id]
    seen = _site_seen(gateway, site_id)
    silent = {a.subject: a for rule in _SILENT_RULES for state in (AlertState.OPEN, AlertState.ACKNOWLEDGED)
              for a in gateway.store.alerts(site=site_id, rule=rule, state=state, limit=10_000)}
    listed = {d: (b.id, r.id) for b in site.buildings for r in b.rooms for d in r.devices}
    agents = _site_agents(gateway, site_id)
    link = gateway.campus_links.device_fields(site_id)  # a cut-off campus: its devices' silence is the link's
    views = []
    now = gateway.clock.now()
    for device_id in _view_ids(gateway, site_id, seen):
        info = seen.get(device_id) or _from_history(gateway, device_id, site_id)
        building, room = listed.get(device_id, ("", ""))
        alert = silent.get(device_id)
        state = agents.get(device_id) or (info or {}).get("state")
        status = "silent" if alert else "offline" if state == "offline" else "ok" if info else "unknown"
        heard = (info or {}).get("last_seen")  # any event, heartbeats included
        # A silent device was last seen when its alert says: its last data, not a later heartbeat.
        last_seen = str(alert.details["last_event"]) if alert and alert.details.get("last_event") else heard
        views.append({
            "id": device_id, "building": building, "room": room, "agent": device_id in agents, "status": status,
            "name": names.name_or_id(names.device_name(site, device_id), device_id),
            "building_name": names.name_or_id(names.building_name(site, building), building),
            "room_name": names.name_or_id(names.room_name(site, room, building), room),
            "last_seen": last_seen, "last_heard": heard, "checked_at": now.isoformat(),
            "last_seen_seconds_ago": round((now - datetime.fromisoformat(last_seen)).total_seconds()) if last_seen else None,
            "received_at": (info or {}).get("received_at"),
            "events": (info or {}).get("events", {}), "state": state, "counters": (info or {}).get("counters", {}),
            "clock_ahead": (info or {}).get("clock_ahead"),  # a device clock ahead of its agent's (clamp_device_clock)
            "alert_id": alert.id if alert else None, "silent_since": alert.opened_at if alert else None, **link,
        })
    return views


#: The rules whose unresolved alert makes a device "silent" in GET /api/devices.
_SILENT_RULES = ("deadman", "deadman_agent")


def _site_agents(gateway: Gateway, site_id: str) -> dict[str, Any]:
    return {key.split("/", 1)[1]: state for key, state in gateway.agents.items() if key.startswith(f"{site_id}/")}


def _view_ids(gateway: Gateway, site_id: str, seen: dict[str, Any] | None = None) -> list[str]:
    """The devices GET /api/devices lists for a site: those its file lists, those heard, its agents."""
    listed = _site_devices(gateway, site_id)
    return sorted(listed | set(_site_seen(gateway, site_id) if seen is None else seen) | set(_site_agents(gateway, site_id)))


def _one_sites(gateway: Gateway, site_id: str) -> dict[str, str]:
    """The historian's series() argument keeping one site's device: sites repeat device ids
    (gateway/historian: sqlite, influx). None on a one-site gateway, whatever its historian."""
    return {"site": site_id} if len(gateway.sites) > 1 else {}


def _site_devices(gateway: Gateway, site_id: str) -> set[str]:
    """The devices site `site_id` lists."""
    return {d for b in gateway.sites[site_id].buildings for r in b.rooms for d in r.devices}


def _site_seen(gateway: Gateway, site_id: str) -> dict[str, dict[str, Any]]:
    """What the registry heard of site `site_id`'s devices: everything on a one-site gateway;
    with several, what it heard at that site (its entries are by site and device)."""
    if len(gateway.sites) == 1:
        return gateway.devices.snapshot()
    return gateway.devices.snapshot(site_id)  # by (site, device): sites repeat device ids


def _from_history(gateway: Gateway, device: str, site_id: str) -> dict[str, Any] | None:
    """Last seen of a device the gateway has not heard since it started, from the
    historian (one indexed query), so a restart does not make every device 'unknown'.
    Sites repeat device ids: with several, the site's own device's."""
    series = getattr(gateway.historian, "series", None)
    if series is None:
        return None
    try:
        points = series(device, None, None, None, 1, **_one_sites(gateway, site_id))
    except Exception:  # noqa: BLE001 - a busy historian must not break the device list
        log.warning("historian lookup failed", extra={"device": device}, exc_info=True)
        return None
    if not points:
        return None
    return {"last_seen": points[-1].time.isoformat(), "received_at": None, "events": {}, "state": None, "counters": {}}


# --------------------------------------------------------------------------- patrols


def _patrols(app: FastAPI, gateway: Gateway) -> None:
    @app.get("/api/patrols/routes", tags=["patrols"])
    def patrol_routes(site: str | None = Query(default=None, description=_SITE_ONE),
                      principal: Principal = require(auth.PATROLS_OWN)) -> list[dict[str, Any]]:
        """The configured routes; a guard sees only the routes they walk."""
        routes = _routes_of(gateway, _one_site(gateway, principal, site))
        visible = principal.visible_routes(routes)
        return [
            {"id": r.id, "guard": r.guard, "rounds": [f"{t:%H:%M}" for t in r.rounds], "days": sorted(r.days),
             "checkpoints": [{"tag": c.tag, "allowance_minutes": c.allowance_minutes or r.allowance_minutes} for c in r.checkpoints]}
            for r in routes if visible is None or r.id in visible
        ]

    @app.get("/api/patrols/rounds", tags=["patrols"])
    def patrol_rounds(
        night: str | None = Query(default=None, description="YYYY-MM-DD (the date the night starts on) or 'tonight'; none: every round followed"),
        site: str | None = Query(default=None, description=_SITE_ONE),
        principal: Principal = require(auth.PATROLS_OWN),
    ) -> list[dict[str, Any]]:
        """Rounds being followed, each checkpoint visited, late, missed or pending."""
        site_id = _one_site(gateway, principal, site)
        routes = _routes_of(gateway, site_id)
        visible = principal.visible_routes(routes)
        guards = {r.id: r.guard for r in routes}
        rounds = [{**rnd, "guard": guards.get(str(rnd["route"]))} for rnd in _site_rounds(gateway, site_id)
                  if visible is None or rnd["route"] in visible]
        if night is not None:
            start, end = _night_bounds(gateway, _parse_night(gateway, night, site_id), site_id)
            rounds = [rnd for rnd in rounds if start <= datetime.fromisoformat(str(rnd["starts_at"])) < end]
        return rounds


def _parse_night(gateway: Gateway, night: str, site_id: str | None = None) -> date:
    if night == "tonight":
        return current_night(gateway, site_id)
    try:
        day = date.fromisoformat(night)
    except ValueError:
        raise HTTPException(status_code=422, detail=f"night: expected YYYY-MM-DD or 'tonight', got {night!r}") from None
    _in_range(datetime.combine(day, datetime.min.time(), timezone.utc), "night")
    return day


def current_night(gateway: Gateway, site_id: str | None = None) -> date:
    """The night under way or just ended: before noon local it is the one that began yesterday."""
    site = gateway.sites[site_id] if site_id is not None else gateway.site
    local = gateway.clock.now().astimezone(site.zone)
    return local.date() - timedelta(days=1) if local.hour < 12 else local.date()


def _night_bounds(gateway: Gateway, night: date, site_id: str | None = None) -> tuple[datetime, datetime]:
    from gateway.report import night_bounds

    return night_bounds(gateway.sites[site_id] if site_id is not None else gateway.site, night)


def _site_rounds(gateway: Gateway, site_id: str) -> list[dict[str, Any]]:
    """The rounds the rules follow at site `site_id`: on a one-site gateway all of them; with
    several, those the round marks as the site's (`site`), else those of the site's routes."""
    if len(gateway.sites) == 1:
        return list(gateway.patrol_rounds)
    routes = {r.id for r in _routes_of(gateway, site_id)}
    return [rnd for rnd in gateway.patrol_rounds if rnd.get("site", site_id) == site_id and rnd["route"] in routes]


# --------------------------------------------------------------------------- reports, config


def _reports_and_admin(app: FastAPI, gateway: Gateway) -> None:
    @app.get("/api/reports/{night}", tags=["reports"],
             responses={200: {"content": {"text/html": {}, "application/json": {}, "text/csv": {}}}})
    def morning_report(night: date, format: Literal["html", "json", "csv"] = "html",  # noqa: A002
                       site: str | None = Query(default=None, description=_SITE_ONE),
                       principal: Principal = require(auth.REPORTS_READ, cookie=True)) -> Response:
        """The morning report of the day `night` (the path keeps its former name): from
        `report.day_start` (08:00 local by default) on that date to the same time the next day."""
        from gateway import report as reports
        from gateway.report_jobs import daily_report, with_statistics

        site_id = _one_site(gateway, principal, site)
        config = gateway.config_for(site_id)
        try:
            history = _report_history(gateway, site_id)
            data = daily_report(gateway.store, history, gateway.sites[site_id], config, night)  # + statistics
        except ValueError as exc:  # a date out of the range a report can cover
            raise HTTPException(status_code=422, detail=str(exc)) from None
        name = f"morning-report-{site_id}-{night.isoformat()}"
        if format == "json":
            return Response(reports.render_json(data), media_type="application/json")
        if format == "csv":
            return Response(reports.render_csv(data), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
        return HTMLResponse(with_statistics(reports.render_html(data, reports.energy_chart_svg(data)), data))

    @app.get("/api/config", dependencies=[require(auth.CONFIG_READ)], tags=["admin"])
    def effective_config() -> dict[str, Any]:
        """The gateway's configuration as loaded, without any field the config models
        declare secret (passwords, tokens and their hashes, webhook URLs and headers)."""
        return auth.redacted(gateway.config)


def _statistics_and_archive(app: FastAPI, gateway: Gateway) -> None:
    from gateway import monthly, report_schedule, statistics

    @app.get("/api/statistics", tags=["statistics"])
    def hourly_statistics(
        since: datetime, until: datetime, device: list[str] | None = Query(default=None),
        quantity: str | None = None, period: Literal["hour", "day"] = "hour",
        site: str | None = Query(default=None, description=_SITE_ONE),
        principal: Principal = require(auth.DEVICES_READ),
    ) -> list[dict[str, Any]]:
        """Hourly (or local-day) statistics per series in [since, until): count, min, max,
        mean, on-samples and first/last value (registers), kept forever (docs/storage.md).
        With several sites, only the devices the site lists."""
        for name, value in (("since", since), ("until", until)):
            _utc_iso(value, name)
            _in_range(value, name)
        if until - since > timedelta(days=400):
            raise HTTPException(status_code=422, detail="until: at most 400 days after since")
        site_id = _one_site(gateway, principal, site)
        devices = device  # the series are keyed by site (sites repeat device ids): the reader keeps this site's

        def query(db: Any) -> list[dict[str, Any]]:
            reader = statistics.StatisticsReader(db, site_id)
            if period == "day":
                return statistics.daily(reader, gateway.sites[site_id], since, until, devices, quantity)
            return [statistics.hour_json(r) for r in reader.hours(since, until, devices, quantity)]

        return gateway.store.read(query)  # type: ignore[no-any-return]

    @app.get("/api/reports/month/{month}", tags=["reports"],
             responses={200: {"content": {"text/html": {}, "application/json": {}, "text/csv": {}}}})
    def monthly_report(month: str, format: Literal["html", "json", "csv"] = "html",  # noqa: A002
                       site: str | None = Query(default=None, description=_SITE_ONE),
                       principal: Principal = require(auth.REPORTS_READ, cookie=True)) -> Response:
        """The monthly report (meters' start and end registers per meter and group, alert and
        repair-request response times and satisfaction, the view per building, team and
        site), from the statistics."""
        try:
            monthly.parse_month(month)
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        site_id = _one_site(gateway, principal, site)
        data = monthly.build_monthly_report(gateway.store, gateway.sites[site_id], month,
                                            routes=_routes_of(gateway, site_id), work_orders=gateway.config.work_orders, generated_at=gateway.clock.now())
        if format == "json":
            return JSONResponse(data)
        if format == "csv":
            name = f"meters-{site_id}-{data['month']}.csv"
            return Response(monthly.monthly_csv(data), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})
        return HTMLResponse(monthly.monthly_html(data))

    @app.get("/api/energy/waste", tags=["reports"])
    def energy_waste(site: str | None = Query(default=None, description=_SITE_ONE),
                     principal: Principal = require(auth.REPORTS_READ)) -> dict[str, Any]:
        """Energy wasted after hours by building (kWh and cost, as the morning report counts it):
        `today` from local midnight and `week` from Monday 00:00 local, both to now; with names."""
        return _waste(gateway, _one_site(gateway, principal, site))

    only = gateway.site.id if len(gateway.sites) == 1 else None  # whose reports an archive from before sites holds

    @app.get("/api/reports/archive", tags=["reports"])
    def report_archive(site: str | None = Query(default=None, description="One site's reports (default: every site seen)"),
                       principal: Principal = require(auth.REPORTS_READ, cookie=True)) -> list[dict[str, str]]:
        """Reports made on the schedule (report.send), newest first: those of the sites the token sees."""
        sites = auth.sites_asked(principal, list(gateway.sites), site)
        return gateway.store.read(lambda db: report_schedule.archive_list(db, sites, only))  # type: ignore[no-any-return]

    @app.get("/api/reports/archive/{kind}/{label}", tags=["reports"], response_class=HTMLResponse)
    def archived_report(kind: Literal["daily", "monthly"], label: str,
                        site: str | None = Query(default=None, description=_SITE_ONE),
                        principal: Principal = require(auth.REPORTS_READ, cookie=True)) -> HTMLResponse:
        """An archived report's HTML, as it was sent (a site's own report, for the tokens that see the site)."""
        site_id = _one_site(gateway, principal, site)
        folder = gateway.store.read(lambda db: report_schedule.archive_folder(db, kind, label, site_id, only))
        page = report_schedule.archived_html(folder, kind) if folder is not None else None
        if page is None or not page.exists():
            raise HTTPException(status_code=404, detail=f"no archived {kind} report {label}")
        return HTMLResponse(page.read_text(encoding="utf-8"))


def _report_history(gateway: Gateway, site_id: str) -> Any:
    from gateway.report_jobs import report_history

    return report_history(gateway.config, gateway.historian, gateway.sites[site_id])


def _waste(gateway: Gateway, site_id: str, alerts: list[Alert] | None = None) -> dict[str, Any]:
    """GET /api/energy/waste of one site (the overview shows its `today`); `alerts`: the site's
    alerts of this week, already read (default: every alert of the site)."""
    from gateway.report import waste_so_far

    site = gateway.sites[site_id]
    alerts = gateway.store.alerts(site=site_id, limit=1_000_000) if alerts is None else alerts
    spans = waste_so_far(alerts, site, gateway.clock.now())
    for span in spans.values():
        for row in span["by_building"]:
            row["name"] = names.name_or_id(names.building_name(site, row["building"]), row["building"])
    return spans


# --------------------------------------------------------------------------- dashboard


#: The dashboard pages' Content-Security-Policy: scripts and styles only from the gateway.
DASHBOARD_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                 "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def _dashboard(app: FastAPI, gateway: Gateway) -> None:
    templates = Jinja2Templates(directory=str(WEB / "templates"))
    app.mount("/static", StaticFiles(directory=str(WEB / "static")), name="static")
    workorders_api.register(app, gateway, templates, DASHBOARD_CSP)  # issue 18: work orders, duty alerts

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard(request: Request, site: str | None = None) -> HTMLResponse:
        """The page holds no data: the script fetches it with the browser's token. Its words are
        in the site's locale (a kiosk's Accept-Language may pick another shipped one). `site`:
        the site it shows (issue 21; default the first); the script offers the token's sites."""
        return dashboard_page(request, templates, gateway, page_site(gateway.sites, site))


def dashboard_page(request: Request, templates: Jinja2Templates, gateway: Gateway, shown: SiteConfig) -> HTMLResponse:
    """The dashboard's page for site `shown` (the view across partitions serves it too, gateway/view.py)."""
    night = current_night(gateway, shown.id)
    nights = [night - timedelta(days=i) for i in range(7)]
    locale = page_locale(request, shown.locale)
    response = templates.TemplateResponse(request, "dashboard.html", {
        "site": shown, "tonight": night.isoformat(), "nights": [n.isoformat() for n in nights],
        "public_read": request.app.state.auth.public_read, "lang": locale, "_": page_gettext(locale),
        "strings": json.dumps(dashboard_strings(locale), ensure_ascii=False), "site_count": len(gateway.sites),
        "rules": sorted(ALERT_RULES),
        "rooms": [(r.id, names.label(r.name, r.id)) for b in shown.buildings for r in b.rooms],
    })
    response.headers["Content-Language"] = locale
    response.headers["Content-Security-Policy"] = DASHBOARD_CSP
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


#: What dashboard.js shows (its `t(...)`), translated into the page so the script needs no catalogue.
DASHBOARD_STRINGS = (
    N_("The gateway refused this token."), N_("Sign in with an API token."), N_("Acknowledge"), N_("Resolve"),
    N_(" by {who}"), N_("Resolve: what was done? (optional note)"), N_("Could not {action} alert {id}: {error}"),
    N_("acknowledge"), N_("resolve"), N_("live"), N_("reconnecting"), N_(" · not started"), N_(" (agent)"),
    N_("Could not load the dashboard: {error}"), N_("open"), N_("acknowledged"), N_("resolved"), N_("info"),
    N_("warning"), N_("critical"), N_("ok"), N_("silent"), N_("offline"), N_("unknown"), N_("pending"),
    N_("visited"), N_("late"), N_("missed"), N_("early"), N_("due"),
    # issue 19: last seen in words, the devices' chart, the energy view, the report archive
    N_("never"), N_("just now"), N_("{n} min ago"), N_("{n} days ago"), N_("{h} h {m} min ago"), N_("{h} h ago"),
    N_("last seen"), N_("no data"), N_("{quantity}, hourly mean: {low} to {high} {unit}"), N_("max"),
    N_("(no building)"), N_("Total"), N_("daily report"), N_("monthly report"), N_("made {when}"),
    N_("Work order"), N_("Work order #{id}"),
    # issue 21: the site picker and the overview of every site
    N_("All sites"), N_("Open alerts"), N_("Energy wasted today"), N_("Patrols last night"), N_("Silent devices"),
    N_("{on_time} of {due} checkpoints on time"),
    N_("campus link down since {time}"),  # a cut-off campus's devices
)


def dashboard_strings(locale: str) -> dict[str, str]:
    """The words the dashboard's script shows, in `locale` (read from the page, not fetched)."""
    return page_strings(DASHBOARD_STRINGS, locale)
