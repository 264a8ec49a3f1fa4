"""One gateway process serving two sites in different zones (issue 21), against a real
Mosquitto: each site judged by its own schedule, zone and rules, its events placed in its
own rooms, an event claiming another site a dead letter; and a single-site gateway's rule
state carried into a gateway of several sites.

The scenario (Tuesday 2026-11-17): two schools whose AC both have the device id
"ac-a204", behind agents both called "agent-a"; school day 07:30-18:00 Monday to Friday.
Shanghai is UTC+8; London is UTC+0 in November. Shanghai is judged by the top-level rules
(AC grace 15 minutes), London by its own (grace 30 minutes).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from gateway.config import AlertsConfig, GatewayConfig
from gateway.notify import build_notifier
from gateway.service import Gateway
from gateway.sites import load_sites
from gateway.store import StateStore
from rules.alerts import AlertSignal, Severity, SignalAction
from tests.gateway.test_gateway import Publisher
from tests.support.wait import wait_for
from warden import topics
from warden.clock import ManualClock
from warden.config import BrokerConfig, ConfigError, SiteConfig, load_config
from warden.events import Reading, encode_events, stable_event_id
from warden.i18n import Message

DAY = datetime(2026, 11, 17, tzinfo=timezone.utc)
#: Late that evening in London, 07:00 next morning in Shanghai: after every reading below.
NOW = DAY + timedelta(hours=23)


def school(site_id: str, zone: str, room: str) -> dict[str, object]:
    return {
        "id": site_id,
        "timezone": zone,
        "schedules": {"school-day": [{"days": "mon-fri", "hours": "07:30-18:00"}]},
        "buildings": [{"id": "main", "rooms": [{"id": room, "schedule": "school-day", "devices": ["ac-a204"]}]}],
    }


def power(site: str, at: datetime, watts: float = 1000.0) -> Reading:
    return Reading(
        id=stable_event_id(site, "ac-a204", "power", at.isoformat()),
        site=site,
        device="ac-a204",
        event_time=at,
        quantity="power",
        value=watts,
        unit="W",
    )


def write_config(folder: Path, broker: BrokerConfig, sites: object, **extra: object) -> Path:
    """The two site files and a gateway file naming them; `sites`: the gateway's sites: key."""
    (folder / "shanghai.yaml").write_text(yaml.safe_dump(school("shanghai-no3", "Asia/Shanghai", "SH-204")))
    (folder / "london.yaml").write_text(yaml.safe_dump(school("london-east", "Europe/London", "LN-12")))
    document = {
        "id": f"gw-{folder.name}"[:60],
        "broker": broker.model_dump(mode="json"),
        "historian": {"type": "sqlite", "path": "history.db"},
        "state_db": "state.db",
        "rules": {"ac_after_hours": {"standby_watts": 60, "grace_minutes": 15}},
        **({"sites": sites} if isinstance(sites, list) else {"site_file": sites}),
        **extra,
    }
    path = folder / "gateway.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


TWO_SITES = [
    {"site_file": "shanghai.yaml"},
    {"site_file": "london.yaml", "rules": {"ac_after_hours": {"standby_watts": 60, "grace_minutes": 30}}},
]


def start(path: Path) -> Gateway:
    config = load_config(path, GatewayConfig)
    # tick_every None: time passes in the rules by the events only.
    gateway = Gateway(config, load_sites(config, path), ManualClock(NOW), tick_every=None)
    gateway.start()
    assert gateway.subscribed.wait(10), "the gateway did not subscribe"
    return gateway


