"""Group bot presets (企业微信, 钉钉, 飞书) against a real local HTTP receiver: the exact
body, and signatures computed here by hand from the documented algorithms
(/work/shared/domain.md, "Group bots") at a fixed clock; the per-minute limit that makes
changes wait on disk and go together, never dropped; secrets redacted and refused where
they mean nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlsplit

import pytest
import yaml
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from gateway.auth import redacted
from gateway.bots import BotSink
from gateway.config import AlertsConfig, EscalationConfig, WebhookSinkConfig
from gateway.escalation import EscalationPolicy
from gateway.notify import NotifyMetrics, Outbox, QueuedSink
from gateway.store import AlertChange, StateStore
from rules.alerts import AlertSignal, Severity, SignalAction
from simulators.broker import free_port
from tests.gateway.alerting import (
    START,
    door,
    gateway_config,
    publish,
    start_gateway,
    wait_for_alert,
)
from tests.support.receivers import WebhookReceiver
from tests.support.scripts import console_script
from tests.test_gateway_command import write_config
from warden.clock import ManualClock
from warden.config import ConfigError
from warden.events import DoorAction
from warden.i18n import Message

#: The fixed wall clock of these tests: 2023-11-14 22:13:20.250 UTC as unix seconds.
NOW = 1_700_000_000.25
SECRET = "SEC-test-signing-secret"

#: The alert of the `change` fixture as a person reads it in the chat, written out by hand:
#: "[" severity upper-cased "] " action ": " message, then rule · subject · #id · site.
TEXT = "[WARNING] 新告警 opened: 科学楼 水表 meter-7: 95 L/min for 6 min\nwater_burst · meter-7 · #1 · riverside"


class Clock:
    """A wall clock the test moves by hand (the outbox's and the signatures' time)."""

    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def opened(tmp_path: Path, subjects: list[str]) -> list[AlertChange]:
    """Real alerts opened by the store, one per subject, numbered from 1."""
    store = StateStore(tmp_path / "state.db", ManualClock(START))
    signals = [
        AlertSignal("riverside", "water_burst", subject, SignalAction.RAISE, START, Severity.WARNING,
                    f"科学楼 水表 {subject}: 95 L/min for 6 min", {"l_per_min": 95.0})
        for subject in subjects
    ]  # fmt: skip
    changes = store.commit_batch([], signals, {})
    store.close()
    return changes


@pytest.fixture
def change(tmp_path: Path) -> AlertChange:
    [first] = opened(tmp_path, ["meter-7"])
    return first


def sink_config(url: str, **extra: Any) -> WebhookSinkConfig:
    return WebhookSinkConfig.model_validate({"type": "webhook", "url": url, "backoff_seconds": 0.01, **extra})


def deliver(receiver: WebhookReceiver, config: WebhookSinkConfig, changes: list[AlertChange], path: str, tmp_path: Path,
            clock: Clock | None = None) -> list[Any]:  # fmt: skip
    """Send `changes` one by one through a started QueuedSink; the posts the receiver got."""
    clock = clock or Clock(NOW)
    outbox = Outbox(tmp_path / "outbox.db", now=clock)
    dispatcher = QueuedSink(BotSink("bot", config, now=clock), config, NotifyMetrics(CollectorRegistry()), outbox)
    dispatcher.start()
    try:
        for n, one in enumerate(changes, start=1):
            dispatcher.send(one)
            receiver.wait_for(n, path)
    finally:
        dispatcher.stop()
        outbox.close()
    return receiver.received(path)


def test_a_chinese_site_s_group_reads_the_alert_and_its_escalation_in_chinese(
    receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """The rule's message and an escalation's note in the site's language, by names; the
    ids stay on the last line. The texts are the zh-CN catalogue's, filled in by hand."""
    store = StateStore(tmp_path / "state.db", ManualClock(START))
    burst = Message("Possible burst at {device}: above {limit:g} L/min since {since} (peak {peak:.0f} L/min, {litres:.0f} L)",
                    device="meter-7", limit=60.0, since="22:05", peak=95.0, litres=570.0)
    try:
        [change] = store.commit_batch([], [AlertSignal("riverside", "water_burst", "meter-7", SignalAction.RAISE, START,
                                                       Severity.CRITICAL, burst)], {})  # fmt: skip
        [escalated] = store.escalate(EscalationPolicy(EscalationConfig(ack_minutes=10)).decider(START + timedelta(minutes=10)),
                                     at=START + timedelta(minutes=10))  # fmt: skip
    finally:
        store.close()
    names = {"meter-7": "科学楼水表"}
    sink = BotSink("bot", sink_config(receiver.url("/hook"), preset="wecom"), now=Clock(NOW), locale="zh-CN",
                   names=lambda kind, ident: names.get(ident, ident))
    opened_text = "[CRITICAL] 新告警 opened: 科学楼水表 可能爆管：自 22:05 起流量超过 60 升/分钟（峰值 95 升/分钟，共 570 升）"
    ids = "water_burst · meter-7 · #1 · riverside"
    for one, expected in ((change, f"{opened_text}\n{ids}"),
                          (escalated, f"{opened_text.replace('新告警 opened', '已升级 escalated')}\n10 分钟内未确认：已升级到第 1 级\n{ids}")):
        sink.send(one)
        [post] = receiver.received("/hook")[-1:]
        assert post.json() == {"msgtype": "text", "text": {"content": expected}}
    sink.close()


