"""API tokens and roles (docs/api.md).

Tokens are high-entropy secrets (`warden token` makes one); the gateway config keeps only
their SHA-256, so a leaked config file grants nothing. A presented token is hashed and
compared with every configured hash in constant time, without an early exit. Tokens are
never logged, nor put in URLs: the browser's event stream and report links, which cannot
send a header, use a signed, expiring cookie instead (`issue_session_ticket`), which only
safe (GET) endpoints that opt in accept, so it can never authorise a change.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from gateway.config import ApiConfig, ApiToken
from warden.config import ConfigError, PatrolRoute

log = logging.getLogger(__name__)

TOKEN_PREFIX = "wdn_"
SESSION_COOKIE = "warden_session"
SESSION_SECONDS = 12 * 3600

# Permissions: what an endpoint needs. Roles are fixed sets of them.
ALERTS_READ = "alerts:read"
ALERTS_WRITE = "alerts:write"
DEVICES_READ = "devices:read"
PATROLS_READ = "patrols:read"
PATROLS_OWN = "patrols:own"  # only the routes the guard walks
REPORTS_READ = "reports:read"
SYSTEM_READ = "system:read"  # health, metrics, dead letters
CONFIG_READ = "config:read"
# Issue 18: people on duty, repair requests (work orders).
ALERTS_OWN = "alerts:own"  # the alerts of the caller's post (a guard: doors, its rounds); all with alerts:read
ALERTS_ACK = "alerts:ack"  # acknowledge (a guard: alerts of its post)
ALERTS_ASSIGN = "alerts:assign"  # name the person an alert is for
WORK_ORDERS_READ = "work_orders:read"  # those one requested or owns; all with work_orders:read_all
WORK_ORDERS_READ_ALL = "work_orders:read_all"
WORK_ORDERS_CREATE = "work_orders:create"  # report a fault; as requester: close and rate, reopen
WORK_ORDERS_WORK = "work_orders:work"  # take, start, wait for parts, done, hand over (one's own)
WORK_ORDERS_ASSIGN = "work_orders:assign"  # assign, and act for the owner or the requester

_READ_ALL = frozenset({ALERTS_READ, ALERTS_OWN, DEVICES_READ, PATROLS_READ, PATROLS_OWN, REPORTS_READ, SYSTEM_READ})
_REQUESTER = frozenset({WORK_ORDERS_READ, WORK_ORDERS_CREATE})

#: The one table of who may do what (docs/api.md#roles); object rules (whose order, which
#: post) are in Principal.sees_alert and gateway/workorders.py.
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "guard": frozenset({PATROLS_OWN, ALERTS_OWN, ALERTS_ACK}) | _REQUESTER,
    "maintenance": frozenset({ALERTS_READ, ALERTS_OWN, ALERTS_WRITE, ALERTS_ACK, ALERTS_ASSIGN, DEVICES_READ, PATROLS_READ,
                              PATROLS_OWN, WORK_ORDERS_READ_ALL, WORK_ORDERS_WORK}) | _REQUESTER,
    "manager": _READ_ALL | _REQUESTER | {ALERTS_ACK, ALERTS_ASSIGN, WORK_ORDERS_READ_ALL, WORK_ORDERS_ASSIGN},
    "admin": _READ_ALL | _REQUESTER | {ALERTS_WRITE, ALERTS_ACK, ALERTS_ASSIGN, CONFIG_READ, WORK_ORDERS_READ_ALL,
                                      WORK_ORDERS_WORK, WORK_ORDERS_ASSIGN},
}
#: Alert rules a guard's post covers besides the patrol alerts of the routes it walks.
POST_RULES = frozenset({"door_held_open", "door_forced", "door_after_hours", "door_denied"})
#: What anyone may read when `api.public_read` is on (a kiosk): everything but the config.
PUBLIC_READ_PERMISSIONS = _READ_ALL

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def new_token() -> str:
    """A fresh secret: 256 random bits, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What the config stores. A plain SHA-256 is enough for 256-bit random secrets
    (nothing to brute-force); slow hashes only help low-entropy passwords."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's holder, or `anonymous` on a public-read gateway."""

    name: str
    role: str | None
    permissions: frozenset[str]
    guard: str | None = None
    routes: tuple[str, ...] = ()
    locale: str | None = None  # the token's, if it names one (issue 19); else the site's
    sites: tuple[str, ...] = ()  # the sites it may see (issue 21); empty: every site of the gateway

    @property
    def anonymous(self) -> bool:
        return self.role is None

    def can(self, permission: str) -> bool:
        return permission in self.permissions

    def sees_site(self, site_id: str) -> bool:
        """Whether this caller may see (and act on) the data of site `site_id`."""
        return not self.sites or site_id in self.sites

    def visible_routes(self, routes: Iterable[PatrolRoute]) -> set[str] | None:
        """Route ids this caller may see; None: all of them."""
        if self.can(PATROLS_READ):
            return None
        if not self.can(PATROLS_OWN):
            return set()
        return {r.id for r in routes if r.id in self.routes or (self.guard is not None and r.guard == self.guard)}

    def sees_alert(self, rule: str, subject: str, routes: Iterable[PatrolRoute]) -> bool:
        """Whether this caller may see (and, with alerts:ack, acknowledge) an alert: all with
        alerts:read; with alerts:own only its post: the doors, and the patrol alerts of
        the routes it walks (their subject starts with the route id)."""
        if self.can(ALERTS_READ):
            return True
        if not self.can(ALERTS_OWN):
            return False
        if rule in POST_RULES:
            return True
        visible = self.visible_routes(routes) or set()
        return rule.startswith("patrol_") and subject.split(":", 1)[0] in visible


