"""Alert notifications: who hears about which alert change, and how it gets to them.

Every sink implements one small Protocol, `Sink`: a name and `send(change)`. Routes
decide which changes a sink receives (escalation level, severity, rule, kind of change;
docs/rules.md#alert-lifecycle). The MQTT alerts topic is a sink that only enqueues in
paho, so it runs inline. Webhooks and mail can block for seconds: each runs behind a
`QueuedSink`, a thread of its own with a bounded queue and retries with backoff, so a
slow or dead receiver never holds up the ingest worker. A full queue drops and counts.

Delivery is at most once per attempt sequence: a change is handed to the sinks after its
transaction committed, and a crash in between loses that notification (the alert itself
is in the store and the API). Secrets (webhook URL paths, headers, SMTP passwords) are
never logged; sinks log only scheme, host and port.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import smtplib
import ssl
import threading
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as mqtt
from prometheus_client import CollectorRegistry, Counter

from gateway.store import AlertChange
from rules.alerts import Severity
from warden import topics
from warden.config import AlertsConfig, DeliveryConfig, RouteConfig, SmtpSinkConfig, WebhookSinkConfig

log = logging.getLogger(__name__)

_PREFIX = "warden_gateway_"
_SEVERITY_ORDER = list(Severity)


class Sink(Protocol):
    """Somewhere alert changes go. `send` may block (blocking sinks run on their own
    thread) and raises DeliveryError when the change did not get through."""

    name: str

    def send(self, change: AlertChange) -> None: ...


class DeliveryError(Exception):
    """A failed delivery; `retryable` when trying again later may succeed (a 503, a
    refused connection), not when the receiver said no for good (a 404, bad credentials)."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def alert_payload(change: AlertChange) -> bytes:
    """The JSON every machine-facing sink sends: the kind of change, why, the alert."""
    return json.dumps({"change": change.action, "note": change.note, "alert": asdict(change.alert)}, default=str).encode()


# --------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class Route:
    """Which changes one sink receives."""

    min_level: int = 0  # hears about an alert once it escalated this far
    min_severity: Severity = Severity.INFO
    rules: frozenset[str] | None = None  # None: every rule
    changes: frozenset[str] = frozenset({"opened", "updated", "acknowledged", "escalated", "resolved"})

    @classmethod
    def from_config(cls, config: RouteConfig, min_level: int = 0) -> Route:
        rules = frozenset(config.rules) if config.rules is not None else None
        return cls(min_level, Severity(config.min_severity), rules, frozenset(config.changes))

    def accepts(self, change: AlertChange) -> bool:
        alert = change.alert
        return (
            change.action in self.changes
            and alert.escalation_level >= self.min_level
            and _SEVERITY_ORDER.index(Severity(alert.severity)) >= _SEVERITY_ORDER.index(self.min_severity)
            and (self.rules is None or alert.rule in self.rules)
        )


class Notifier:
    """Hands each alert change to the sinks whose route accepts it; never raises."""

    def __init__(self, routes: list[tuple[Route, Sink]]) -> None:
        self.routes = routes

    def notify(self, change: AlertChange) -> None:
        for route, sink in self.routes:
            if not route.accepts(change):
                continue
            try:
                sink.send(change)
            except Exception:  # a broken sink must not stop the others, nor ingestion
                log.exception("notification sink failed", extra={"sink": sink.name, "change": change.action, "alert": change.alert.id})

    def start(self) -> None:
        for _, sink in self.routes:
            if isinstance(sink, QueuedSink):
                sink.start()

    def stop(self, drain_seconds: float = 5.0) -> None:
        for _, sink in self.routes:
            if isinstance(sink, QueuedSink):
                sink.stop(drain_seconds)


# --------------------------------------------------------------------------- dispatch


