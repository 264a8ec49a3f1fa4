"""Localisation (issue 19): the zh-CN catalogue covers every msgid the code and templates
use, dates, numbers and money follow the locale (expected strings as CLDR writes them, by
hand), alert messages are kept as an id and parameters and rendered in another locale by
names, a site's locale sets its currency, and the alert store keeps the facts an alert was
raised with when it resolves."""

from __future__ import annotations

import json
import re
import sqlite3
import string
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from babel.messages.pofile import read_po

from gateway.report import build_morning_report, render_csv, render_html
from gateway.store import StateStore
from rules.alerts import AlertSignal, SignalAction
from warden.config import ConfigError, SiteConfig, load_config
from warden.i18n import (
    Message,
    format_date,
    format_datetime,
    format_money,
    format_number,
    local_text,
    localise,
    normalise_locale,
    pick_locale,
    render,
    site_names,
)
from warden.locales.extract import all_msgids

PO = Path(__file__).resolve().parents[1] / "warden" / "locales" / "zh_CN" / "LC_MESSAGES" / "warden.po"
SHANGHAI = ZoneInfo("Asia/Shanghai")

ZH_SITE = SiteConfig.model_validate({
    "id": "huaxia", "name": "华夏中学", "timezone": "Asia/Shanghai", "locale": "zh-CN",
    "tariff": {"energy_per_kwh": 0.65},
    "schedules": {"self-study": [{"days": "mon-fri", "hours": "07:00-21:30"}]},
    "buildings": [{"id": "A", "name": "教学楼", "rooms": [
        {"id": "A-301", "name": "高一（3）班", "schedule": "self-study", "devices": ["ac-a301"]},
        {"id": "A-WC", "name": "一楼卫生间", "devices": ["wm-a"]},
    ]}],
})  # fmt: skip


# --------------------------------------------------------------------------- the catalogue


def _catalogue() -> dict[str, str]:
    with PO.open("rb") as handle:
        return {m.id: m.string for m in read_po(handle) if m.id}


def _fields(text: str) -> set[str]:
    """`{name}` fields (str.format) and `%(name)s` fields (the templates' gettext)."""
    brace = {name.split(":")[0] for _, name, _, _ in string.Formatter().parse(text) if name}
    return brace | set(re.findall(r"%\((\w+)\)", text))


def test_every_msgid_in_code_and_templates_has_a_zh_cn_translation() -> None:
    used = all_msgids()
    catalogue = _catalogue()
    # A floor, so an extractor that silently finds nothing cannot pass: the five rule
    # families' messages alone are more than 40 (rules/*.py, Message(...)).
    assert len(used) > 200
    missing = sorted(m for m in used if not catalogue.get(m))
    assert not missing, f"msgids without a zh-CN translation (python -m warden.locales.extract): {missing}"


def test_translations_use_the_same_fields_as_their_msgid() -> None:
    # A zh-CN template may leave out a word English needs ({verb}: 'was'/'were'), never
    # invent a field the code does not pass.
    for msgid, text in _catalogue().items():
        assert _fields(text) <= _fields(msgid), f"{msgid!r} -> {text!r}"


def test_the_catalogue_covers_every_rule_family() -> None:
    used = all_msgids()
    families = {where.split(":")[0] for places in used.values() for where in places if where.startswith("rules/")}
    assert {"rules/ac_after_hours.py", "rules/water.py", "rules/doors.py", "rules/patrol.py", "rules/deadman.py"} <= families


# --------------------------------------------------------------------------- formatting


def test_dates_numbers_and_money_by_locale() -> None:
    at = datetime(2026, 11, 17, 15, 30, tzinfo=timezone.utc)  # 23:30 in Shanghai (UTC+8, no DST)
    # CLDR's zh_CN long date is y年M月d日, its medium date-time the same date and HH:mm:ss.
    assert format_date(at.astimezone(SHANGHAI), "zh-CN") == "2026年11月17日"
    assert format_datetime(at, "zh-CN", SHANGHAI) == "2026年11月17日 23:30:00"
    # English formats as en-GB: day first, 24-hour clock, as the screens always did.
    assert format_date(date(2026, 11, 17), "en") == "17 November 2026"
    assert format_number(12345.678, "zh-CN") == "12,345.678"
    assert format_number(1234.5, "zh-CN", digits=2) == "1,234.50"
    assert format_money(1234.5, "CNY", "zh-CN") == "¥1,234.50"
    assert format_money(1234.5, "EUR", "en") == "€1,234.50"
    # What the report's headings show: the weekday as 周二 (Tuesday) after the date.
    local = at.astimezone(SHANGHAI)
    assert local_text(local, "%a %d %b %Y", "zh-CN") == "2026年11月17日周二"
    assert local_text(local, "%a %d %b %H:%M", "zh-CN") == "11月17日周二 23:30"
    assert local_text(local, "%a %d %b %H:%M", "en") == "Tue 17 Nov 23:30"