def test_each_sites_alert_opens_on_its_own_schedule_zone_and_rules(
    broker_config: BrokerConfig, tmp_path: Path
) -> None:
    gateway = start(write_config(tmp_path, broker_config, TWO_SITES))
    publisher = Publisher(broker_config)
    morning = [DAY + timedelta(hours=11, minutes=m) for m in range(0, 16, 5)]  # 11:00-11:15 UTC
    evening = [DAY + timedelta(hours=19, minutes=m) for m in range(0, 31, 5)]  # 19:00-19:30 UTC
    try:
        publisher.raw(
            encode_events([power("shanghai-no3", t) for t in morning]), topics.events_topic("shanghai-no3", "agent-a")
        )
        publisher.raw(
            encode_events([power("london-east", t) for t in morning + evening]),
            topics.events_topic("london-east", "agent-a"),
        )
        # 4 Shanghai readings and 4 + 7 London ones.
        assert gateway.wait_until(lambda: gateway.events_stored == 15, timeout=10), gateway.counts()
        alerts = {a.site: a for a in gateway.store.alerts(rule="ac_after_hours")}
        order = gateway.work_orders.create(room="LN-12", text="AC left on", by="desk")
        seen = {site: gateway.devices.snapshot(site)["ac-a204"]["events"] for site in gateway.sites}
    finally:
        publisher.close()
        gateway.stop()
    assert set(gateway.sites) == {"shanghai-no3", "london-east"} and gateway.site.id == "shanghai-no3"
    # Shanghai: 11:00 UTC is 19:00 local, after school; on since then, raised after the
    # top-level grace of 15 minutes: 19:15 local = 11:15 UTC.
    assert alerts["shanghai-no3"].opened_at.startswith("2026-11-17T11:15:00"), alerts["shanghai-no3"]
    assert alerts["shanghai-no3"].details["since"].startswith("2026-11-17T11:00:00")
    # London: 11:00-11:15 UTC is 11:00-11:15 local, school hours: nothing. 19:00 UTC is 19:00
    # local, after school; London's own grace of 30 minutes: raised at 19:30 UTC.
    assert alerts["london-east"].opened_at.startswith("2026-11-17T19:30:00"), alerts["london-east"]
    assert alerts["london-east"].details["since"].startswith("2026-11-17T19:00:00")
    assert len(alerts) == 2 and gateway.store.dead_letters() == []  # the same device id in both: no "not_owner"
    with sqlite3.connect(tmp_path / "history.db") as db:  # each site's device in its own site's room
        placed = set(db.execute("SELECT site, room FROM point_series"))
    assert placed == {("shanghai-no3", "SH-204"), ("london-east", "LN-12")}
    assert order.order.site == "london-east"  # the room's site
    assert seen == {"shanghai-no3": {"reading": 4}, "london-east": {"reading": 11}}  # one device id, counted per site


def test_an_event_of_a_site_not_served_is_a_dead_letter(broker_config: BrokerConfig, tmp_path: Path) -> None:
    gateway = start(write_config(tmp_path, broker_config, TWO_SITES))
    publisher = Publisher(broker_config)
    at = DAY + timedelta(hours=11)
    try:
        # On an unserved site's topic: this gateway never subscribed to it, so it never comes.
        publisher.raw(encode_events([power("harbour", at)]), topics.events_topic("harbour", "agent-a"))
        # Claiming another site on a served site's topic: refused as site_mismatch.
        publisher.raw(encode_events([power("harbour", at)]), topics.events_topic("london-east", "agent-a"))
        publisher.raw(encode_events([power("london-east", at)]), topics.events_topic("london-east", "agent-a"))
        assert gateway.wait_until(lambda: gateway.events_stored == 1, timeout=10), gateway.counts()
        letters = gateway.store.dead_letters()
    finally:
        publisher.close()
        gateway.stop()
    assert [(d["code"], d["topic"]) for d in letters] == [
        ("site_mismatch", topics.events_topic("london-east", "agent-a"))
    ]
    assert gateway.counts()["messages"] == 2  # the harbour topic's message never reached it


def test_a_single_site_gateways_rule_state_carries_on_with_several_sites(
    broker_config: BrokerConfig, tmp_path: Path
) -> None:
    """Upgrade: the gateway served Shanghai alone; it now serves London too, from the same
    state.db. Shanghai's AC went on before the upgrade; its grace timer carries on."""
    single = start(write_config(tmp_path, broker_config, "shanghai.yaml"))
    publisher = Publisher(broker_config)
    sh_topic = topics.events_topic("shanghai-no3", "agent-a")
    try:
        # 11:00 and 11:05 UTC, 19:00 and 19:05 local: on, still within the 15-minute grace.
        publisher.raw(
            encode_events([power("shanghai-no3", DAY + timedelta(hours=11, minutes=m)) for m in (0, 5)]), sh_topic
        )
        assert single.wait_until(lambda: single.events_stored == 2, timeout=10)
    finally:
        single.stop()  # snapshots the rules in today's single-site form
    assert "ac_after_hours" in single.store.rule_snapshot()
    upgraded = start(write_config(tmp_path, broker_config, TWO_SITES))
    try:
        publisher.raw(encode_events([power("shanghai-no3", DAY + timedelta(hours=11, minutes=15))]), sh_topic)
        assert upgraded.wait_until(lambda: upgraded.events_stored == 1, timeout=10)
        [alert] = upgraded.store.alerts(rule="ac_after_hours")
        snapshot = upgraded.engine.snapshot()
    finally:
        publisher.close()
        upgraded.stop()
    # On since 11:00 UTC, known only from the old snapshot: raised at 11:15, 15 minutes on.
    assert (alert.site, alert.opened_at[:19], alert.details["since"][:19]) == (
        "shanghai-no3",
        "2026-11-17T11:15:00",
        "2026-11-17T11:00:00",
    )
    assert set(snapshot["sites"]) == {"shanghai-no3", "london-east"}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            {"site_file": "a.yaml", "sites": [{"site_file": "a.yaml"}]},
            "site_file, sites, site_dir: give exactly one (site_file and sites are given)",
        ),
        ({}, "site_file, sites, site_dir: give exactly one (none is given)"),
        ({"sites": []}, "sites: "),
        ({"site_dir": "sites", "partition": {"count": 2, "index": 2}}, "partition: index: 2 is not below count 2"),
    ],
)
def test_config_errors_name_the_file_and_key(tmp_path: Path, document: dict[str, object], expected: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError) as caught:
        load_config(path, GatewayConfig)
    assert f"{path}: {expected}" in str(caught.value)


