"""Reconnect backoff: exponential, jittered, and really used by paho."""

from __future__ import annotations

import random
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.backoff import JitteredBackoff
from simulators.broker import free_port


def test_delays_grow_exponentially_within_the_upper_half_of_each_window() -> None:
    backoff = JitteredBackoff(1.0, 30.0, random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    windows = [1, 2, 4, 8, 16, 30, 30, 30]
    for delay, window in zip(delays, windows):
        assert window / 2 <= delay <= window
    backoff.reset()
    assert 0.5 <= backoff.next_delay() <= 1.0


def test_agents_that_lost_the_same_broker_do_not_retry_in_step() -> None:
    fleet = [JitteredBackoff(1.0, 30.0, random.Random(seed)) for seed in range(20)]
    for attempt in range(5):
        delays = [b.next_delay() for b in fleet]
        assert len({round(d, 3) for d in delays}) > 15, f"attempt {attempt}: delays bunched together"


def test_apply_makes_the_drawn_delay_pahos_next_wait() -> None:
    calls: list[tuple[float, float]] = []

    class Recorder:
        def reconnect_delay_set(self, min_delay: float = 1, max_delay: float = 120) -> None:
            calls.append((min_delay, max_delay))

    backoff = JitteredBackoff(0.5, 4.0, random.Random(1))
    delay = backoff.apply(Recorder())
    assert calls == [(delay, delay)] and 0.25 <= delay <= 0.5


def test_a_real_paho_client_waits_exactly_the_jittered_delays() -> None:
    """Against a port nobody listens on, the gaps between failed attempts are our delays."""
    backoff = JitteredBackoff(0.1, 0.8, random.Random(3))
    drawn: list[float] = []
    failed_at: list[float] = []
    done = threading.Event()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="backoff-test")

    def on_connect_fail(c: mqtt.Client, userdata: object) -> None:
        failed_at.append(time.monotonic())
        if len(failed_at) == 6:
            done.set()
        drawn.append(backoff.apply(c))

    client.on_connect_fail = on_connect_fail
    client.connect_async("127.0.0.1", free_port())
    client.loop_start()
    try:
        assert done.wait(60), f"only {len(failed_at)} attempts"
    finally:
        client.loop_stop()
    gaps = [b - a for a, b in zip(failed_at, failed_at[1:])]
    for gap, delay in zip(gaps, drawn):
        # Never early; late by at most what scheduling on a loaded 2-core machine adds.
        assert delay - 0.02 <= gap <= delay + 2.0, (gaps, drawn)
    assert drawn[4] > drawn[0]  # and they grew
