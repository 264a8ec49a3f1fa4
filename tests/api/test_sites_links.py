"""A gateway of two schools (tests/api/test_sites.py's) whose campuses hang on bridges: the
devices of a cut-off campus say the silence is the link's, /api/health keeps each campus's
last cuts, and a work order for a room id both schools have is not guessed into one.

The facts: the gateway's clock starts at 22:00 UTC on Tuesday 17 November 2026 (23:00 in
Berlin, both schools' zone). Hillside's bridge says down at 22:00, up at 22:25, down at
22:35, up at 22:40, down at 22:50. Riverside's bridge is never heard of. Riverside has a
room "H-101" as Hillside has (its device ac-r101).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import Publisher
from tests.api.test_sites import NIGHT, District, start_district
from warden import topics
from warden.config import BrokerConfig, SiteConfig

UTC = timezone.utc
RIVERSIDE_SHARED = SiteConfig.model_validate({
    "id": "riverside", "name": "Riverside School", "timezone": "Europe/Berlin",
    "schedules": {"school-day": [{"days": "mon-fri", "hours": "07:30-18:00"}]},
    "buildings": [{"id": "A", "rooms": [
        {"id": "A-204", "schedule": "school-day", "devices": ["ac-a204"]},
        {"id": "A-GATE", "devices": ["patrol-reader-1"]},
        {"id": "H-101", "devices": ["ac-r101"]},  # the same room id as Hillside's physics lab
    ]}],
})  # fmt: skip


def at(hour: int, minute: int) -> datetime:
    return datetime(2026, 11, 17, hour, minute, tzinfo=UTC)


@pytest.fixture
def district(broker_config: BrokerConfig, tmp_path: Path) -> Iterator[District]:
    server = start_district(broker_config, tmp_path, riverside=RIVERSIDE_SHARED)
    yield server
    server.api.stop()
    server.gateway.stop()


def bridge(district: District, publisher: Publisher, site: str, up: bool, when: datetime) -> None:
    """The campus bridge of `site` says up or down at `when` (the gateway's clock); not
    retained, so the session's broker keeps nothing for the next test."""
    district.clock.advance(when - district.clock.now())
    publisher.client.publish(topics.bridge_state_topic(site), b"1" if up else b"0", qos=1).wait_for_publish(5)
    gateway = district.gateway
    assert gateway.wait_until(lambda: gateway.health()["campus_links"].get(site, {}).get("heard_at") == when.isoformat(),
                              timeout=10)


def devices(district: District, site: str) -> dict[str, tuple[Any, Any]]:
    answer = district.client("district").get("/api/devices", params={"site": site})
    assert answer.status_code == 200
    return {d["id"]: (d["link"], d["link_down_since"]) for d in answer.json()}


def test_a_cut_off_campus_s_devices_say_their_silence_is_the_link_s(district: District, publisher: Publisher) -> None:
    assert district.clock.now() == NIGHT == at(22, 0)
    bridge(district, publisher, "hillside", False, at(22, 0))
    down = ("down", at(22, 0).isoformat())
    assert devices(district, "hillside") == {"ac-h101": down, "patrol-reader-h": down}  # the two devices its file lists
    never = (None, None)  # no bridge heard of: nothing to say
    assert devices(district, "riverside") == {"ac-a204": never, "ac-r101": never, "patrol-reader-1": never}
    bridge(district, publisher, "hillside", True, at(22, 25))
    assert devices(district, "hillside") == {"ac-h101": ("up", None), "patrol-reader-h": ("up", None)}


def test_health_keeps_each_campus_s_last_cuts_newest_first(district: District, publisher: Publisher) -> None:
    for up, when in [(False, at(22, 0)), (True, at(22, 25)), (False, at(22, 35)), (True, at(22, 40)),
                     (False, at(22, 50)), (False, at(22, 55))]:  # 22:55: a repeat (as a retained copy), no new cut
        bridge(district, publisher, "hillside", up, when)
    health = httpx.get(f"{district.api.url}/api/health", timeout=10).json()
    assert health["campus_links"] == {"hillside": {  # riverside: never bridged, absent
        "state": "down",
        "heard_at": at(22, 55).isoformat(),
        "cuts": [
            {"start": at(22, 50).isoformat(), "end": None, "minutes": None},  # still down
            {"start": at(22, 35).isoformat(), "end": at(22, 40).isoformat(), "minutes": 5},  # 22:40 - 22:35
            {"start": at(22, 0).isoformat(), "end": at(22, 25).isoformat(), "minutes": 25},  # 22:25 - 22:00
        ],
    }}
    assert devices(district, "hillside")["ac-h101"] == ("down", at(22, 50).isoformat())  # the open cut's start


def test_a_room_id_two_sites_share_needs_the_site(district: District) -> None:
    district_, hillside = district.client("district"), district.client("hillside")
    order = {"room": "H-101", "text": "Tap drips"}
    refused = district_.post("/api/work-orders", json=order)
    assert refused.status_code == 400
    assert refused.json()["detail"].startswith("site: ")  # names the parameter to give
    named = district_.post("/api/work-orders", json={**order, "site": "riverside"})
    assert (named.status_code, named.json()["site"], named.json()["room"]) == (201, "riverside", "H-101")
    own = hillside.post("/api/work-orders", json=order)  # a token of one school: that school's H-101
    assert (own.status_code, own.json()["site"]) == (201, "hillside")
    # The store itself does not guess either, whoever calls it without a site.
    with pytest.raises(ValueError, match=r"^site: room 'H-101' is in sites riverside, hillside; say which$"):
        district.gateway.work_orders.create(room="H-101", text="Tap drips", by="test")
    unique = district.gateway.work_orders.create(room="A-204", text="AC remote lost", by="test")
    assert unique.order.site == "riverside"  # one site has A-204: no doubt