def test_two_site_files_with_one_id_are_refused_naming_both(broker_config: BrokerConfig, tmp_path: Path) -> None:
    path = write_config(tmp_path, broker_config, [{"site_file": "shanghai.yaml"}, {"site_file": "again.yaml"}])
    (tmp_path / "again.yaml").write_text(yaml.safe_dump(school("shanghai-no3", "Asia/Shanghai", "X-1")))
    with pytest.raises(ConfigError) as caught:
        load_sites(load_config(path, GatewayConfig), path)
    assert str(caught.value) == (
        f"{tmp_path / 'again.yaml'}: id: 'shanghai-no3' is also the id of "
        f"{tmp_path / 'shanghai.yaml'}; each site needs its own id"
    )


def test_a_sites_own_rules_are_checked_against_that_site(broker_config: BrokerConfig, tmp_path: Path) -> None:
    """London's rules name a door schedule London does not have (Shanghai's rules would pass)."""
    rules = {"doors": {"doors": {"gate": {"schedule": "evening-club"}}}}
    path = write_config(
        tmp_path, broker_config, [{"site_file": "shanghai.yaml"}, {"site_file": "london.yaml", "rules": rules}]
    )
    with pytest.raises(ConfigError) as caught:
        load_sites(load_config(path, GatewayConfig), path)
    assert str(caught.value) == (
        f"{path}: sites[1].rules.doors.doors.gate.schedule: unknown schedule 'evening-club' "
        f"(site 'london-east', {tmp_path / 'london.yaml'})"
    )


def test_a_site_dir_serves_its_site_files_in_name_order(broker_config: BrokerConfig, tmp_path: Path) -> None:
    folder = tmp_path / "sites"
    folder.mkdir()
    write_config(folder, broker_config, "shanghai.yaml")  # writes london.yaml and shanghai.yaml there ...
    (folder / "gateway.yaml").unlink()  # ... and a gateway file, which is no site
    (folder / "README.md").write_text("not a site")
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"site_dir": "sites"}))
    sites = load_sites(load_config(path, GatewayConfig), path)
    assert [site.id for site, _ in sites] == ["london-east", "shanghai-no3"]  # london.yaml < shanghai.yaml
    (folder / "london.yaml").unlink()
    (folder / "shanghai.yaml").unlink()
    with pytest.raises(ConfigError, match=r"site_dir: no site file \(\*\.yaml, \*\.yml, \*\.toml\) in "):
        load_sites(load_config(path, GatewayConfig), path)


