"""HTTP routes of repair requests (work orders), of alerts handed to people on duty, and
the work-order pages of the dashboard (docs/api.md#work-orders).

Route permissions are the role table in gateway/auth.py; which order or alert a caller may
touch (their own request, the order they own, their post's alerts) is decided by
gateway/workorders.py and auth.Principal.sees_alert. An order or alert the caller may not
see answers 404, as if it did not exist.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import Any, Literal

from fastapi import Body, FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from gateway import auth
from gateway.auth import ROLE_PERMISSIONS, Principal, require
from gateway.service import Gateway
from gateway.store import AlertNotFound, AlertStateConflict
from gateway.text import TypedText
from gateway.web.pages import page_gettext, page_locale, page_site, page_strings
from gateway.workorders import (
    PRIORITIES,
    Priority,
    WorkOrder,
    WorkOrderConflict,
    WorkOrderForbidden,
    WorkOrderNotFound,
    WorkOrderState,
    WorkOrderTooMany,
    category_for_rule,
    order_json,
    priority_for_severity,
)
from warden import names
from warden.events import Identifier
from warden.i18n import N_

log = logging.getLogger(__name__)

#: POST /api/work-orders/{id}/photos takes a raw image body up to work_orders.photo_max_bytes
#: (gateway/api.py's body limit lets this path through with that bound, not api.max_body_bytes).
PHOTO_PATH = r"^/api/work-orders/[0-9]+/photos$"


class NewWorkOrder(BaseModel):
    """A fault reported by a person: where, what, and how urgent."""

    room: TypedText = Field(min_length=1, max_length=80, description="A room id of the site, or a place in words")
    text: TypedText = Field(min_length=1, max_length=2000)
    category: TypedText = Field(default="general", max_length=64)
    priority: Priority = "normal"
    site: Identifier | None = Field(default=None,
                                    description="The site (issue 21); may be left out when the token sees one site")


class FromAlert(BaseModel):
    """A work order from an alert: room, category and priority follow from the alert unless given."""

    text: TypedText | None = Field(default=None, max_length=2000)
    category: TypedText | None = Field(default=None, max_length=64)
    priority: Priority | None = None


class Step(BaseModel):
    note: TypedText = Field(default="", max_length=2000)


class HandOver(Step):
    to: Identifier = Field(description="The person (API token name) who owns it from now on")


class Closing(Step):
    rating: int | None = Field(default=None, ge=1, le=5, description="The requester's rating of the service, 1-5")
    comment: TypedText | None = Field(default=None, max_length=2000)


class AlertAssignment(BaseModel):
    to: Identifier = Field(description="The person (API token name) the alert is for")
    note: TypedText | None = Field(default=None, max_length=2000)


ROUTE_ERRORS: dict[str, dict[int, str]] = {
    name: {404: "No such work order (or not yours to see)", 409: "Not allowed in the order's state",
           403: "The role lacks the permission, or the order is someone else's"}
    for name in ("work_order_detail", "work_order_step", "hand_over", "assign_work_order", "close_work_order",
                 "reopen_work_order", "note_work_order", "add_photo", "photo")
} | {"work_order_from_alert": {404: "No such alert (or not of your post)", 409: "The alert has a work order already",
                              429: "Over work_orders.max_new_per_hour"},
     "create_work_order": {429: "Over work_orders.max_new_per_hour"},
     "assign_alert": {404: "No such alert", 409: "The alert is resolved"}}


def register(app: FastAPI, gateway: Gateway, templates: Jinja2Templates, csp: str) -> None:
    """Add the work-order and duty routes and the /work-orders page to `app`."""
    orders = gateway.work_orders

    def routes(site_id: str) -> list[Any]:
        return list(gateway.rules_for(site_id).patrol.routes) if site_id in gateway.sites else []

    def visible_alert(alert_id: int, principal: Principal) -> Any:
        """The alert if the caller may see it (its sites; a guard: its post's), else 404."""
        alert = gateway.store.alert(alert_id)
        if alert is None or not (principal.sees_site(alert.site)
                                 and principal.sees_alert(alert.rule, alert.subject, routes(alert.site))):
            raise HTTPException(status_code=404, detail=f"no alert {alert_id}")
        return alert

    def people(principal: Principal) -> dict[str, str]:
        """Token name -> role, of the people who share a site with `principal` (issue 21)."""
        return {token.name: token.role for token in gateway.config.api.tokens
                if not token.sites or any(principal.sees_site(site) for site in token.sites)}

    def visible(order_id: int, principal: Principal) -> WorkOrder:
        try:
            order = orders.get(order_id)
        except WorkOrderNotFound:
            raise HTTPException(status_code=404, detail=f"no work order {order_id}") from None
        if not principal.can(auth.WORK_ORDERS_READ_ALL) and principal.name not in (order.requested_by, order.owner):
            raise HTTPException(status_code=404, detail=f"no work order {order_id}")
        if not principal.sees_site(order.site):  # another site's: as if it did not exist
            raise HTTPException(status_code=404, detail=f"no work order {order_id}")
        return order

    def named(to: str, permission: str, what: str, principal: Principal) -> None:
        known = people(principal)
        role = known.get(to)
        if role is None:
            raise HTTPException(status_code=422, detail=f"to: no person {to!r} (names of the API tokens: {', '.join(sorted(known))})")
        if permission not in ROLE_PERMISSIONS[role]:
            raise HTTPException(status_code=422, detail=f"to: {to} ({role}) cannot {what}")

    def step(order_id: int, action: str, principal: Principal, note: str = "", **extra: Any) -> dict[str, Any]:
        visible(order_id, principal)
        try:
            change = orders.act(order_id, action, principal.name, note=note,
                                may_act_for_others=principal.can(auth.WORK_ORDERS_ASSIGN), **extra)
        except WorkOrderConflict as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        except WorkOrderForbidden as exc:
            raise HTTPException(status_code=403, detail=str(exc)) from None
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        return detail(change.order)

    def detail(order: WorkOrder) -> dict[str, Any]:
        photos = [{"id": p.id, "content_type": p.content_type, "size": p.size, "added_by": p.added_by, "added_at": p.added_at,
                   "url": f"/api/work-orders/{order.id}/photos/{p.id}"} for p in orders.photos(order.id)]
        return {**order_json(order), "history": orders.history(order.id), "photos": photos}

    tags = ["work orders"]

    @app.get("/api/work-orders", tags=tags)
    def list_work_orders(
        state: list[WorkOrderState] | None = Query(default=None, description="Repeat for several; none: all"),
        mine: bool = Query(default=False, description="Only those I requested or own"),
        limit: int = Query(default=500, ge=1, le=5000),
        site: str | None = Query(default=None, description="Only this site's; none: every site the token sees"),
        principal: Principal = require(auth.WORK_ORDERS_READ),
    ) -> list[dict[str, Any]]:
        """Newest first. Without work_orders:read_all (a guard), only the caller's own requests
        and the orders they own."""
        person = principal.name if mine or not principal.can(auth.WORK_ORDERS_READ_ALL) else None
        sites = set(auth.sites_asked(principal, list(gateway.sites), site))
        every = site is None and len(sites) == len(gateway.sites)
        found = orders.search(state=[s.value for s in state or []], person=person, limit=limit if every else 1_000_000)
        return [order_json(o) for o in found if every or o.site in sites][:limit]

    @app.post("/api/work-orders", status_code=201, tags=tags)
    def create_work_order(body: NewWorkOrder, principal: Principal = require(auth.WORK_ORDERS_CREATE)) -> dict[str, Any]:
        """Report a fault. Deadlines to take and to finish it follow from category and
        priority (work_orders in the gateway config) and are fixed on the order now."""
        site = auth.one_site(principal, list(gateway.sites), body.site)
        try:
            change = orders.create(room=body.room, text=body.text, by=principal.name, category=body.category,
                                   priority=body.priority, site=site)
        except WorkOrderTooMany as exc:
            raise HTTPException(status_code=429, detail=str(exc), headers={"Retry-After": "3600"}) from None
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        return detail(change.order)

    @app.get("/api/work-orders/{order_id}", tags=tags)
    def work_order_detail(order_id: int, principal: Principal = require(auth.WORK_ORDERS_READ)) -> dict[str, Any]:
        """The order, its whole history (who, when, what) and its photos."""
        return detail(visible(order_id, principal))

    @app.post("/api/work-orders/{order_id}/photos", status_code=201, tags=tags,
              openapi_extra={"requestBody": {"content": {t: {"schema": {"type": "string", "format": "binary"}}
                                                         for t in ("image/jpeg", "image/png", "image/webp")}}})
    async def add_photo(order_id: int, request: Request, principal: Principal = require(auth.WORK_ORDERS_CREATE)) -> dict[str, Any]:
        """The raw image as the body (Content-Type image/jpeg, image/png or image/webp), up to
        work_orders.photo_max_bytes; the requester or the owner."""
        await run_in_threadpool(visible, order_id, principal)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        content = await request.body()
        try:
            photo = await run_in_threadpool(lambda: orders.add_photo(order_id, content, content_type, principal.name,
                                                                     may_act_for_others=principal.can(auth.WORK_ORDERS_ASSIGN)))
        except WorkOrderConflict as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        except WorkOrderForbidden as exc:
            raise HTTPException(status_code=403, detail=str(exc)) from None
        except ValueError as exc:
            raise HTTPException(status_code=415 if "type" in str(exc) else 422, detail=str(exc)) from None
        return {**asdict(photo), "url": f"/api/work-orders/{order_id}/photos/{photo.id}"}

    @app.get("/api/work-orders/{order_id}/photos/{photo_id}", tags=tags, response_class=Response,
             responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}}})
    def photo(order_id: int, photo_id: int, principal: Principal = require(auth.WORK_ORDERS_READ, cookie=True)) -> Response:
        """A photo; the dashboard's <img> sends the session cookie (POST /api/session)."""
        visible(order_id, principal)
        found = orders.photo(order_id, photo_id)
        if found is None:
            raise HTTPException(status_code=404, detail=f"no photo {photo_id} of work order {order_id}")
        return Response(orders.photo_bytes(found), media_type=found.content_type,
                        headers={"Cache-Control": "private, max-age=3600", "Content-Security-Policy": "default-src 'none'"})

    @app.post("/api/work-orders/{order_id}/hand-over", tags=tags)
    def hand_over(order_id: int, body: HandOver, principal: Principal = require(auth.WORK_ORDERS_WORK)) -> dict[str, Any]:
        """The owner names who owns it from now on (first-responder ownership ends only so)."""
        named(body.to, auth.WORK_ORDERS_WORK, "take work orders", principal)
        return step(order_id, "hand_over", principal, body.note, to=body.to)

    @app.post("/api/work-orders/{order_id}/assign", tags=tags)
    def assign_work_order(order_id: int, body: HandOver, principal: Principal = require(auth.WORK_ORDERS_ASSIGN)) -> dict[str, Any]:
        """A manager gives the order to a named person (an untaken one becomes taken by them)."""
        named(body.to, auth.WORK_ORDERS_WORK, "take work orders", principal)
        return step(order_id, "assign", principal, body.note, to=body.to)

    @app.post("/api/work-orders/{order_id}/close", tags=tags)
    def close_work_order(order_id: int, body: Closing, principal: Principal = require(auth.WORK_ORDERS_CREATE)) -> dict[str, Any]:
        """The requester confirms a done order and rates the service (rating 1-5 required
        from the requester; a manager closing for them may leave it out)."""
        return step(order_id, "close", principal, body.note, rating=body.rating, comment=body.comment)

    @app.post("/api/work-orders/{order_id}/reopen", tags=tags)
    def reopen_work_order(order_id: int, body: Step = Body(default_factory=Step),
                          principal: Principal = require(auth.WORK_ORDERS_CREATE)) -> dict[str, Any]:
        """Not fixed after all: back to its owner, with fresh deadlines."""
        return step(order_id, "reopen", principal, body.note)

    @app.post("/api/work-orders/{order_id}/notes", tags=tags)
    def note_work_order(order_id: int, body: Step, principal: Principal = require(auth.WORK_ORDERS_READ)) -> dict[str, Any]:
        """A note in the order's history, from anyone who can see the order."""
        if not body.note.strip():
            raise HTTPException(status_code=422, detail="note: write something")
        return step(order_id, "note", principal, body.note)

    @app.post("/api/work-orders/{order_id}/{action}", tags=tags)
    def work_order_step(order_id: int, action: Literal["take", "start", "wait", "done"], body: Step = Body(default_factory=Step),
                        principal: Principal = require(auth.WORK_ORDERS_WORK)) -> dict[str, Any]:
        """take (the first to take it owns it), start, wait (for parts), done; the owner's
        steps (gateway/workorders.py: TRANSITIONS)."""
        return step(order_id, action, principal, body.note)

    @app.post("/api/alerts/{alert_id}/work-order", status_code=201, tags=["alerts", *tags])
    def work_order_from_alert(alert_id: int, body: FromAlert = Body(default_factory=FromAlert),
                              principal: Principal = require(auth.WORK_ORDERS_CREATE)) -> dict[str, Any]:
        """One click from an alert: room from the alert's device, category from its rule,
        priority from its severity; the two stay linked (alert_id here, work_order_id on the alert)."""
        alert = visible_alert(alert_id, principal)
        site = gateway.sites.get(alert.site, gateway.site)
        rooms = {d: r.id for b in site.buildings for r in b.rooms for d in r.devices}
        priority = body.priority or priority_for_severity(alert.severity)
        category = body.category or category_for_rule(alert.rule, set(orders.config.categories))
        try:
            change = orders.create(room=rooms.get(alert.subject, alert.subject), text=body.text or alert.message, by=principal.name,
                                   category=category, priority=priority, alert_id=alert_id, site=alert.site)
        except WorkOrderConflict as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        except WorkOrderTooMany as exc:
            raise HTTPException(status_code=429, detail=str(exc), headers={"Retry-After": "3600"}) from None
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        return detail(change.order)

    @app.post("/api/alerts/{alert_id}/assign", tags=["alerts"])
    def assign_alert(alert_id: int, body: AlertAssignment, principal: Principal = require(auth.ALERTS_ASSIGN)) -> dict[str, Any]:
        """Name the person on duty an alert is for (they acknowledge it themselves)."""
        named(body.to, auth.ALERTS_ACK, "acknowledge alerts", principal)
        visible_alert(alert_id, principal)
        try:
            change = gateway.assign(alert_id, body.to, principal.name, body.note)
        except AlertNotFound:
            raise HTTPException(status_code=404, detail=f"no alert {alert_id}") from None
        except AlertStateConflict as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        return asdict(change.alert)

    @app.get("/api/people", tags=["auth"])
    def list_people(principal: Principal = require(auth.WORK_ORDERS_READ)) -> list[dict[str, Any]]:
        """Who can be named in a hand-over or an assignment: the API tokens' names and roles
        (on a gateway of several sites, of the people who share a site with the caller)."""
        return [{"name": name, "role": role, "takes_work_orders": auth.WORK_ORDERS_WORK in ROLE_PERMISSIONS[role],
                 "acknowledges_alerts": auth.ALERTS_ACK in ROLE_PERMISSIONS[role]}
                for name, role in sorted(people(principal).items())]

    @app.get("/work-orders", response_class=HTMLResponse, include_in_schema=False)
    def work_orders_page(request: Request, site: str | None = None) -> HTMLResponse:
        """List, detail and create form (one page, phone-sized); holds no data. Its words are
        in the site's locale, chosen as the dashboard's (gateway/web/pages.py); `site` as the dashboard's."""
        shown = page_site(gateway.sites, site)
        locale = page_locale(request, shown.locale)
        rooms = [(r.id, names.label(r.name, r.id)) for b in shown.buildings for r in b.rooms]
        response = templates.TemplateResponse(request, "workorders.html", {
            "site": shown, "rooms": rooms, "site_count": len(gateway.sites),
            "categories": sorted(orders.config.categories), "priorities": PRIORITIES,
            "photo_max_bytes": orders.config.photo_max_bytes, "photo_types": orders.config.photo_types,
            "lang": locale, "_": page_gettext(locale),
            "strings": json.dumps(page_strings(WORK_ORDER_STRINGS, locale), ensure_ascii=False)})
        response.headers["Content-Language"] = locale
        response.headers["Content-Security-Policy"] = csp
        return response


