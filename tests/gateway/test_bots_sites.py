"""A group bot on a gateway of several sites (issue 21): changes waiting together go as one
message only while their sites speak the same language, each line by its own site's names;
the rest follow in their own language. A real local HTTP receiver takes the posts.

The facts: four forced doors opened in this order: #1 Riverside's gate-1 (zh-CN, named
南门), #2 Hillside's gate-1 (zh-CN, named 东门: the same id, another site), #3 London's
gate-1 (en, named Main gate), #4 Riverside's gate-2 (北门). All four wait in the outbox
when the sink starts. The texts are the zh-CN catalogue's "门 {door} 于 {time} 被强行打开"
and the English "Door {door} forced open at {time}" (English puts the id beside the name),
filled in by hand; each line ends with rule · subject · #id · site."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from gateway.bots import BotSink
from gateway.notify import NotifyMetrics, Outbox, QueuedSink
from gateway.store import AlertChange, StateStore
from rules.alerts import AlertSignal, Severity, SignalAction
from tests.gateway.alerting import START
from tests.gateway.test_bots import NOW, Clock, sink_config
from tests.support.receivers import WebhookReceiver
from warden.clock import ManualClock
from warden.i18n import Message, Names

NAMES = {"riverside": {"gate-1": "南门", "gate-2": "北门"}, "hillside": {"gate-1": "东门"}, "london": {"gate-1": "Main gate"}}
LOCALES = {"riverside": "zh-CN", "hillside": "zh-CN", "london": "en"}


def forced(tmp_path: Path) -> list[AlertChange]:
    store = StateStore(tmp_path / "state.db", ManualClock(START))
    doors = [("riverside", "gate-1"), ("hillside", "gate-1"), ("london", "gate-1"), ("riverside", "gate-2")]
    signals = [AlertSignal(site, "door_forced", door, SignalAction.RAISE, START, Severity.CRITICAL,
                           Message("Door {door} forced open at {time}", door=door, time="23:05"))
               for site, door in doors]  # fmt: skip
    try:
        return store.commit_batch([], signals, {})
    finally:
        store.close()


def voice(site: str) -> tuple[str, Names]:
    return LOCALES[site], lambda kind, ident: NAMES[site].get(ident, ident)


def test_waiting_changes_go_together_only_within_one_language(receiver: WebhookReceiver, tmp_path: Path) -> None:
    changes = forced(tmp_path)
    config = sink_config(receiver.url("/hook"), preset="wecom")
    clock = Clock(NOW)
    outbox = Outbox(tmp_path / "outbox.db", now=clock)
    outbox.put("bot", changes, keep=config.queue_size)  # all four wait before the sink starts
    sink = BotSink("bot", config, now=clock, voices=voice)
    dispatcher = QueuedSink(sink, config, NotifyMetrics(CollectorRegistry()), outbox)
    dispatcher.start()
    try:
        posts = receiver.wait_for(3, "/hook")
    finally:
        dispatcher.stop()
        outbox.close()
    texts = [post.json()["text"]["content"] for post in posts]
    assert texts == [
        "[CRITICAL] 新告警 opened: 门 南门 于 23:05 被强行打开\ndoor_forced · gate-1 · #1 · riverside\n\n"
        "[CRITICAL] 新告警 opened: 门 东门 于 23:05 被强行打开\ndoor_forced · gate-1 · #2 · hillside",
        "[CRITICAL] 新告警 opened: Door Main gate (gate-1) forced open at 23:05\ndoor_forced · gate-1 · #3 · london",
        "[CRITICAL] 新告警 opened: 门 北门 于 23:05 被强行打开\ndoor_forced · gate-2 · #4 · riverside",
    ]
    assert len(receiver.received("/hook")) == 3