def test_locales_are_written_one_way_and_picked_from_accept_language() -> None:
    assert [normalise_locale(v) for v in ("zh_CN", "zh-cn", "ZH-CN", "en")] == ["zh-CN", "zh-CN", "zh-CN", "en"]
    with pytest.raises(ValueError, match="xx-QQ"):
        normalise_locale("xx-QQ")
    assert pick_locale("zh-CN,zh;q=0.9,en;q=0.8", "en") == "zh-CN"
    assert pick_locale("zh-TW;q=0.5,en;q=0.9", "zh-CN") == "en"  # the higher weight wins
    assert pick_locale("fr-FR", "zh-CN") == "zh-CN"  # no shipped match: the site's
    assert pick_locale(None, "en") == "en"


# --------------------------------------------------------------------------- messages


def test_a_message_is_its_english_text_and_keeps_its_id_and_parameters() -> None:
    length = Message("{hours} h {minutes:02d} min", hours=9, minutes=25)
    text = Message("{title} in {room} on after hours for {length}, {summary}", title=Message("AC"), room="A-301",
                   length=length, summary=Message("{kwh:.2f} kWh wasted ({cost:.2f} {currency})", kwh=13.4, cost=8.71,
                                                  currency="CNY"))
    assert text == "AC in A-301 on after hours for 9 h 25 min, 13.40 kWh wasted (8.71 CNY)"
    assert text.id == "{title} in {room} on after hours for {length}, {summary}"
    assert text.params["length"] == {"id": "{hours} h {minutes:02d} min", "params": {"hours": 9, "minutes": 25}}
    stored = json.loads(json.dumps(text.params))  # as the store keeps it
    names = site_names(ZH_SITE)
    assert render(text.id, stored, "zh-CN", names) == (
        "高一（3）班的空调在非工作时间开启已 9 小时 25 分钟，浪费 13.40 千瓦时（8.71 CNY）")
    assert render(text.id, stored, "en") == str(text)
    # English readers see the name beside the id (issue 19); the stored message keeps the id.
    assert localise(str(text), text.id, stored, "en", names) == (
        "AC in 高一（3）班 (A-301) on after hours for 9 h 25 min, 13.40 kWh wasted (8.71 CNY)")
    assert localise(str(text), text.id, stored, "en") == str(text)  # no names known: the text as written
    assert localise("old alert", "", {}, "zh-CN", names) == "old alert"  # stored before ids existed


def test_a_signal_built_from_a_message_carries_its_id_and_parameters() -> None:
    message = Message("Door {door} forced open at {time}", door="door-back", time="01:30:00")
    signal = AlertSignal("huaxia", "door_forced", "door-back", SignalAction.RAISE, datetime(2026, 11, 17, tzinfo=timezone.utc),
                         message=message)
    assert (signal.message, signal.message_id, signal.params) == (
        "Door door-back forced open at 01:30:00", "Door {door} forced open at {time}", {"door": "door-back", "time": "01:30:00"})
    assert render(signal.message_id, signal.params, "zh-CN") == "门 door-back 于 01:30:00 被强行打开"


# --------------------------------------------------------------------------- site locale