class NotifyMetrics:
    """Delivery counters by sink, in the gateway's registry (served at /metrics)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(f"{_PREFIX}notifications_sent", "Notifications delivered, by sink", ["sink"], registry=registry)
        self.failed = Counter(f"{_PREFIX}notifications_failed", "Notifications given up on after retries, by sink", ["sink"], registry=registry)
        self.dropped = Counter(f"{_PREFIX}notifications_dropped", "Notifications dropped: queue full or shutting down", ["sink"], registry=registry)
        self.retries = Counter(f"{_PREFIX}notification_retries", "Delivery attempts retried, by sink", ["sink"], registry=registry)


_STOP = object()


class QueuedSink:
    """Runs a blocking sink on its own thread: `send` only enqueues (never blocks), the
    thread delivers with retries and doubling backoff."""

    def __init__(self, sink: Sink, delivery: DeliveryConfig, metrics: NotifyMetrics) -> None:
        self.sink = sink
        self.name = sink.name
        self.delivery = delivery
        self.metrics = metrics
        self._queue: queue.Queue[object] = queue.Queue(maxsize=delivery.queue_size)
        self._abandon = threading.Event()  # stop waited long enough: drop what is left
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"notify-{sink.name}", daemon=True)

    def send(self, change: AlertChange) -> None:
        if self._stopped:  # e.g. an acknowledgement through the API during shutdown
            self._drop(change, "stopped")
            return
        try:
            self._queue.put_nowait(change)
        except queue.Full:
            self._drop(change, "queue full")

    def start(self) -> None:
        self._thread.start()

    def stop(self, drain_seconds: float = 5.0) -> None:
        """Deliver what is queued for up to `drain_seconds`, then drop the rest (a second
        more for the thread to notice); a request in flight is left to its timeout."""
        self._stopped = True
        if self._thread.is_alive() and not self._finish(drain_seconds):
            self._abandon.set()
            self._finish(1.0)
        close = getattr(self.sink, "close", None)
        if close is not None and not self._thread.is_alive():
            close()

    def _finish(self, seconds: float) -> bool:
        """Queue the end marker and wait for the thread to reach it; True if it did."""
        try:
            self._queue.put(_STOP, timeout=seconds)
        except queue.Full:
            return False
        self._thread.join(seconds)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, AlertChange)
            if self._abandon.is_set():
                self._drop(item, "shutting down")
            else:
                self._deliver(item)

    def _deliver(self, change: AlertChange) -> None:
        delay = self.delivery.backoff_seconds
        for attempt in range(self.delivery.retries + 1):
            try:
                self.sink.send(change)
            except DeliveryError as exc:
                error = exc
            except Exception as exc:  # a bug or an unforeseen library error: do not retry blindly
                # The traceback only at debug level: a library's message may quote a secret URL.
                log.debug("notification sink raised", exc_info=True, extra={"sink": self.name})
                error = DeliveryError(type(exc).__name__, retryable=False)
            else:
                self.metrics.sent.labels(self.name).inc()
                return
            if not error.retryable or attempt == self.delivery.retries:
                break
            self.metrics.retries.labels(self.name).inc()
            log.info("notification retry", extra={"sink": self.name, "alert": change.alert.id, "attempt": attempt + 1, "error": error.reason, "retry_in_s": delay})
            if self._abandon.wait(delay):
                break
            delay = min(delay * 2, self.delivery.max_backoff_seconds)
        self.metrics.failed.labels(self.name).inc()
        log.warning("notification failed", extra={"sink": self.name, "alert": change.alert.id, "change": change.action, "error": error.reason})

    def _drop(self, change: AlertChange, why: str) -> None:
        self.metrics.dropped.labels(self.name).inc()
        log.warning("notification dropped", extra={"sink": self.name, "alert": change.alert.id, "change": change.action, "reason": why})


# --------------------------------------------------------------------------- sinks


class MqttSink:
    """The alerts topic of the alert's site (QoS 1); paho queues, so this never blocks."""

    name = "mqtt"

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client

    def send(self, change: AlertChange) -> None:
        self.client.publish(topics.alerts_topic(change.alert.site), alert_payload(change), qos=1)


class WebhookSink:
    """POSTs the change as JSON. 5xx, 429 and connection errors are worth a retry; other
    answers are final. `X-Warden-Delivery` is the same on every retry of one change, so a
    receiver can drop a duplicate (a 500 after it had stored the first attempt)."""

    def __init__(self, name: str, config: WebhookSinkConfig) -> None:
        self.name = name
        self.config = config
        self.target = safe_target(config.url)
        self._client = httpx.Client(timeout=config.timeout_seconds, follow_redirects=False)

    def send(self, change: AlertChange) -> None:
        body = alert_payload(change)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "warden-gateway",
            "X-Warden-Delivery": hashlib.sha256(body).hexdigest()[:32],
            **self.config.headers,
        }
        try:
            response = self._client.post(self.config.url, content=body, headers=headers)
        except httpx.TransportError as exc:  # str(exc) may quote the URL: name the class only
            raise DeliveryError(type(exc).__name__, retryable=True) from None
        if response.is_success:
            return
        status = response.status_code
        raise DeliveryError(f"HTTP {status}", retryable=status >= 500 or status == 429)

    def close(self) -> None:
        self._client.close()