def test_wecom_gets_its_exact_text_body(receiver: WebhookReceiver, change: AlertChange, tmp_path: Path) -> None:
    path = "/cgi-bin/webhook/send?key=KEY-in-the-url"
    config = sink_config(receiver.url(path), preset="wecom")
    [post] = deliver(receiver, config, [change], path, tmp_path)

    assert post.body == json.dumps({"msgtype": "text", "text": {"content": TEXT}}, ensure_ascii=False).encode()
    assert post.headers["Content-Type"] == "application/json; charset=utf-8"
    assert BotSink("bot", config).per_minute == 20  # WeCom: about 20 messages a minute per bot


def test_dingtalk_signs_the_url(receiver: WebhookReceiver, change: AlertChange, tmp_path: Path) -> None:
    path = "/robot/send?access_token=TOKEN"
    config = sink_config(receiver.url(path), preset="dingtalk", secret=SECRET)
    [post] = deliver_signed(receiver, config, change, tmp_path)

    # timestamp in ms: 1_700_000_000.25 s -> 1700000000250; string to sign "<ts>\n<secret>",
    # HMAC-SHA256 keyed with the secret, Base64, URL-encoded.
    stamp = "1700000000250"
    digest = hmac.new(SECRET.encode(), f"{stamp}\n{SECRET}".encode(), hashlib.sha256).digest()
    expected_sign = base64.b64encode(digest).decode()
    query = urlsplit(post.path).query
    assert query == f"access_token=TOKEN&timestamp={stamp}&sign={quote_plus(expected_sign)}"
    assert parse_qs(query)["sign"] == [expected_sign]
    assert post.json() == {"msgtype": "text", "text": {"content": TEXT}}


def deliver_signed(receiver: WebhookReceiver, config: WebhookSinkConfig, change: AlertChange, tmp_path: Path) -> list[Any]:
    """Like deliver, for a sink whose path gains a query the test cannot know beforehand."""
    outbox = Outbox(tmp_path / "outbox.db", now=Clock(NOW))
    dispatcher = QueuedSink(BotSink("bot", config, now=Clock(NOW)), config, NotifyMetrics(CollectorRegistry()), outbox)
    dispatcher.start()
    try:
        dispatcher.send(change)
        receiver.wait_for(1)
    finally:
        dispatcher.stop()
        outbox.close()
    return receiver.received()


