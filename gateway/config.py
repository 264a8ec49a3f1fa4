"""The gateway's configuration: broker, historian, state, API, rules, alerts and report.

The `rules:` section is the rules' own model (rules/config.py); the site file is the
kernel's (warden/config.py: SiteConfig).
"""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator, model_validator

from gateway.db import StateDbTarget
from gateway.report_schedule import ReportSendConfig
from gateway.statistics import StatisticsConfig
from gateway.store import DeadLetterConfig
from gateway.workorders import WorkOrderConfig
from rules.alerts import AlertChangeKind, Severity
from rules.config import ALERT_RULES, RulesConfig
from rules.sites import check_process_keys, merge_rules
from warden.config import SECRET, BrokerConfig, ConfigPath, StrictModel, require_unique, tagged_union, wall_time
from warden.events import Identifier
from warden.i18n import normalise_locale

#: What people are told by default: every step of the lifecycle but the frequent updates.
PEOPLE_CHANGES: tuple[AlertChangeKind, ...] = ("opened", "acknowledged", "escalated", "resolved")


# --------------------------------------------------------------------------- historian


class SqliteHistorianConfig(StrictModel):
    type: Literal["sqlite"]
    path: ConfigPath = Path("data/history.db")


class InfluxHistorianConfig(StrictModel):
    """InfluxDB 2.x/3.x, or 1.8+ through its v2 compatibility API (bucket "db/rp").

    Points go through a durable spool (SQLite at `spool_path`) and are retried without
    limit; there is no max_retries (see docs/storage.md)."""

    type: Literal["influxdb"]
    url: str
    token: str = Field(default="", repr=False, json_schema_extra=SECRET)
    org: str = "-"
    bucket: str
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    flush_interval_ms: int = Field(default=1000, ge=10)
    retry_interval_ms: int = Field(default=1000, ge=10)
    max_retry_delay_ms: int = Field(default=60_000, ge=10)
    exponential_base: float = Field(default=2.0, ge=1.0, le=10.0)
    timeout_ms: int = Field(default=10_000, ge=100)
    spool_path: ConfigPath = Path("data/influx-spool.db")  # next to the default state_db
    spool_max_points: int = Field(default=5_000_000, ge=1)


HistorianConfig = tagged_union("type", [SqliteHistorianConfig, InfluxHistorianConfig])


# --------------------------------------------------------------------------- API

ApiRole = Literal["guard", "maintenance", "manager", "admin"]


class ApiToken(StrictModel):
    """One API token, kept only as the SHA-256 of the secret (`warden token` makes both)."""

    name: Identifier = Field(description="Who holds it; shown in alert history, never the secret")
    role: ApiRole
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", repr=False, json_schema_extra=SECRET, description="hex SHA-256 of the token")
    guard: Identifier | None = Field(default=None, description="role guard: the badge whose routes they see")
    routes: list[Identifier] = Field(default_factory=list, description="role guard: routes they walk")
    locale: str | None = Field(default=None, description="Language of what they read, e.g. 'zh-CN'; default: the site's")
    sites: list[Identifier] = Field(default_factory=list,
                                    description="Sites they may see and act on (issue 21); none: every site of the gateway")

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, value: str | None) -> str | None:
        return None if value is None else normalise_locale(value)

    @model_validator(mode="after")
    def _guard_scope(self) -> ApiToken:
        if self.role == "guard" and self.guard is None and not self.routes:
            raise ValueError("a guard token needs `guard` (a badge) or `routes`, else it sees no patrol")
        return self


class ApiConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    tokens: list[ApiToken] = Field(default_factory=list)
    public_read: bool | None = Field(
        default=None,
        description="Reads without a token (kiosk); None: only while no token is configured. Writes always need one.",
    )
    public_metrics: bool = Field(default=True, description="/metrics and /api/health without a token")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS; none: closed")
    max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Largest request body; a bigger one is refused with 413 before it is read"
    )

    @model_validator(mode="after")
    def _unique_tokens(self) -> ApiConfig:
        require_unique((t.name for t in self.tokens), "tokens", "name")
        require_unique((t.sha256 for t in self.tokens), "tokens", "sha256", show=False)
        return self



# --------------------------------------------------------------------------- alerts


