"""One view across partitions (issue 21): a district manager's API over every partition's state.

`warden view --config view.yaml` names the partitions' own gateway configs. It loads every
site of the district (each partition's share, by the same hash the gateways use), opens each
partition's PostgreSQL state (one database per partition, docs/storage.md) and serves the
cross-site reads: `/api/sites`, `/api/overview`, `/api/alerts` and an alert's detail. It
ingests nothing and runs no rule: no MQTT session, no lease, no schedule, so copies of it
can run anywhere, behind a load balancer.

Alert ids repeat across partitions (each database counts its own), so the view shows
`id = partition's id x 100 + partition index` (VIEW_ID_STRIDE): alert 1201 is partition 1's
alert 12; each alert also carries `partition` with its own id there.

Writes are refused (409, naming the partition and its API). A person's action is a store
transaction the partition would see (escalation reads the row), but the partition's API
process is what announces it: the MQTT alerts topic, webhooks, bots and its live stream.
Written from here, the alert would change and nobody would be told.

SQLite state is refused at start-up: a SQLite file belongs to its one gateway process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import Field, model_validator

from gateway import api as gateway_api
from gateway import auth
from gateway.auth import Authenticator, Principal, require
from gateway.config import ApiConfig, GatewayConfig
from gateway.db import is_postgres_url
from gateway.devices import DeviceRegistry
from gateway.lease import where
from gateway.service import committed_rules
from gateway.sites import load_sites
from gateway.store import Alert, AlertChange, StateStore
from gateway.web.stream import AlertBroadcaster, sse_events
from gateway.workorders import WorkOrders
from rules.alerts import AlertState, Severity
from rules.config import RulesConfig
from warden.clock import Clock, SystemClock
from warden.config import ConfigError, ConfigPath, SiteConfig, StrictModel, load_config
from warden.events import Identifier
from warden.i18n import localise

log = logging.getLogger(__name__)

#: View alert id = the partition's alert id x VIEW_ID_STRIDE + the partition's index: readable
#: in decimal (the last two digits are the partition), so a view holds at most this many partitions.
VIEW_ID_STRIDE = 100
#: How long the patrol rounds read from a partition's rule state are reused (real seconds): the
#: overview shows last night's compliance, and rebuilding the rules costs a snapshot's restore.
ROUNDS_REFRESH_SECONDS = 30.0
#: How often the view asks each partition for new alert steps, for the dashboard's live stream (real seconds).
FOLLOW_SECONDS = 2.0

T = TypeVar("T")


class ViewConfig(StrictModel):
    """`warden view`: the partitions it shows and its own API (tokens scoped to sites as a gateway's)."""

    id: Identifier = "view"
    partitions: list[ConfigPath] = Field(
        min_length=1,
        max_length=VIEW_ID_STRIDE,
        description="Each partition's gateway config file (its sites and state_db)",
    )
    partition_urls: list[str] = Field(
        default_factory=list,
        description=(
            "Each partition's dashboard as people's browsers reach it, in the order of `partitions`"
            " (default: http://<api.host>:<api.port> of its config); a site's page links there"
        ),
    )
    api: ApiConfig = Field(default_factory=ApiConfig)

    @model_validator(mode="after")
    def _a_url_per_partition(self) -> ViewConfig:
        if self.partition_urls and len(self.partition_urls) != len(self.partitions):
            raise ValueError(
                f"partition_urls: give one per partition ({len(self.partitions)}), or none;"
                f" got {len(self.partition_urls)}"
            )
        return self


class PartitionUnavailable(RuntimeError):
    """A partition's state database did not answer; the message names the partition."""


@dataclass
class Partition:
    """One partition as the view reads it: its config, sites and state."""

    index: int  # its place in the view (alert ids' last two digits): its partition index when partitioned
    config: GatewayConfig
    served: list[tuple[SiteConfig, RulesConfig]]
    store: StateStore
    work_orders: WorkOrders
    url: str  # its dashboard and API, as browsers reach it
    _rounds: list[dict[str, Any]] = field(default_factory=list)
    _rounds_at: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def label(self) -> str:
        """How messages name it: `partition 1 of 2 (gateway district-p1, API http://...)`."""
        p = self.config.partition
        which = f"partition {p.index} of {p.count}" if p is not None else f"gateway {self.config.id}"
        return f"{which} (gateway {self.config.id}, API {self.url})"

    def describe(self) -> dict[str, Any]:
        """The `partition` field of the view's JSON: where a row came from and where to act on it."""
        return {"index": self.index, "gateway": self.config.id, "api": self.url}

    def read(self, work: Callable[[], T]) -> T:
        """`work` on this partition's state; 503 (PartitionUnavailable) if its database is down."""
        try:
            return work()
        except psycopg.OperationalError as exc:
            raise PartitionUnavailable(
                f"{self.label}: state database unreachable ({_server(self.config.state_db)}): {_first_line(exc)}"
            ) from None

    def rounds(self) -> list[dict[str, Any]]:
        """The partition's patrol rounds as its rules hold them at the last commit, rebuilt at most
        every ROUNDS_REFRESH_SECONDS."""
        with self._lock:
            if time.monotonic() - self._rounds_at >= ROUNDS_REFRESH_SECONDS:
                engine, _ = self.read(lambda: committed_rules(self.served, self.store))
                self._rounds, self._rounds_at = engine.rounds_state(), time.monotonic()
            return self._rounds

    def close(self) -> None:
        self.store.close()
        self.work_orders.close()


class District:
    """Every partition's sites in one place, answering what gateway/api.py's per-site helpers read
    of a gateway (sites, rules, clock, patrol rounds). The view hears no device and no agent:
    its device registry stays empty, so a site's devices are those its file lists."""

    def __init__(self, partitions: list[Partition], clock: Clock) -> None:
        self.partitions = partitions
        self.clock = clock
        self.sites: dict[str, SiteConfig] = {s.id: s for p in partitions for s, _ in p.served}
        self._rules = {s.id: rules for p in partitions for s, rules in p.served}
        self.owner: dict[str, Partition] = {s.id: p for p in partitions for s, _ in p.served}
        self.site = next(iter(self.sites.values()))
        self.devices = DeviceRegistry()
        self.agents: dict[str, str] = {}
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None

    def rules_for(self, site_id: str) -> RulesConfig:
        return self._rules[site_id]

    @property
    def patrol_rounds(self) -> list[dict[str, Any]]:
        return [rnd for p in self.partitions for rnd in p.rounds()]

    def of_view_id(self, view_id: int) -> tuple[Partition, int] | None:
        """The partition and its own alert id behind a view id (None: no such partition)."""
        local, index = divmod(view_id, VIEW_ID_STRIDE)
        found = next((p for p in self.partitions if p.index == index), None)
        return (found, local) if found is not None and local > 0 else None

    def follow(self, publish: Callable[[AlertChange], None]) -> None:
        """Tell `publish` (the live stream's broadcaster) of every lifecycle step the partitions record
        from now on (opened, acknowledged, escalated, resolved...), asking every FOLLOW_SECONDS."""
        self._follower = threading.Thread(target=self._follow, args=(publish,), name="view-follow", daemon=True)
        self._follower.start()

    def _follow(self, publish: Callable[[AlertChange], None]) -> None:
        cursors = {p.index: -1 for p in self.partitions}  # -1: start from the partition's last step
        failing: set[int] = set()
        while True:
            for p in self.partitions:
                try:
                    cursors[p.index] = self._announce(p, cursors[p.index], publish)
                    failing.discard(p.index)
                except Exception as exc:  # a partition's database away: the others go on, this one is retried
                    if p.index not in failing:
                        log.warning(
                            "cannot follow a partition's alerts; retrying",
                            extra={"partition": p.label, "error": str(exc)},
                        )
                    failing.add(p.index)
            if self._stop.wait(FOLLOW_SECONDS):
                return

    def _announce(self, partition: Partition, cursor: int, publish: Callable[[AlertChange], None]) -> int:
        """Publish the partition's steps after `cursor`; the new cursor."""
        for row_id, alert_id, action in partition.store.history_after(cursor):
            cursor = row_id
            alert = partition.store.alert(alert_id) if action else None
            if alert is not None:
                publish(AlertChange(action, replace(alert, id=view_id(alert.id, partition))))  # type: ignore[arg-type]
        return cursor

    def close(self) -> None:
        self._stop.set()
        if self._follower is not None:
            self._follower.join(timeout=10)
        for partition in self.partitions:
            partition.close()


def _server(url: str | Path) -> str:
    """host=..., port=..., dbname=..., user=... of a state database URL: never its password."""
    return ", ".join(f"{key}={value}" for key, value in where(str(url)).items())


def _first_line(exc: Exception) -> str:
    """A database error's first line (libpq's go on for several)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def view_id(alert_id: int, partition: Partition) -> int:
    """The id the view shows for `partition`'s alert `alert_id` (District.of_view_id reverses it)."""
    return alert_id * VIEW_ID_STRIDE + partition.index


# --------------------------------------------------------------------------- loading


def load_partitions(
    config: ViewConfig, origin: str | Path
) -> list[tuple[int, GatewayConfig, list[tuple[SiteConfig, RulesConfig]]]]:
    """Each partition's config and sites, checked to make one district: PostgreSQL state, no
    database or site twice, and every partition of the count present. ConfigError names the key."""
    loaded = []
    for i, path in enumerate(config.partitions):
        key = f"{origin}: partitions[{i}] ({path})"
        gateway = load_config(path, GatewayConfig)
        if not is_postgres_url(gateway.state_db):
            raise ConfigError(
                f"{key}: state_db: {gateway.state_db} is a SQLite file; the view reads each partition's"
                " state from PostgreSQL (state_db: postgresql://...), and a SQLite state belongs to its one"
                ' gateway process (docs/scale.md, "One view across partitions")'
            )
        loaded.append((key, gateway, path, load_sites(gateway, path)))
    _check_distinct(loaded)
    return [(index, gateway, served) for index, (_, gateway, _, served) in zip(_indices(loaded, origin), loaded)]


def _check_distinct(loaded: list[tuple[str, GatewayConfig, Path, list[tuple[SiteConfig, RulesConfig]]]]) -> None:
    databases: dict[str, str] = {}
    sites: dict[str, str] = {}
    for key, gateway, _, served in loaded:
        url = str(gateway.state_db)
        if url in databases:
            raise ConfigError(f"{key}: state_db: the same database as {databases[url]}; each partition has its own")
        databases[url] = key
        for site, _ in served:
            if site.id in sites:
                raise ConfigError(f"{key}: site {site.id!r} is also served by {sites[site.id]}")
            sites[site.id] = key


def _indices(loaded: list[tuple[str, GatewayConfig, Path, Any]], origin: str | Path) -> list[int]:
    """Each partition's place in the view: its partition index (all partitioned alike, none missing),
    or, for gateways that are not partitions, its place in the list."""
    partitions = [gateway.partition for _, gateway, _, _ in loaded]
    if all(p is None for p in partitions):
        return list(range(len(loaded)))
    if any(p is None for p in partitions):
        raise ConfigError(
            f"{origin}: partitions: either every gateway is a partition (partition: {{count, index}}) or none"
        )
    counts = {p.count for p in partitions if p is not None}
    if len(counts) != 1:
        raise ConfigError(
            f"{origin}: partitions: the gateways split the sites {' and '.join(map(str, sorted(counts)))} ways;"
            " a district's partitions share one count"
        )
    count = counts.pop()
    indices = [p.index for p in partitions if p is not None]
    missing = sorted(set(range(count)) - set(indices))
    if missing or len(set(indices)) != len(indices):
        raise ConfigError(
            f"{origin}: partitions: give each partition of {count} once"
            f" (missing: {', '.join(map(str, missing)) or 'none'}; given: {', '.join(map(str, indices))})"
        )
    return indices


def open_district(config: ViewConfig, origin: str | Path, clock: Clock | None = None) -> District:
    """Every partition's state opened (reads only; the view changes nothing)."""
    clock = clock or SystemClock()
    partitions: list[Partition] = []
    try:  # a partition refused or unreachable: those opened before it are closed, not left to the collector
        for place, (index, gateway, served) in enumerate(load_partitions(config, origin)):
            url = (
                config.partition_urls[place]
                if config.partition_urls
                else f"http://{gateway.api.host}:{gateway.api.port}"
            )
            partitions.append(_open_partition(f"{origin}: partitions[{place}]", index, gateway, served, url, clock))
        district = District(partitions, clock)
        auth.check_token_sites(config.api, list(district.sites), partitioned=False)
    except BaseException:
        for partition in partitions:
            partition.close()
        raise
    return district


def _open_partition(
    key: str, index: int, gateway: GatewayConfig, served: list[tuple[SiteConfig, RulesConfig]], url: str, clock: Clock
) -> Partition:
    """One partition's state and work orders opened (the store closed again if the work orders
    cannot be); PartitionUnavailable naming `key` while its database is down."""
    store: StateStore | None = None
    try:
        store = StateStore(gateway.state_db, clock=clock)
        orders = WorkOrders(gateway.state_db, gateway.work_orders, served[0][0].id, clock)  # alerts' repair links
    except BaseException as exc:
        if store is not None:
            store.close()
        if isinstance(exc, psycopg.OperationalError):
            raise PartitionUnavailable(
                f"{key}: state_db unreachable ({_server(gateway.state_db)}): {_first_line(exc)}"
            ) from None
        raise
    return Partition(index, gateway, served, store, orders, url.rstrip("/"))


# --------------------------------------------------------------------------- the API


def create_view_app(district: District, config: ApiConfig) -> FastAPI:
    app = FastAPI(
        title="warden view",
        version="1",
        docs_url=None,
        redoc_url=None,
        description="Every partition's sites, read only (docs/scale.md). Auth: docs/api.md",
    )
    app.state.auth = Authenticator(config)
    app.state.site_locale = district.site.locale
    app.state.site_locales = {site_id: site.locale for site_id, site in district.sites.items()}
    app.add_middleware(gateway_api._SecurityHeaders)
    app.add_middleware(gateway_api._BodyLimit, limit=config.max_body_bytes)
    gateway_api._error_bodies(app)

    @app.exception_handler(PartitionUnavailable)
    async def unavailable(request: Request, exc: PartitionUnavailable) -> JSONResponse:
        log.warning("a partition's state is unreachable", extra={"path": request.url.path, "error": str(exc)})
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    app.state.broadcaster = broadcaster = AlertBroadcaster()  # ApiServer.stop() ends the streams with it
    district.follow(broadcaster.publish)
    gateway_api.browser_session_routes(app)
    _reads(app, district)
    _stream(app, district, broadcaster)
    _alerts(app, district)
    _dashboard(app, district)
    _refused_writes(app, district)
    return app


def _reads(app: FastAPI, district: District) -> None:
    served = list(district.sites)

    @app.get("/api/health", tags=["monitoring"])
    def health() -> JSONResponse:
        """200 while every partition's state database answers (a load balancer's check), else 503."""
        rows = []
        for p in district.partitions:
            try:
                live = p.read(lambda p=p: len(p.store.alerts_live()))
                rows.append({**p.describe(), "state": "ok", "live_alerts": live})
            except PartitionUnavailable as exc:
                rows.append({**p.describe(), "state": "unreachable", "error": str(exc)})
        ok = all(row["state"] == "ok" for row in rows)
        return JSONResponse(
            status_code=200 if ok else 503, content={"status": "ok" if ok else "degraded", "partitions": rows}
        )

    @app.get("/api/me", tags=["auth"])
    def me(request: Request, principal: Principal | None = Depends(auth.caller)) -> dict[str, Any]:
        """As a gateway's GET /api/me, with the token's permissions to read only (the dashboard then
        offers no button that changes anything); `read_only`: the view changes nothing."""
        public = request.app.state.auth.public_read
        if principal is None:
            permissions = sorted(auth.PUBLIC_READ_PERMISSIONS) if public else []
            return {"name": None, "role": None, "permissions": permissions, "public_read": public, "read_only": True}
        sites = auth.visible_sites(principal, served)
        visible = principal.visible_routes(r for s in sites for r in district.rules_for(s).patrol.routes)
        return {
            "name": principal.name,
            "role": principal.role,
            "public_read": public,
            "read_only": True,
            "permissions": sorted(principal.permissions & auth.PUBLIC_READ_PERMISSIONS),
            "guard": principal.guard,
            "patrol_routes": sorted(visible) if visible is not None else None,
            "sites": sites,
        }

    @app.get("/api/sites", tags=["sites"])
    def list_sites(request: Request, principal: Principal | None = Depends(auth.caller)) -> list[dict[str, Any]]:
        """The sites this token may see (anonymous on a kiosk: all), partition by partition, each with its partition."""
        if principal is None:
            if not request.app.state.auth.public_read:
                raise HTTPException(
                    status_code=401, detail="a token is required", headers={"WWW-Authenticate": "Bearer"}
                )
            principal = auth.ANONYMOUS_READER
        return [
            {**gateway_api._site_json(district.sites[s]), "partition": district.owner[s].describe()}
            for s in auth.visible_sites(principal, served)
        ]

    @app.get("/api/overview", tags=["sites"])
    def overview(principal: Principal = require(auth.REPORTS_READ)) -> list[dict[str, Any]]:
        """As a gateway's GET /api/overview, over every partition (one alert query per partition)."""
        sites = auth.visible_sites(principal, served)
        cutoff = district.clock.now() - gateway_api._OVERVIEW_ALERT_DAYS
        recent: dict[str, list[Alert]] = {}
        for p in {id(district.owner[s]): district.owner[s] for s in sites}.values():
            for alert in p.read(lambda p=p: p.store.alerts_recent(cutoff)):
                recent.setdefault(alert.site, []).append(alert)
        return [
            {
                **gateway_api._site_overview(district, s, recent.get(s, [])),  # type: ignore[arg-type]
                "partition": district.owner[s].describe(),
            }
            for s in sites
        ]


def _stream(app: FastAPI, district: District, broadcaster: AlertBroadcaster) -> None:
    @app.get(
        "/api/alerts/stream",
        tags=["alerts"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def alert_stream(
        request: Request, principal: Principal = require(auth.ALERTS_OWN, cookie=True)
    ) -> StreamingResponse:
        """As a gateway's stream, of every partition's alerts (within FOLLOW_SECONDS): each lifecycle step
        (opened, acknowledged, escalated, resolved, assigned), not a rule's updates of an open alert."""
        subscriber = broadcaster.subscribe(request.headers.get("last-event-id"))
        frames = gateway_api._of_post(
            sse_events(broadcaster, subscriber), principal, lambda site: gateway_api._routes_of(district, site)
        )  # type: ignore[arg-type]
        return StreamingResponse(
            frames, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )


def _dashboard(app: FastAPI, district: District) -> None:
    templates = Jinja2Templates(directory=str(gateway_api.WEB / "templates"))
    app.mount("/static", StaticFiles(directory=str(gateway_api.WEB / "static")), name="static")

    @app.get("/", include_in_schema=False)
    def dashboard(request: Request, site: str | None = None) -> Response:
        """The dashboard's overview of every site; a site's own page (devices, patrols, reports, work
        orders) is its partition's: `?site=` is sent there (303)."""
        if site is None:
            return gateway_api.dashboard_page(request, templates, district, district.site)  # type: ignore[arg-type]
        if site not in district.sites:
            raise HTTPException(status_code=404, detail=f"site: no site {site!r} in this view")
        return RedirectResponse(f"{district.owner[site].url}/?site={quote(site)}", status_code=303)


def _alerts(app: FastAPI, district: District) -> None:
    served = list(district.sites)

    def sees(principal: Principal, alert: Alert) -> bool:
        routes = gateway_api._routes_of(district, alert.site)  # type: ignore[arg-type]
        return principal.sees_site(alert.site) and principal.sees_alert(alert.rule, alert.subject, routes)

    def as_json(p: Partition, alerts: list[Alert], locale: str) -> list[dict[str, Any]]:
        links = p.read(lambda: p.work_orders.by_alerts([a.id for a in alerts]))
        rows = []
        for a in alerts:
            names = gateway_api._names_of(district, a.site)  # type: ignore[arg-type]
            link = links.get(a.id)
            rows.append(
                {
                    **gateway_api._alert_json(replace(a, id=view_id(a.id, p)), locale, names),
                    "work_order_id": view_id(link, p) if link is not None else None,
                    "partition": {**p.describe(), "alert_id": a.id, "work_order_id": link},
                }
            )
        return rows

    def visible(alert_id: int, principal: Principal) -> tuple[Partition, Alert]:
        found = district.of_view_id(alert_id)
        alert = found[0].read(lambda: found[0].store.alert(found[1])) if found is not None else None
        if found is None or alert is None or not sees(principal, alert):
            raise HTTPException(status_code=404, detail=f"no alert {alert_id}")
        return found[0], alert

    @app.get("/api/alerts", tags=["alerts"])
    def list_alerts(
        site: str | None = Query(default=None, description=gateway_api._SITE_LIST),
        rule: str | None = None,
        state: list[AlertState] | None = Query(default=None),
        severity: list[Severity] | None = Query(default=None),
        subject: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = Query(default=500, ge=1, le=5000),
        principal: Principal = require(auth.ALERTS_OWN),
        locale: str = Depends(gateway_api.reader_locale),
    ) -> list[dict[str, Any]]:
        """As a gateway's GET /api/alerts (newest first), over every partition; ids as the view shows them."""
        bounds = [gateway_api._utc_iso(since, "since"), gateway_api._utc_iso(until, "until")]
        gateway_api._in_range(since, "since")  # as the gateway: a time no alert can have is refused (422)
        gateway_api._in_range(until, "until")
        sites = auth.sites_asked(principal, served, site)
        picked: list[tuple[Partition, Alert]] = []
        for p in {id(district.owner[s]): district.owner[s] for s in sites}.values():
            mine = [s for s in sites if district.owner[s] is p]
            one = mine[0] if len(mine) == 1 else None
            # as the gateway's list: the newest `limit` of each store, unless filters the store cannot apply thin them
            narrow = (
                (one is not None or len(mine) == len(p.served))
                and not (state and len(state) > 1)
                and severity is None
                and subject is None
                and since is None
                and until is None
            )
            one_state = state[0] if state and len(state) == 1 else None
            alerts = p.read(
                lambda p=p, one=one, narrow=narrow, one_state=one_state: p.store.alerts(
                    site=one, rule=rule, state=one_state, limit=limit if narrow else 1_000_000
                )
            )
            picked += [
                (p, a)
                for a in alerts
                if a.site in mine
                and sees(principal, a)
                and gateway_api._matches(a, state, severity, subject, *bounds)
            ]
        picked.sort(key=lambda pa: (pa[1].opened_at, view_id(pa[1].id, pa[0])), reverse=True)
        shown = picked[:limit]
        rows = {
            row["id"]: row
            for p in {id(p): p for p, _ in shown}.values()  # one work-order query a partition
            for row in as_json(p, [a for q, a in shown if q is p], locale)
        }
        return [rows[view_id(a.id, p)] for p, a in shown]

    @app.get("/api/alerts/{alert_id}", tags=["alerts"])
    def alert_detail(
        alert_id: int,
        principal: Principal = require(auth.ALERTS_OWN),
        locale: str = Depends(gateway_api.reader_locale),
    ) -> dict[str, Any]:
        """An alert and its history, from the partition that holds it."""
        p, alert = visible(alert_id, principal)
        names = gateway_api._names_of(district, alert.site)  # type: ignore[arg-type]
        history = [
            {**step, "text": localise(step["message"], step["message_id"], step["params"], locale, names)}
            for step in p.read(lambda: p.store.alert_history(alert.id))
        ]
        return {**as_json(p, [alert], locale)[0], "history": history}

    @app.post("/api/alerts/{alert_id}/{action}", tags=["alerts"], status_code=409)
    def alert_action(alert_id: int, action: str, principal: Principal = require(auth.ALERTS_OWN)) -> None:
        """Refused (409): act on an alert at the partition serving its site (named in the answer)."""
        p, alert = visible(alert_id, principal)
        log.info(
            "refused a write through the view", extra={"who": principal.name, "alert": alert_id, "action": action}
        )
        raise HTTPException(
            status_code=409,
            detail=(
                f"the view across partitions only reads: {action} alert {alert_id} at {p.label}, which serves site"
                f" {alert.site!r} (there it is alert {alert.id}); the partition announces the change to its sinks"
            ),
        )


def _refused_writes(app: FastAPI, district: District) -> None:
    @app.api_route("/api/{rest:path}", methods=["POST", "PUT", "PATCH", "DELETE"], tags=["alerts"], status_code=409)
    def refused(rest: str, principal: Principal | None = Depends(auth.caller)) -> None:
        """Any other change (work orders, duty, sessions): refused (409), naming the partitions."""
        if principal is None:
            raise HTTPException(status_code=401, detail="a token is required", headers={"WWW-Authenticate": "Bearer"})
        where_to = "; ".join(f"{p.label}: {', '.join(s.id for s, _ in p.served)}" for p in district.partitions)
        raise HTTPException(
            status_code=409,
            detail=f"the view across partitions only reads: make changes at the"
            f" partition serving the site ({where_to})",
        )