def test_each_sites_daily_report_is_made_in_its_own_zone(broker_config: BrokerConfig, tmp_path: Path) -> None:
    """daily_at 06:00 local, days from 08:00 (report.day_start's default): the report of the
    day that ended at the last 08:00, once 06:00 has passed."""
    send = {"daily_at": "06:00", "archive_dir": "reports", "retry_seconds": 0.05}
    config = load_config(write_config(tmp_path, broker_config, TWO_SITES, report={"send": send}), GatewayConfig)
    path = tmp_path / "gateway.yaml"
    clock = ManualClock(datetime(2026, 11, 18, 1, 0, tzinfo=timezone.utc))
    gateway = Gateway(config, load_sites(config, path), clock, tick_every=None)
    gateway.start()

    def archived() -> set[tuple[str, str]]:
        with sqlite3.connect(tmp_path / "state.db") as db:
            return set(db.execute("SELECT kind, label FROM report_archive"))

    try:
        # 01:00 UTC on the 18th: 09:00 in Shanghai, past 08:00, so the day of the 17th
        # (08:00 on the 17th to 08:00 on the 18th) has ended and 06:00 has passed: due.
        # 01:00 in London: before 06:00, nothing due.
        wait_for(lambda: archived() == {("daily", "shanghai-no3/2026-11-17")}, what="Shanghai's report")
        # 07:00 UTC: 07:00 in London, past 06:00 but before 08:00: the day that ended at the
        # last 08:00 is the 16th's (08:00 on the 16th to 08:00 on the 17th).
        clock.advance(timedelta(hours=6))
        wait_for(lambda: ("daily", "london-east/2026-11-16") in archived(), what="London's report")
    finally:
        gateway.stop()
    assert archived() == {("daily", "shanghai-no3/2026-11-17"), ("daily", "london-east/2026-11-16")}
    assert (tmp_path / "reports" / "shanghai-no3" / "daily" / "2026-11-17" / "report.html").is_file()
    assert (tmp_path / "reports" / "london-east" / "daily" / "2026-11-16" / "report.html").is_file()


def test_a_bot_and_a_mail_speak_each_alerts_own_sites_language_and_names(tmp_path: Path) -> None:
    """One notifier for two sites: harbour's people read zh-CN, hillcrest's English, each
    by its own name for the same device id. The zh-CN text is the catalogue's (as in
    tests/gateway/test_bots.py), filled in by hand; the English is the message itself, each
    name with its id beside it (warden/i18n.py: localise)."""

    def site(site_id: str, locale: str, meter_name: str) -> SiteConfig:
        return SiteConfig.model_validate(
            {
                "id": site_id,
                "timezone": "Asia/Shanghai",
                "locale": locale,
                "buildings": [
                    {
                        "id": "b",
                        "rooms": [{"id": "lab", "devices": ["meter-7"], "device_names": {"meter-7": meter_name}}],
                    }
                ],
            }
        )

    sites = [site("harbour", "zh-CN", "科学楼水表"), site("hillcrest", "en", "Science block meter")]
    burst = Message(
        "Possible burst at {device}: above {limit:g} L/min since {since} (peak {peak:.0f} L/min, {litres:.0f} L)",
        device="meter-7",
        limit=60.0,
        since="22:05",
        peak=95.0,
        litres=570.0,
    )
    store = StateStore(tmp_path / "state.db", ManualClock(DAY))
    try:
        signals = [AlertSignal(s.id, "water_burst", "meter-7", SignalAction.RAISE, DAY, Severity.CRITICAL, burst)
                   for s in sites]  # fmt: skip
        changes = store.commit_batch([], signals, {})
        alerts = AlertsConfig.model_validate(
            {
                "mqtt": {"enabled": False},
                "sinks": {
                    "bot": {"type": "webhook", "url": "http://127.0.0.1:9/hook", "preset": "wecom"},
                    "mail": {
                        "type": "smtp",
                        "host": "127.0.0.1",
                        "sender": "warden@example.org",
                        "to": ["desk@example.org"],
                    },
                },
            }
        )
        notifier = build_notifier(alerts, None, CollectorRegistry(), store, sites)  # type: ignore[arg-type]
        sinks = {queued.name: queued.sink for _, queued in notifier.routes}  # type: ignore[attr-defined]
        bodies = [json.loads(sinks["bot"].request([change])[1])["text"]["content"] for change in changes]
        subjects = [sinks["mail"].message(change)["Subject"] for change in changes]
        notifier.stop()
    finally:
        store.close()
    assert bodies == [
        "[CRITICAL] 新告警 opened: 科学楼水表 可能爆管：自 22:05 起流量超过 60 升/分钟（峰值 95 升/分钟，共 570 升）\n"
        "water_burst · meter-7 · #1 · harbour",
        "[CRITICAL] 新告警 opened: Possible burst at Science block meter (meter-7): above 60 L/min since 22:05 "
        "(peak 95 L/min, 570 L)\n"
        "water_burst · meter-7 · #2 · hillcrest",
    ]
    # A mail in English keeps the codes integrators filter on; in zh-CN it leads with the message,
    # after the catalogue's words for critical (严重) and opened (新告警).
    assert subjects == [
        "[warden] [严重] 新告警: 科学楼水表 可能爆管：自 22:05 起流量超过 60 升/分钟（峰值 95 升/分钟，共 570 升）",
        "[warden] CRITICAL opened: water_burst meter-7 (hillcrest)",
    ]