class EscalationRule(StrictModel):
    """Deadlines of one rule that differ from the defaults; a key left out keeps the
    default, null turns that escalation off for the rule."""

    ack_minutes: float | None = Field(default=None, gt=0)
    response_hours: float | None = Field(default=None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """`door_forced: 5` means ack_minutes 5; `patrol_silence: null` never escalates."""
        if data is None:
            return {"ack_minutes": None, "response_hours": None}
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return {"ack_minutes": data}
        if not isinstance(data, dict):
            raise ValueError(f"expected minutes (a number), null or a mapping of ack_minutes and response_hours, got {data!r}")
        return data


class EscalationConfig(StrictModel):
    """Unacknowledged and unresolved alerts climb a ladder of people (docs/rules.md#alert-lifecycle).
    Judged on the gateway's clock: deadlines are about people, not device event time."""

    enabled: bool = True
    ack_minutes: float | None = Field(default=60.0, gt=0, description="Open this long without acknowledgement: escalate")
    response_hours: float | None = Field(default=24.0, gt=0, description="Acknowledged this long without resolution: escalate")
    rules: dict[str, EscalationRule] = Field(default_factory=dict)
    levels: list[list[Identifier]] = Field(
        default_factory=lambda: [[], [], []],
        description="Sink names per level; level 0 is the first responder, the last level is the top",
    )

    @field_validator("levels")
    @classmethod
    def _a_ladder(cls, value: list[list[str]]) -> list[list[str]]:
        if not value:
            raise ValueError("expected at least one level (level 0: the first responders)")
        return value

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, value: dict[str, EscalationRule]) -> dict[str, EscalationRule]:
        unknown = sorted(set(value) - ALERT_RULES)
        if unknown:
            raise ValueError(f"unknown rule {', '.join(map(repr, unknown))} (known: {', '.join(sorted(ALERT_RULES))})")
        return value

    @property
    def top_level(self) -> int:
        return len(self.levels) - 1

    def deadlines(self, rule: str) -> tuple[float | None, float | None]:
        """(ack minutes, response hours) for `rule`; None: that escalation is off."""
        override = self.rules.get(rule)
        ack, response = self.ack_minutes, self.response_hours
        if override is not None:
            ack = override.ack_minutes if "ack_minutes" in override.model_fields_set else ack
            response = override.response_hours if "response_hours" in override.model_fields_set else response
        return ack, response


class RouteConfig(StrictModel):
    """Which alert changes a sink receives, besides its escalation level."""

    min_severity: Severity = Severity.INFO
    rules: list[str] | None = Field(default=None, description="Only these rules; none: every rule")
    changes: list[AlertChangeKind] = Field(default_factory=lambda: list(PEOPLE_CHANGES), min_length=1)

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, value: list[str] | None) -> list[str] | None:
        unknown = sorted(set(value or ()) - ALERT_RULES)
        if unknown:
            raise ValueError(f"unknown rule {', '.join(map(repr, unknown))} (known: {', '.join(sorted(ALERT_RULES))})")
        return value


class MqttAlertsConfig(RouteConfig):
    """The MQTT alerts topic (warden/v1/<site>/alerts): every change, for dashboards."""

    enabled: bool = True
    changes: list[AlertChangeKind] = Field(
        default_factory=lambda: ["opened", "updated", "acknowledged", "escalated", "resolved"], min_length=1
    )


class DeliveryConfig(RouteConfig):
    """Delivery off the ingest worker, from an outbox on disk (gateway/notify.py): retried
    with doubling backoff until delivered, refused for good, or expired."""

    queue_size: int = Field(
        default=1000, ge=1, description="Notifications waiting on disk besides the one being delivered; past it the oldest are dropped and counted"
    )
    expire_hours: float = Field(default=24.0, gt=0, description="Not delivered this long after the change: given up, counted as expired")
    timeout_seconds: float = Field(default=10.0, gt=0)
    retries: int | None = Field(default=None, ge=0, description="Give up (counted as failed) after this many retries; none: until expire_hours")
    backoff_seconds: float = Field(default=1.0, ge=0, description="First retry delay; doubles per attempt")
    max_backoff_seconds: float = Field(default=60.0, ge=0)