def test_feishu_signs_the_body(receiver: WebhookReceiver, change: AlertChange, tmp_path: Path) -> None:
    path = "/open-apis/bot/v2/hook/HOOK-ID"
    config = sink_config(receiver.url(path), preset="feishu", secret=SECRET)
    [post] = deliver(receiver, config, [change], path, tmp_path)

    # timestamp in s: int(1_700_000_000.25) = 1700000000; HMAC-SHA256 keyed with
    # "<ts>\n<secret>" over an empty message, Base64.
    stamp = "1700000000"
    expected_sign = base64.b64encode(hmac.new(f"{stamp}\n{SECRET}".encode(), b"", hashlib.sha256).digest()).decode()
    assert post.json() == {"timestamp": stamp, "sign": expected_sign, "msg_type": "text", "content": {"text": TEXT}}


def test_feishu_and_dingtalk_without_a_secret_are_unsigned(receiver: WebhookReceiver, change: AlertChange, tmp_path: Path) -> None:
    [feishu] = deliver(receiver, sink_config(receiver.url("/feishu"), preset="feishu"), [change], "/feishu", tmp_path)
    assert feishu.json() == {"msg_type": "text", "content": {"text": TEXT}}
    [dingtalk] = deliver(receiver, sink_config(receiver.url("/ding"), preset="dingtalk"), [change], "/ding", tmp_path)
    assert dingtalk.path == "/ding"


def test_a_custom_body_template(receiver: WebhookReceiver, change: AlertChange, tmp_path: Path) -> None:
    body = {"msgtype": "markdown", "markdown": {"title": "{{ alert.rule }}", "text": "**{{ alert.severity }}** {{ title }} ({{ change }})"},
            "at": {"isAtAll": False}}  # fmt: skip
    [post] = deliver(receiver, sink_config(receiver.url("/md"), preset="dingtalk", body=body), [change], "/md", tmp_path)
    assert post.json() == {
        "msgtype": "markdown",
        "markdown": {"title": "water_burst", "text": "**warning** 科学楼 水表 meter-7: 95 L/min for 6 min (opened)"},
        "at": {"isAtAll": False},
    }


def test_past_the_limit_changes_wait_and_go_together(receiver: WebhookReceiver, tmp_path: Path) -> None:
    """Limit 2 a minute: the first two changes go alone; three more wait on disk until the
    minute is over and then go as one message, in order. Nothing is dropped."""
    changes = opened(tmp_path, ["m-1", "m-2", "m-3", "m-4", "m-5"])
    clock = Clock(NOW)
    config = sink_config(receiver.url("/ding"), preset="dingtalk", secret=SECRET, max_per_minute=2)
    outbox = Outbox(tmp_path / "outbox.db", now=clock)
    registry = CollectorRegistry()
    dispatcher = QueuedSink(BotSink("bot", config, now=clock), config, NotifyMetrics(registry), outbox)
    dispatcher.start()
    try:
        dispatcher.send(changes[0])
        receiver.wait_for(1)
        dispatcher.send(changes[1])
        receiver.wait_for(2)
        outbox.put("bot", changes[2:], keep=config.queue_size)  # three at once, past the limit
        dispatcher.wake()
        clock.at = NOW + 61  # the first send leaves the minute's window
        dispatcher.wake()
        posts = receiver.wait_for(3)
    finally:
        dispatcher.stop()
    assert len(receiver.received()) == 3
    # The third message was made after the clock moved: its timestamp is (NOW + 61) in ms,
    # 1_700_000_061.25 s -> 1700000061250, not NOW's 1700000000250.
    assert parse_qs(urlsplit(posts[2].path).query)["timestamp"] == ["1700000061250"]
    text = posts[2].json()["text"]["content"]
    assert [line.split(" · ")[1] for line in text.split("\n") if " · #" in line] == ["m-3", "m-4", "m-5"]
    assert outbox.pending("bot") == 0
    sent = {s.labels["sink"]: s.value for f in registry.collect() for s in f.samples if s.name == "warden_gateway_notifications_sent_total"}
    assert sent == {"bot": 5}
    outbox.close()