def test_a_site_locale_sets_the_currency_unless_the_tariff_names_one(tmp_path: Path) -> None:
    assert (ZH_SITE.locale, ZH_SITE.tariff.currency) == ("zh-CN", "CNY")
    euros = SiteConfig.model_validate({"id": "s", "timezone": "Asia/Shanghai", "locale": "zh-CN", "tariff": {"currency": "EUR"}})
    assert euros.tariff.currency == "EUR"
    plain = SiteConfig.model_validate({"id": "s", "timezone": "Europe/Berlin"})
    assert (plain.locale, plain.tariff.currency) == ("en", "EUR")  # every site before issue 19
    bad = tmp_path / "site.yaml"
    bad.write_text("id: s\ntimezone: Asia/Shanghai\nlocale: klingon-XX\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"site.yaml: locale: expected a locale like 'en' or 'zh-CN'"):
        load_config(bad, SiteConfig)


# --------------------------------------------------------------------------- the store


def _leak(action: SignalAction, at: datetime, message: Message, **details: float | str) -> AlertSignal:
    return AlertSignal("huaxia", "water_burst", "wm-a", action, at, message=message, details=dict(details))


def test_resolving_keeps_the_facts_the_alert_was_raised_with(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    t0 = datetime(2026, 11, 17, 18, 20, tzinfo=timezone.utc)  # 02:20 in Shanghai
    burst = Message("Possible burst at {device}: above {limit:g} L/min since {since} (peak {peak:.0f} L/min, {litres:.0f} L)",
                    device="wm-a", limit=30.0, since="02:20", peak=140.0, litres=2800.0)
    ended = Message("Flow at {device} back below {limit:g} L/min since {below}", device="wm-a", limit=30.0, below="02:40")
    store.commit_batch([], [_leak(SignalAction.RAISE, t0, burst, litres=2800.0, peak=140.0)], None)
    store.commit_batch([], [_leak(SignalAction.RESOLVE, t0 + timedelta(minutes=20), ended, litres=2800.0, minutes=20.0)], None)
    [alert] = store.alerts()
    # The burst and its litres stay the alert's message; how it ended is beside it.
    assert alert.message == "Possible burst at wm-a: above 30 L/min since 02:20 (peak 140 L/min, 2800 L)"
    assert (alert.message_id, alert.params) == (burst.id, burst.params)
    assert alert.end_message == "Flow at wm-a back below 30 L/min since 02:40"
    assert (alert.end_message_id, alert.end_params) == (ended.id, ended.params)
    assert alert.details == {"litres": 2800.0, "peak": 140.0, "minutes": 20.0}  # the ending's facts added, none lost
    assert render(alert.message_id, alert.params, "zh-CN") == (
        "wm-a 可能爆管：自 02:20 起流量超过 30 升/分钟（峰值 140 升/分钟，共 2800 升）")
    steps = store.alert_history(alert.id)
    assert [(s["action"], s["message_id"]) for s in steps] == [("opened", burst.id), ("resolved", ended.id)]
    assert steps[1]["params"] == {"device": "wm-a", "limit": 30.0, "below": "02:40"}
    store.close()


def test_an_older_database_gains_the_message_columns_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE alerts (id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, rule TEXT NOT NULL, subject TEXT NOT NULL,
            state TEXT NOT NULL, severity TEXT NOT NULL, message TEXT NOT NULL, details TEXT NOT NULL, count INTEGER NOT NULL,
            opened_at TEXT NOT NULL, updated_at TEXT NOT NULL, resolved_at TEXT, acknowledged_by TEXT, acknowledged_at TEXT,
            note TEXT);
        CREATE TABLE alert_history (id INTEGER PRIMARY KEY AUTOINCREMENT, alert_id INTEGER NOT NULL REFERENCES alerts(id),
            at TEXT NOT NULL, action TEXT NOT NULL, state TEXT NOT NULL, message TEXT NOT NULL, details TEXT NOT NULL);
        INSERT INTO alerts (site, rule, subject, state, severity, message, details, count, opened_at, updated_at)
            VALUES ('huaxia', 'water_wet', 'wet-1', 'open', 'critical', 'Water detected by wet-1 since 03:12', '{}', 1,
                    '2026-11-17T19:12:00+00:00', '2026-11-17T19:12:00+00:00');
    """)
    db.close()
    for _ in range(2):  # a second opening finds nothing to add
        store = StateStore(path)
        [alert] = store.alerts()
        store.close()
    assert (alert.message, alert.message_id, alert.params, alert.end_message) == (
        "Water detected by wet-1 since 03:12", "", {}, None)
    columns = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(alert_history)")}
    assert {"message_id", "params"} <= columns


# --------------------------------------------------------------------------- the report


def test_a_zh_cn_site_gets_a_chinese_report_with_names(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    opened = datetime(2026, 11, 17, 13, 45, tzinfo=timezone.utc)  # 21:45 in Shanghai
    message = Message("{title} in {room} on after hours for {length}, {summary}", title=Message("AC"), room="A-301",
                      length=Message("{minutes} min", minutes=15),
                      summary=Message("{kwh:.2f} kWh wasted ({cost:.2f} {currency})", kwh=0.375, cost=0.24375, currency="CNY"))
    details = {"kind": "ac", "wasted_kwh": 0.375, "cost": 0.2438, "currency": "CNY", "since": "2026-11-17T13:30:00+00:00",
               "until": "2026-11-17T13:45:00+00:00", "building": "A", "room": "A-301", "device": "ac-a301"}
    store.commit_batch([], [AlertSignal("huaxia", "ac_after_hours", "A-301", SignalAction.RAISE, opened, message=message,
                                        details=details)], None)
    report = build_morning_report(store, None, ZH_SITE, date(2026, 11, 17), generated_at=opened)
    store.close()
    page = render_html(report)
    assert '<html lang="zh-CN">' in page
    assert "<h1>晨报：华夏中学</h1>" in page
    assert "非工作时间的能源浪费" in page  # "Energy wasted after hours"
    # 1.5 kW for 15 min = 0.375 kWh, at 0.65 yuan/kWh = 0.24 yuan; the room by its name.
    assert "高一（3）班的空调在非工作时间开启已 15 分钟，浪费 0.38 千瓦时（0.24 CNY）" in page
    assert "<td>教学楼</td><td>高一（3）班</td>" in page
    assert render_csv(report).splitlines()[0] == "栏目,楼栋,房间,对象,指标,数值,单位,状态,开始时间,备注"


def test_a_zh_cn_site_gets_a_chinese_monthly_report_and_finance_keeps_its_csv_columns(tmp_path: Path) -> None:
    from gateway.monthly import build_monthly_report, monthly_csv, monthly_html

    store = StateStore(tmp_path / "state.db")
    try:
        report = build_monthly_report(store, ZH_SITE, "2026-11")
    finally:
        store.close()
    page = monthly_html(report)
    assert '<html lang="zh-CN">' in page
    assert "<h1>华夏中学：2026-11 月报</h1>" in page  # "%(site)s: monthly report %(month)s"
    assert "<h2>三级督查</h2>" in page and "<h3>按班组</h3>" in page and "<h2>报修（按类别）</h2>" in page
    assert "monthly report" not in page and "Supervision" not in page
    assert monthly_csv(report).splitlines()[0].startswith("month,building,room,group,device,")  # finance: as documented


# --------------------------------------------------------------------------- mail


def test_a_mail_to_a_zh_cn_site_is_in_chinese_by_names() -> None:
    from gateway.notify import mail_body, mail_subject
    from gateway.store import Alert, AlertChange
    from rules.alerts import AlertState

    wet = Message("Water detected by {device} since {time}", device="wm-a", time="03:12")
    alert = Alert(id=7, site="huaxia", rule="water_wet", subject="wm-a", state=AlertState.OPEN, severity="critical",
                  message=str(wet), details={"minutes": 0.0}, count=1, opened_at="2026-11-17T19:12:00+00:00",
                  updated_at="2026-11-17T19:12:00+00:00", resolved_at=None, acknowledged_by=None, acknowledged_at=None,
                  note=None, message_id=wet.id, params=wet.params)
    change = AlertChange(action="opened", alert=alert)
    names = site_names(ZH_SITE)
    assert mail_subject(change, "[warden]", "zh-CN", names) == "[warden] [严重] 新告警: wm-a 自 03:12 起检测到积水"
    body = mail_body(change, "zh-CN", names).splitlines()
    assert body[0] == "wm-a 自 03:12 起检测到积水"
    assert body[2:4] == ["变化：新告警", "告警：#7 water_wet / wm-a，站点 huaxia"]
    assert body[4] == "状态：未处理，级别 严重，升级层级 0"
    # English keeps its subject of codes, which mail filters match on.
    assert mail_subject(change, "[warden]") == "[warden] CRITICAL opened: water_wet wm-a (huaxia)"


def test_a_person_s_action_is_kept_as_an_id_and_parameters_too(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    at = datetime(2026, 11, 17, 19, 12, tzinfo=timezone.utc)
    wet = Message("Water detected by {device} since {time}", device="wet-1", time="03:12")
    store.commit_batch([], [AlertSignal("huaxia", "water_wet", "wet-1", SignalAction.RAISE, at, message=wet)], None)
    [alert] = store.alerts()
    store.assign(alert.id, "wang-shifu", "dispatcher-li", at=at + timedelta(minutes=2))
    store.acknowledge(alert.id, "wang-shifu", "关了阀门", at=at + timedelta(minutes=5))
    assigned, step = store.alert_history(alert.id)[-2:]
    store.close()
    assert step["message"] == "acknowledged by wang-shifu: 关了阀门"
    assert render(step["message_id"], step["params"], "zh-CN") == "wang-shifu 已认领：关了阀门"
    assert assigned["message"] == "assigned to wang-shifu by dispatcher-li"
    assert render(assigned["message_id"], assigned["params"], "zh-CN") == "dispatcher-li 指派给 wang-shifu"