class WebhookSinkConfig(DeliveryConfig):
    """POST of the change as JSON. url and headers may hold secrets: never logged."""

    type: Literal["webhook"]
    url: str = Field(repr=False, json_schema_extra=SECRET)
    headers: dict[str, str] = Field(default_factory=dict, repr=False, json_schema_extra=SECRET)
    timeout_seconds: float = Field(default=5.0, gt=0)
    preset: Literal["wecom", "dingtalk", "feishu"] | None = Field(
        default=None, description="Group bot format: 企业微信, 钉钉, 飞书 (gateway/bots.py)"
    )
    body: dict[str, Any] | None = Field(
        default=None, description="JSON body template, string leaves Jinja2 (gateway/bots.py); default: the preset's, or the change"
    )
    secret: str | None = Field(default=None, repr=False, json_schema_extra=SECRET, description="Signing secret of a dingtalk or feishu bot")
    max_per_minute: int | None = Field(
        default=None, ge=1, description="Messages a minute at most (wecom default 20); more wait and go together"
    )

    @model_validator(mode="after")
    def _signing(self) -> WebhookSinkConfig:
        if self.secret is not None and self.preset not in ("dingtalk", "feishu"):
            raise ValueError(f"secret: only a dingtalk or feishu bot signs (preset is {self.preset!r})")
        return self

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("expected an http:// or https:// URL")
        return value


class SmtpSinkConfig(DeliveryConfig):
    """Mail through an SMTP relay. The password is never logged, nor sent without TLS."""

    type: Literal["smtp"]
    host: str
    port: int = Field(default=25, ge=1, le=65535)
    tls: Literal["none", "starttls", "implicit"] = Field(default="none", description="starttls: port 587; implicit: port 465")
    tls_ca_file: ConfigPath | None = Field(default=None, description="CA to trust instead of the system's")
    username: str | None = None
    password: str | None = Field(default=None, repr=False, json_schema_extra=SECRET)
    sender: str
    to: list[str]
    subject_prefix: str = "[warden]"

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        return _mail_address(value)

    @field_validator("to")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("expected at least one address")
        return [_mail_address(v) for v in value]

    @model_validator(mode="after")
    def _credentials(self) -> SmtpSinkConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password: set both or neither")
        if self.password is not None and self.tls == "none":
            raise ValueError("password: would be sent in clear; set tls: starttls or implicit")
        return self


def _mail_address(value: str) -> str:
    if not re.match(r"^[^@\s,<>]+@[^@\s,<>]+$", value):
        raise ValueError(f"expected a mail address like warden@example.org, got {value!r}")
    return value


SinkConfig = tagged_union("type", [WebhookSinkConfig, SmtpSinkConfig])


class AlertsConfig(StrictModel):
    """Escalation and notifications (gateway/escalation.py, gateway/notify.py)."""

    escalation: EscalationConfig = Field(default_factory=EscalationConfig)
    mqtt: MqttAlertsConfig = Field(default_factory=MqttAlertsConfig)
    sinks: dict[Identifier, SinkConfig] = Field(default_factory=dict)
    receipts_file: ConfigPath | None = Field(default=None, description=(
        "This machine's journal of delivered notifications not yet marked in the outbox (gateway/notify.py);"
        " default: beside the SQLite state_db, else beside the historian's file"))  # fmt: skip
    unconfirmed_wait_seconds: float = Field(default=60.0, ge=0, description=(
        "A page another machine began to send and never confirmed waits this long for that machine's receipt"
        " before a group bot or mail is sent it again (a webhook, which drops a repeated key, at once)"))  # fmt: skip

    @model_validator(mode="after")
    def _levels_name_sinks(self) -> AlertsConfig:
        placed: dict[str, int] = {}
        for index, names in enumerate(self.escalation.levels):
            for name in names:
                if name not in self.sinks:
                    known = ", ".join(sorted(self.sinks)) or "none defined"
                    raise ValueError(f"escalation.levels[{index}]: unknown sink {name!r} (known: {known})")
                if name in placed:
                    raise ValueError(f"escalation.levels[{index}]: sink {name!r} is already in level {placed[name]}")
                placed[name] = index
        return self

    def sink_level(self, name: str) -> int:
        """The lowest escalation level a sink hears about; 0 (every level) if in no level."""
        for index, names in enumerate(self.escalation.levels):
            if name in names:
                return index
        return 0