class SmtpSink:
    """A plain-text mail per change, through an SMTP relay (STARTTLS or implicit TLS)."""

    def __init__(self, name: str, config: SmtpSinkConfig) -> None:
        self.name = name
        self.config = config
        self.target = f"smtp://{config.host}:{config.port}"

    def send(self, change: AlertChange) -> None:
        try:
            with self._connect() as smtp:
                if self.config.username is not None and self.config.password is not None:
                    smtp.login(self.config.username, self.config.password)
                smtp.send_message(self.message(change))
        except smtplib.SMTPResponseException as exc:  # 4xx: try later; 5xx: refused for good
            raise DeliveryError(f"SMTP {exc.smtp_code}", retryable=400 <= exc.smtp_code < 500) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            raise DeliveryError(f"SMTP recipients refused {codes}", retryable=all(400 <= c < 500 for c in codes)) from None
        except (OSError, smtplib.SMTPException) as exc:  # refused, timed out, TLS failed, disconnected
            raise DeliveryError(type(exc).__name__, retryable=True) from None

    def _connect(self) -> smtplib.SMTP:
        config = self.config
        if config.tls == "implicit":
            return smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout_seconds, context=self._tls())
        smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout_seconds)
        if config.tls == "starttls":
            try:
                smtp.starttls(context=self._tls())
            except BaseException:
                smtp.close()
                raise
        return smtp

    def _tls(self) -> ssl.SSLContext:
        cafile = str(self.config.tls_ca_file) if self.config.tls_ca_file else None
        return ssl.create_default_context(cafile=cafile)

    def message(self, change: AlertChange) -> EmailMessage:
        alert = change.alert
        mail = EmailMessage()
        mail["From"] = self.config.sender
        mail["To"] = ", ".join(self.config.to)
        mail["Subject"] = f"{self.config.subject_prefix} {alert.severity.upper()} {change.action}: {alert.rule} {alert.subject} ({alert.site})".strip()
        mail.set_content(mail_body(change))
        return mail


def mail_body(change: AlertChange) -> str:
    """What a person needs to act without opening the dashboard."""
    alert = change.alert
    lines = [
        alert.message,
        "",
        f"Change:     {change.action}" + (f" - {change.note}" if change.note else ""),
        f"Alert:      #{alert.id} {alert.rule} / {alert.subject} at {alert.site}",
        f"State:      {alert.state}, severity {alert.severity}, escalation level {alert.escalation_level}",
        f"Opened:     {alert.opened_at} (event time), {alert.count} occurrence(s)",
    ]
    if alert.acknowledged_by:
        lines.append(f"Owner:      {alert.acknowledged_by} since {alert.acknowledged_at}")
    if alert.resolved_at:
        lines.append(f"Resolved:   {alert.resolved_at}")
    if alert.details:
        lines += ["", "Details:", *(f"  {key}: {value}" for key, value in sorted(alert.details.items()))]
    return "\n".join(lines) + "\n"


def safe_target(url: str) -> str:
    """scheme://host:port of a URL: enough to tell sinks apart, without path, query or
    user info, where webhook secrets live."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


# --------------------------------------------------------------------------- assembly


def build_notifier(config: AlertsConfig, client: mqtt.Client, registry: CollectorRegistry) -> Notifier:
    """The MQTT alerts topic (unless disabled) and every configured sink, each routed."""
    routes: list[tuple[Route, Sink]] = []
    if config.mqtt.enabled:
        routes.append((Route.from_config(config.mqtt), MqttSink(client)))
    metrics = NotifyMetrics(registry)
    for name, sink_config in config.sinks.items():
        sink: WebhookSink | SmtpSink
        sink = WebhookSink(name, sink_config) if isinstance(sink_config, WebhookSinkConfig) else SmtpSink(name, sink_config)
        level = config.sink_level(name)
        routes.append((Route.from_config(sink_config, level), QueuedSink(sink, sink_config, metrics)))
        log.info("notification sink", extra={"sink": name, "type": sink_config.type, "target": sink.target, "from_level": level})
    return Notifier(routes)