def test_secrets_are_redacted_and_refused_where_meaningless() -> None:
    alerts = AlertsConfig.model_validate({"sinks": {"ding": {"type": "webhook", "url": "https://oapi.dingtalk.com/robot/send?access_token=T",
                                                           "preset": "dingtalk", "secret": SECRET}}})  # fmt: skip
    shown = json.dumps(redacted(alerts))
    assert SECRET not in shown and "access_token" not in shown
    assert "dingtalk" in shown
    with pytest.raises(ValidationError, match=r"sinks\.wx\.webhook\n.*secret: only a dingtalk or feishu bot signs \(preset is 'wecom'\)"):
        AlertsConfig.model_validate({"sinks": {"wx": {"type": "webhook", "url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=K",
                                                      "preset": "wecom", "secret": SECRET}}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"alerts\.sinks\.bad\.body"):
        BotSink("bad", sink_config("https://example.org/hook", body={"text": "{{ text "}))


def test_a_gateway_posts_a_forced_door_to_a_wecom_bot(broker_config: Any, receiver: WebhookReceiver, tmp_path: Path) -> None:
    """Wired by build_notifier from the config: the alert reaches the bot's body."""
    path = "/cgi-bin/webhook/send?key=K"
    alerts = {"sinks": {"wecom": {"type": "webhook", "url": receiver.url(path), "preset": "wecom"}}}
    gateway = start_gateway(gateway_config(broker_config, tmp_path, alerts), ManualClock(START))
    try:
        publish(broker_config, door(START, DoorAction.FORCED, "door-back"))
        wait_for_alert(gateway, "door_forced")
        [post] = receiver.wait_for(1, path)
    finally:
        gateway.stop()
    content = post.json()["text"]["content"]
    assert content.startswith("[CRITICAL] 新告警 opened: ")
    assert content.endswith("door_forced · door-back · #1 · riverside")


def test_a_bots_error_code_is_a_failed_delivery(receiver: WebhookReceiver, change: AlertChange, tmp_path: Path) -> None:
    """HTTP 200 with WeCom's 45009 ("api freq out of limit") is retried; 93000 (an invalid
    webhook URL) is refused for good."""
    too_fast = b'{"errcode": 45009, "errmsg": "api freq out of limit"}'
    accepted = b'{"errcode": 0, "errmsg": "ok"}'
    receiver.answer("/busy", too_fast, accepted)
    receiver.answer("/wrong", b'{"errcode": 93000, "errmsg": "invalid webhook url"}')
    registry = CollectorRegistry()
    metrics = NotifyMetrics(registry)
    outbox = Outbox(tmp_path / "outbox.db")  # the wall clock: the retry's 10 ms backoff passes
    sinks = []
    for path in ("/busy", "/wrong"):
        config = sink_config(receiver.url(path), preset="wecom")
        sinks.append(QueuedSink(BotSink(path.strip("/"), config), config, metrics, outbox))
    for sink in sinks:
        sink.start()
        sink.send(change)
    receiver.wait_for(2, "/busy")
    receiver.wait_for(1, "/wrong")
    for sink in sinks:
        sink.stop()
    counted = {s.name + "|" + s.labels["sink"]: s.value for f in registry.collect() for s in f.samples if s.name.endswith("_total")}
    assert counted == {
        "warden_gateway_notification_retries_total|busy": 1, "warden_gateway_notifications_sent_total|busy": 1,
        "warden_gateway_notifications_failed_total|wrong": 1,
    }
    assert len(receiver.received("/wrong")) == 1  # not retried
    outbox.close()


def test_a_broken_body_template_stops_the_gateway_command_with_one_line(tmp_path: Path) -> None:
    """Found when the gateway builds its sinks, before it connects: exit 2, one line naming the key."""
    path = write_config(tmp_path, free_port())
    config = yaml.safe_load(path.read_text())
    config["alerts"] = {"sinks": {"bad": {"type": "webhook", "url": "https://example.org/hook", "body": {"text": "{{ text "}}}}
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    done = subprocess.run([console_script("warden"), "gateway", "--config", str(path)], capture_output=True, text=True,
                          timeout=120, env={"COLUMNS": "400", "NO_COLOR": "1", "TERM": "dumb", "PATH": ""})  # fmt: skip
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: alerts.sinks.bad.body: not a valid template"), lines