class ReportConfig(StrictModel):
    """The morning report (gateway/report.py, docs/api.md#the-morning-report)."""

    day_start: time = Field(
        default=time(8, 0),
        description="Local time a report's day starts and the previous one ends: the report of day D covers "
        "D at day_start to D+1 at day_start, daytime, weekends and holidays included",
    )
    send: ReportSendConfig = Field(default_factory=ReportSendConfig)  # daily and monthly reports on a schedule

    @field_validator("day_start", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        return wall_time(value)



class SiteEntry(StrictModel):
    """One site a gateway serves (issue 21): its file, and the rules it is judged by."""

    site_file: ConfigPath
    rules: RulesConfig | None = Field(default=None, description="This site's rules, merged over the top-level rules: "
                                      "per family and key (rules/sites.py: merge_rules); default: the top-level rules")


class PartitionConfig(StrictModel):
    """Keep only the sites whose stable hash falls in partition `index` of `count` (gateway/sites.py)."""

    count: int = Field(ge=1, le=10_000)
    index: int = Field(ge=0)

    @model_validator(mode="after")
    def _index_below_count(self) -> PartitionConfig:
        if self.index >= self.count:
            raise ValueError(f"index: {self.index} is not below count {self.count} (partitions are 0 to {self.count - 1})")
        return self


class LeaseConfig(StrictModel):
    """A standby takes over under this lease (gateway/lease.py): a PostgreSQL advisory lock."""

    dsn: str = Field(repr=False, json_schema_extra=SECRET,
                     description="postgresql://... (a direct session, not a transaction pooler)")
    name: Identifier | None = Field(default=None, description="The partition's lease; default: the gateway's id")
    check_seconds: float = Field(default=1.0, gt=0, le=60, description="How often the holder checks its session")

    @field_validator("dsn")
    @classmethod
    def _postgresql(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("expected a postgresql:// URL")
        return value


class GatewayConfig(StrictModel):
    id: Identifier = "gateway"
    site_file: ConfigPath | None = Field(default=None, description="The one site served; or sites:, or site_dir:")
    sites: list[SiteEntry] | None = Field(default=None, min_length=1, description="Several sites, each with its rules")
    site_dir: ConfigPath | None = Field(default=None, description="Every *.yaml, *.yml, *.toml site file in this folder")
    partition: PartitionConfig | None = None
    lease: LeaseConfig | None = Field(default=None, description="Wait for this lease before serving; absent: no standby")
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    historian: HistorianConfig = Field(default_factory=lambda: SqliteHistorianConfig(type="sqlite"))
    state_db: StateDbTarget = Path("data/state.db")  # a file (SQLite) or a postgresql:// URL (gateway/db.py)
    queue_size: int = Field(default=10_000, ge=1)
    dedup_window_days: float = Field(
        default=14, gt=0,
        description="How long an event id is remembered so that a re-sent copy is dropped "
        "(between half this and this long); the seen ids do not grow forever.",
    )  # fmt: skip
    dead_letters: DeadLetterConfig = Field(default_factory=DeadLetterConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    rules: RulesConfig = Field(default_factory=RulesConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    statistics: StatisticsConfig = Field(default_factory=StatisticsConfig)
    work_orders: WorkOrderConfig = Field(default_factory=WorkOrderConfig)

    @model_validator(mode="before")
    @classmethod
    def _site_rules_over_top(cls, data: Any, info: ValidationInfo) -> Any:
        """Each sites[i].rules merged over the top-level rules as written, before either is
        checked, so an error names the site's key; a wrong top-level rules: is named once, there."""
        if not isinstance(data, dict) or not isinstance(data.get("sites"), list):
            return data
        top = data.get("rules", {})
        top = top.model_dump(exclude_unset=True) if isinstance(top, BaseModel) else top
        try:
            RulesConfig.model_validate(top, context=info.context)
        except ValidationError:
            return data
        merged = [{**e, "rules": merge_rules(top, e["rules"])} if isinstance(e, dict) and isinstance(e.get("rules"), dict)
                  else e for e in data["sites"]]  # fmt: skip
        return {**data, "sites": merged}

    @model_validator(mode="after")
    def _process_keys_are_the_top_levels(self) -> GatewayConfig:
        """A site may not set what times the one process (rules/sites.py PROCESS_KEYS): it would be ignored."""
        for index, entry in enumerate(self.sites or []):
            if entry.rules is not None:
                check_process_keys(self.rules, entry.rules, f"sites[{index}].rules")
        return self

    @model_validator(mode="after")
    def _one_way_to_name_sites(self) -> GatewayConfig:
        given = [key for key in ("site_file", "sites", "site_dir") if getattr(self, key) is not None]
        if len(given) != 1:
            detail = "none is given" if not given else f"{' and '.join(given)} are given"
            raise ValueError(f"site_file, sites, site_dir: give exactly one ({detail})")
        return self

    @model_validator(mode="after")
    def _report_sinks(self) -> GatewayConfig:
        """report.send.sinks name sinks of alerts.sinks."""
        for index, name in enumerate(self.report.send.sinks):
            if name not in self.alerts.sinks:
                known = ", ".join(sorted(self.alerts.sinks)) or "none defined"
                raise ValueError(f"report.send.sinks[{index}]: unknown sink {name!r} (known: {known})")
        return self