ANONYMOUS_READER = Principal("anonymous", None, PUBLIC_READ_PERMISSIONS)


def _principal(token: ApiToken) -> Principal:
    return Principal(token.name, token.role, ROLE_PERMISSIONS[token.role], token.guard, tuple(token.routes),
                     token.locale, tuple(token.sites))


@dataclass
class Authenticator:
    """Checks tokens and stream tickets against the gateway's API config."""

    config: ApiConfig
    _secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    @property
    def public_read(self) -> bool:
        """Reads without a token: as configured, else only while no token exists (a fresh
        install, the demo) - writes still need a token then, so nothing can change."""
        if self.config.public_read is not None:
            return self.config.public_read
        return not self.config.tokens

    def check_token(self, token: str) -> Principal | None:
        digest = hash_token(token)
        found: ApiToken | None = None
        for candidate in self.config.tokens:  # no early exit: timing says nothing about which
            if hmac.compare_digest(digest, candidate.sha256):
                found = candidate
        return _principal(found) if found else None

    def issue_session_ticket(self, principal: Principal, now: float | None = None) -> str:
        """A signed, expiring stand-in for the token, for the browser session cookie."""
        expires = int((now or time.time()) + SESSION_SECONDS)
        body = f"{principal.name}:{expires}"
        return base64.urlsafe_b64encode(f"{body}:{self._sign(body)}".encode()).decode()

    def check_session_ticket(self, ticket: str, now: float | None = None) -> Principal | None:
        try:
            name, expires, signature = base64.urlsafe_b64decode(ticket.encode()).decode().rsplit(":", 2)
            expiry = int(expires)
        except ValueError:  # also binascii.Error and UnicodeDecodeError
            return None
        if not hmac.compare_digest(signature, self._sign(f"{name}:{expires}")) or expiry < (now or time.time()):
            return None
        token = next((t for t in self.config.tokens if t.name == name), None)  # revoked with the config
        return _principal(token) if token else None

    def _sign(self, body: str) -> str:
        return hmac.new(self._secret, body.encode(), hashlib.sha256).hexdigest()


bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer wdn_...`")


def caller(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal | None:
    """The authenticated caller, None without credentials; a wrong token is refused at once
    (never downgraded to anonymous)."""
    auth: Authenticator = request.app.state.auth
    if credentials is not None:
        principal = auth.check_token(credentials.credentials)
        if principal is None:
            log.warning("refused API token", extra={"path": request.url.path, "client": _client(request)})
            raise _unauthorized("invalid token")
        return principal
    if request.headers.get("authorization"):  # another scheme, or a malformed header
        raise _unauthorized("use Authorization: Bearer <token>")
    return None


def require(permission: str, *, cookie: bool = False):  # type: ignore[no-untyped-def]
    """A dependency that lets the call through only with `permission`. Reads may be
    anonymous on a public-read gateway; anything else needs a token in the header
    (a cookie never authorises a change, so there is nothing to forge cross-site)."""

    def dependency(request: Request, principal: Principal | None = Depends(caller)) -> Principal:
        auth: Authenticator = request.app.state.auth
        safe = request.method in _SAFE_METHODS
        if principal is None and cookie and safe and (ticket := request.cookies.get(SESSION_COOKIE)):
            principal = auth.check_session_ticket(ticket)
        if principal is None:
            if not (safe and auth.public_read and permission in PUBLIC_READ_PERMISSIONS):
                raise _unauthorized("a token is required")
            principal = ANONYMOUS_READER
        if not principal.can(permission):
            log.info("API call refused", extra={"path": request.url.path, "who": principal.name, "needs": permission})
            raise HTTPException(status_code=403, detail=f"role {principal.role or 'anonymous'} may not do this ({permission})")
        return principal

    dependency.permission = permission  # type: ignore[attr-defined]  # for docs and tests
    return Depends(dependency)


# --------------------------------------------------------------------------- sites (issue 21)


def visible_sites(principal: Principal, served: Sequence[str]) -> list[str]:
    """The served sites the caller may see, in the gateway's order."""
    return [site for site in served if principal.sees_site(site)]


def sites_asked(principal: Principal, served: Sequence[str], site: str | None) -> list[str]:
    """The sites a list answers for: the one asked (`site=`), else every site the caller sees.
    403 for a site outside the caller's scope (named: the caller named it), 404 for one the
    gateway does not serve."""
    if site is None:
        return visible_sites(principal, served)
    if not principal.sees_site(site):
        log.info("API call refused", extra={"who": principal.name, "site": site})
        raise HTTPException(status_code=403, detail=f"site: this token may not see site {site!r}")
    if site not in served:
        raise HTTPException(status_code=404, detail=f"site: no site {site!r} on this gateway")
    return [site]


def one_site(principal: Principal, served: Sequence[str], site: str | None) -> str:
    """The one site an endpoint answers for: `site=`, else the only site the caller sees;
    400 naming the parameter when it sees several and named none."""
    sites = sites_asked(principal, served, site)
    if len(sites) != 1:
        choices = ", ".join(sites)
        raise HTTPException(status_code=400, detail=f"site: give one of {choices} (this token sees several sites)")
    return sites[0]


def check_token_sites(config: ApiConfig, served: Sequence[str], partitioned: bool) -> None:
    """A token naming a site this gateway does not serve is a config error naming the key;
    on a partitioned gateway only a warning, since another partition serves that site."""
    for index, token in enumerate(config.tokens):
        for position, site in enumerate(token.sites):
            if site in served:
                continue
            key = f"api.tokens[{index}].sites[{position}]"
            if not partitioned:
                raise ConfigError(f"{key}: no site {site!r} on this gateway (sites: {', '.join(served)})")
            log.warning("a token names a site another partition serves",
                        extra={"key": key, "site": site, "token": token.name})


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def _client(request: Request) -> str:
    return request.client.host if request.client else "-"


def redacted(model: BaseModel) -> dict[str, Any]:
    """`model` as JSON data without any field declared secret (warden.config.SECRET), at
    any depth: what GET /api/config shows. A new secret needs only the marker on its
    field, never a list of names here."""
    data = model.model_dump(mode="json")
    _redact(model, data)
    return data


def _redact(value: Any, data: Any) -> None:
    """Walk the model and its dumped data side by side."""
    if isinstance(value, BaseModel) and isinstance(data, dict):
        for name, info in type(value).model_fields.items():
            key = info.serialization_alias or info.alias or name
            if key not in data:
                continue
            extra = info.json_schema_extra
            if isinstance(extra, dict) and extra.get("secret"):
                del data[key]
            else:
                _redact(getattr(value, name), data[key])
    elif isinstance(value, (list, tuple)) and isinstance(data, list):
        for item, dumped in zip(value, data):
            _redact(item, dumped)
    elif isinstance(value, dict) and isinstance(data, dict):
        for key, item in value.items():
            if str(key) in data:
                _redact(item, data[str(key)])