#: What workorders.js shows (its `t(...)`), translated into the page as the dashboard's are.
#: States, priorities and the default categories are ids the API keeps; only their display is translated.
WORK_ORDER_STRINGS = (
    N_("The gateway refused this token."), N_("Sign in with an API token."),
    N_("new"), N_("taken"), N_("in progress"), N_("waiting"), N_("reopened"), N_("done"), N_("closed"),
    N_("low"), N_("normal"), N_("high"), N_("urgent"),
    N_("general"), N_("plumbing"), N_("electrical"), N_("hvac"), N_("doors"), N_("devices"), N_("cleaning"),
    N_("take by {when}"), N_("done by {when}"), N_("owner {name}"), N_("nobody yet"),
    N_("The photo is larger than {bytes} bytes."), N_("Could not report: {error}"),
    N_("Take"), N_("Start work"), N_("Wait for parts"), N_("Done"), N_("Reopen"), N_("Hand over"), N_("Assign"),
    N_("Category"), N_("Reported"), N_("{when} by {who}"), N_("Owner"), N_("Take by"), N_("Done by"),
    N_("Escalated"), N_("level {n}"), N_("From alert"), N_("Rating"), N_("photo {id}"),
    # the history's steps (gateway/workorders.py records them by these ids)
    N_("created"), N_("take"), N_("start"), N_("wait"), N_("close"), N_("reopen"), N_("hand over"), N_("assign"),
    N_("note"), N_("photo"), N_("escalated"), N_("alert resolved"), N_(" to {who}"),
    N_("Could not {action}: {error}"), N_("Could not upload: {error}"), N_("Could not load: {error}"),
)


def work_order_links(gateway: Gateway, alert_ids: list[int]) -> dict[int, int]:
    """alert id -> the id of its work order, for the alerts that have one."""
    return gateway.work_orders.by_alerts(alert_ids)

