"""The event schema: encoding, decoding and every way a payload can be refused."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warden import events as events_module
from warden.events import (
    MAX_BATCH_EVENTS,
    MAX_PAYLOAD_BYTES,
    DeviceState,
    DeviceStatus,
    DoorAction,
    DoorEvent,
    InvalidPayload,
    PatrolTap,
    Quantity,
    Reading,
    TapSource,
    decode_events,
    encode_events,
    stable_event_id,
)

T0 = datetime(2026, 11, 17, 19, 0, tzinfo=timezone.utc)


def reading(**overrides: object) -> Reading:
    fields: dict[str, object] = dict(
        id=stable_event_id("riverside", "ac-a204", "power_w", T0),
        site="riverside",
        device="ac-a204",
        event_time=T0,
        receive_time=T0 + timedelta(milliseconds=120),
        quantity=Quantity.POWER,
        value=1312.4,
        unit="W",
    )
    fields.update(overrides)
    return Reading(**fields)


def door() -> DoorEvent:
    return DoorEvent(
        id="door-0001-granted",
        site="riverside",
        device="door-ctl-1",
        event_time=T0,
        action=DoorAction.FORCED,
        door="A-GATE",
        card="04A1B2C3",
    )


def tap() -> PatrolTap:
    return PatrolTap(
        id=stable_event_id("riverside", "patrol-reader-1", "tap", "R1", 17, T0),
        site="riverside",
        device="patrol-reader-1",
        event_time=T0,
        reader="R1",
        tag="CP-07",
        guard="G-12",
        source=TapSource.WAND,
    )


def status() -> DeviceStatus:
    return DeviceStatus(
        id="status-agent-a-0001",
        site="riverside",
        device="agent-a",
        event_time=T0,
        state=DeviceState.HEARTBEAT,
        counters={"events": 1200, "error_bad_checksum": 3},
    )


ALL_KINDS = [reading, door, tap, status]


def valid_document(**overrides: object) -> dict[str, object]:
    document: dict[str, object] = {
        "v": 1,
        "id": "abcdefgh-0001",
        "kind": "reading",
        "site": "riverside",
        "device": "ac-a204",
        "event_time": "2026-11-17T19:00:00Z",
        "quantity": "power",
        "value": 1312.4,
        "unit": "W",
    }
    document.update(overrides)
    return document


def reject(payload: bytes, **kwargs: object) -> str:
    with pytest.raises(InvalidPayload) as caught:
        decode_events(payload, **kwargs)  # type: ignore[arg-type]
    assert str(caught.value) == caught.value.reason
    return caught.value.reason


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("make", ALL_KINDS, ids=lambda f: f.__name__)
def test_single_event_round_trips(make) -> None:
    event = make()
    payload = encode_events([event])
    assert json.loads(payload)["kind"] == event.kind
    assert "events" not in json.loads(payload)  # a single event is sent bare
    decoded = decode_events(payload)
    assert decoded == [event]
    assert type(decoded[0]) is type(event)


def test_batch_of_every_kind_round_trips_in_order() -> None:
    events = [make() for make in ALL_KINDS]
    payload = encode_events(events)
    document = json.loads(payload)
    assert document["v"] == 1
    assert [e["kind"] for e in document["events"]] == ["reading", "door", "patrol_tap", "status"]
    assert decode_events(payload) == events


def test_optional_fields_left_out_and_defaulted() -> None:
    event = reading(receive_time=None)
    document = json.loads(encode_events([event]))
    assert "receive_time" not in document
    assert decode_events(encode_events([event]))[0].receive_time is None


def test_largest_batch_is_accepted() -> None:
    events = [reading(id=f"evt-{n:08d}", value=float(n)) for n in range(MAX_BATCH_EVENTS)]
    payload = encode_events(events)
    assert len(payload) <= MAX_PAYLOAD_BYTES
    assert decode_events(payload) == events


def test_event_time_with_offset_comes_back_as_utc() -> None:
    payload = json.dumps(
        valid_document(event_time="2026-11-17T20:00:00+01:00", receive_time="2026-11-17T14:00:05-05:00")
    ).encode()
    [event] = decode_events(payload)
    assert event.event_time == T0
    assert event.event_time.utcoffset() == timedelta(0)
    assert event.receive_time == T0 + timedelta(seconds=5)
    assert event.receive_time.utcoffset() == timedelta(0)
    assert json.loads(encode_events([event]))["event_time"] == "2026-11-17T19:00:00Z"


def test_python_built_event_is_normalised_to_utc_too() -> None:
    plus_two = timezone(timedelta(hours=2))
    event = reading(event_time=datetime(2026, 11, 17, 21, 0, tzinfo=plus_two))
    assert event.event_time == T0 and event.event_time.utcoffset() == timedelta(0)


# --------------------------------------------------------------------------- stable ids


def test_stable_event_id_is_deterministic() -> None:
    parts = ("riverside", "patrol-reader-1", "tap", "R1", 17, T0)
    first = stable_event_id(*parts)
    assert first == stable_event_id(*parts)
    assert uuid.UUID(first).version == 5
    # Pinned: a release that changed the derivation would let replayed buffers in twice.
    assert first == "022b9caa-6d00-53eb-9ae9-6bc0cbde8261"
    assert reading(id=first).id == first  # a valid EventId


@pytest.mark.parametrize("index", range(6))
def test_stable_event_id_differs_when_any_part_differs(index: int) -> None:
    parts: list[object] = ["riverside", "patrol-reader-1", "tap", "R1", 17, T0]
    changed = list(parts)
    changed[index] = {0: "hillside", 1: "patrol-reader-2", 2: "door", 3: "R2", 4: 18, 5: T0 + timedelta(seconds=1)}[index]
    assert stable_event_id(*parts) != stable_event_id(*changed)


def test_stable_event_id_does_not_merge_parts() -> None:
    assert stable_event_id("ab", "c") != stable_event_id("a", "bc")
    assert stable_event_id("a") != stable_event_id("a", "")


# --------------------------------------------------------------------------- rejections


def test_not_json() -> None:
    assert "not JSON" in reject(b"{this is not json")


def test_empty_payload() -> None:
    assert "not JSON" in reject(b"")


def test_invalid_utf8() -> None:
    bad = json.dumps(valid_document(unit="W")).encode().replace(b'"W"', b'"\xff\xfe"')
    assert "utf-8" in reject(bad).lower()


def test_utf16_json_is_not_accepted() -> None:
    assert "UTF-8" in reject(json.dumps(valid_document()).encode("utf-16"))


def test_json_array() -> None:
    reason = reject(json.dumps([valid_document()]).encode())
    assert "JSON object" in reason and "list" in reason


@pytest.mark.parametrize("scalar", [b'"text"', b"42", b"null", b"true"])
def test_json_scalar(scalar: bytes) -> None:
    assert "JSON object" in reject(scalar)


@pytest.mark.parametrize("field", ["id", "site", "device", "event_time", "quantity", "value", "unit"])
def test_missing_field_is_named(field: str) -> None:
    document = valid_document()
    del document[field]
    reason = reject(json.dumps(document).encode())
    assert field in reason
    assert "required" in reason.lower()


def test_missing_kind() -> None:
    document = valid_document()
    del document["kind"]
    assert "kind" in reject(json.dumps(document).encode())


def test_missing_field_inside_batch_names_position_and_field() -> None:
    broken = valid_document()
    del broken["unit"]
    reason = reject(json.dumps({"v": 1, "events": [valid_document(), broken]}).encode())
    assert "events.1" in reason and "unit" in reason


def test_unknown_extra_field() -> None:
    reason = reject(json.dumps(valid_document(colour="red")).encode())
    assert "colour" in reason and "extra" in reason.lower()


def test_unknown_extra_field_on_batch() -> None:
    reason = reject(json.dumps({"v": 1, "events": [valid_document()], "agent": "a"}).encode())
    assert "agent" in reason


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_literals_are_rejected(literal: bytes) -> None:
    # json.loads accepts these non-JSON literals by default; the schema must not.
    payload = json.dumps(valid_document(value=0)).encode().replace(b'"value": 0', b'"value": ' + literal)
    assert literal in payload
    reason = reject(payload)
    assert literal.decode().lstrip("-") in reason or "finite" in reason


def test_overflowing_number_is_rejected() -> None:
    payload = json.dumps(valid_document(value=0)).encode().replace(b'"value": 0', b'"value": 1e999')
    reason = reject(payload)
    assert "value" in reason and "finite" in reason


@pytest.mark.parametrize("bad", [b"NaN", b"Infinity", b"1e999"])
def test_non_finite_status_counter_is_rejected(bad: bytes) -> None:
    document = json.loads(encode_events([status()]))
    payload = json.dumps({**document, "counters": {"events": 0}}).encode().replace(b'"events": 0', b'"events": ' + bad)
    reason = reject(payload)
    assert "NaN" in reason or "Infinity" in reason or ("counters" in reason and "finite" in reason)


def test_non_finite_counter_cannot_be_built_in_python() -> None:
    with pytest.raises(ValueError, match="finite"):
        DeviceStatus(**{**status().model_dump(), "counters": {"events": float("nan")}})


def test_nan_value_cannot_be_built_in_python() -> None:
    with pytest.raises(ValueError, match="finite"):
        reading(value=float("nan"))


def test_huge_integer_is_refused_without_crashing() -> None:
    # Python refuses to parse integers of more than 4300 digits with a plain ValueError.
    assert "not JSON" in reject(b"1" * 5000)


def test_naive_datetime() -> None:
    reason = reject(json.dumps(valid_document(event_time="2026-11-17T19:00:00")).encode())
    assert "event_time" in reason and "timezone" in reason


def test_naive_receive_time() -> None:
    reason = reject(json.dumps(valid_document(receive_time="2026-11-17T19:00:00")).encode())
    assert "receive_time" in reason


def test_event_time_past_datetime_range_after_utc_conversion() -> None:
    reason = reject(json.dumps(valid_document(event_time="9999-12-31T23:59:59-23:59")).encode())
    assert "event_time" in reason


def test_wrong_schema_version() -> None:
    reason = reject(json.dumps(valid_document(v=2)).encode())
    assert reason.split(":")[0].endswith("v") and "1" in reason


def test_wrong_schema_version_of_batch() -> None:
    reason = reject(json.dumps({"v": 2, "events": [valid_document()]}).encode())
    assert reason.startswith("v:")


def test_unknown_kind() -> None:
    reason = reject(json.dumps(valid_document(kind="smoke")).encode())
    assert "'smoke'" in reason and "reading" in reason


def test_empty_batch() -> None:
    reason = reject(json.dumps({"v": 1, "events": []}).encode())
    assert "events" in reason and "at least 1" in reason


def test_batch_over_max_events() -> None:
    events = [valid_document(id=f"evt-{n:08d}") for n in range(MAX_BATCH_EVENTS + 1)]
    payload = json.dumps({"v": 1, "events": events}, separators=(",", ":")).encode()
    assert len(payload) <= MAX_PAYLOAD_BYTES  # refused for its count, not its size
    reason = reject(payload)
    assert "events" in reason and str(MAX_BATCH_EVENTS) in reason


def test_batch_over_max_events_cannot_be_encoded() -> None:
    with pytest.raises(ValueError):
        encode_events([reading(id=f"evt-{n:08d}") for n in range(MAX_BATCH_EVENTS + 1)])


def test_payload_over_max_bytes() -> None:
    payload = json.dumps(valid_document(unit="W")).encode()
    payload = payload[:-1] + b" " * (MAX_PAYLOAD_BYTES - len(payload) + 1) + b"}"
    assert len(payload) == MAX_PAYLOAD_BYTES + 1
    reason = reject(payload)
    assert str(MAX_PAYLOAD_BYTES) in reason and "bytes" in reason


def test_payload_of_exactly_max_bytes_is_parsed() -> None:
    payload = json.dumps(valid_document()).encode()
    payload = payload[:-1] + b" " * (MAX_PAYLOAD_BYTES - len(payload)) + b"}"
    assert len(payload) == MAX_PAYLOAD_BYTES
    assert len(decode_events(payload)) == 1


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"v":1,"events":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"a":' * 40_000 + b"1" + b"}" * 40_000,
    ],
    ids=["lists", "inside-batch", "objects"],
)
def test_deeply_nested_json(payload: bytes) -> None:
    assert len(payload) <= MAX_PAYLOAD_BYTES
    assert "not JSON" in reject(payload)


def test_moderately_nested_extra_field() -> None:
    document = valid_document()
    document["extra"] = json.loads("[" * 500 + "]" * 500)
    assert "extra" in reject(json.dumps(document).encode())


def test_event_time_too_far_in_the_future() -> None:
    now = T0 - timedelta(hours=2)
    reason = reject(encode_events([reading()]), now=now)
    assert "event_time" in reason and "ahead" in reason and reading().id in reason


def test_event_time_within_max_future_is_accepted() -> None:
    payload = encode_events([reading()])
    assert decode_events(payload, now=T0 - timedelta(minutes=59))
    assert decode_events(payload, now=T0 - timedelta(hours=1))  # exactly max_future: still fine
    assert decode_events(payload, now=T0 - timedelta(hours=3), max_future=timedelta(hours=3))
    assert decode_events(payload, now=T0 + timedelta(days=30))  # the past is never refused here


def test_one_future_event_refuses_the_whole_batch() -> None:
    late = reading(id="evt-future-1", event_time=T0 + timedelta(hours=5))
    reason = reject(encode_events([reading(), late]), now=T0)
    assert "evt-future-1" in reason


@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        ({"id": "short"}, "id"),
        ({"id": "has space in it"}, "id"),
        ({"site": ""}, "site"),
        ({"device": "-leading-dash"}, "device"),
        ({"quantity": "pressure"}, "quantity"),  # not (yet) a quantity of the schema
        ({"unit": ""}, "unit"),
        ({"value": "12 W"}, "value"),
        ({"event_time": "yesterday"}, "event_time"),
    ],
)
def test_bad_field_values_are_named(overrides: dict[str, object], where: str) -> None:
    assert where in reject(json.dumps(valid_document(**overrides)).encode())


# --------------------------------------------------------------------------- property


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["reading", "door", "patrol_tap", "status", "2026-11-17T19:00:00Z", "power", "W"])
)
json_documents = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
field_names = st.sampled_from(
    ["v", "id", "kind", "site", "device", "event_time", "receive_time", "quantity", "value", "unit",
     "cumulative", "action", "door", "card", "reader", "tag", "guard", "source", "state", "counters", "events"]
)


def _decode_only_raises_invalid_payload(payload: bytes) -> None:
    try:
        events = decode_events(payload, now=T0)
    except InvalidPayload as exc:
        assert exc.reason and "\n" not in exc.reason
    else:
        assert 1 <= len(events) <= MAX_BATCH_EVENTS
        assert decode_events(encode_events(events)) == events


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_invalid_payload(payload: bytes) -> None:
    _decode_only_raises_invalid_payload(payload)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_documents)
def test_arbitrary_json_raises_only_invalid_payload(document: object) -> None:
    _decode_only_raises_invalid_payload(json.dumps(document).encode("utf-8", "surrogatepass"))


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(ALL_KINDS),
    st.dictionaries(field_names, json_documents, max_size=4),
    st.sets(field_names, max_size=3),
    st.booleans(),
)
def test_mutated_events_raise_only_invalid_payload(make, changes, removed, batch) -> None:
    document = json.loads(encode_events([make()]))
    document.update(changes)
    for name in removed:
        document.pop(name, None)
    if batch:
        document = {"v": 1, "events": [document, json.loads(encode_events([reading()]))]}
    _decode_only_raises_invalid_payload(json.dumps(document).encode("utf-8", "surrogatepass"))


# --------------------------------------------------------------------------- fast path


_TRICKY = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"1.0", b'"\\ud800"', b"\xef\xbb\xbf", b"\xff", b"null",
           b'"events"', b"[]", b"{}", b'"v":2', b",", b"}", b'"', b"\\", b" ", b"0"]  # fmt: skip
_VALID = [encode_events([make()]) for make in ALL_KINDS] + [encode_events([make() for make in ALL_KINDS])]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from(_VALID),
    edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 8), st.sampled_from(_TRICKY)), max_size=3),
)
def test_the_fast_path_accepts_exactly_what_the_careful_path_accepts(
    base: bytes, edits: list[tuple[float, int, bytes]]
) -> None:
    """decode_events tries pydantic's one-pass JSON validation first and falls back to
    the step-by-step parse; on a mutated valid payload both must agree event for event."""
    payload = base
    for where, cut, text in edits:
        at = int(where * len(payload))
        payload = payload[:at] + text + payload[at + cut :]
    fast = events_module._parse_valid(payload)
    try:
        careful = events_module._parse_explaining(payload)
    except InvalidPayload:
        assert fast is None, f"the fast path accepted what the careful one refuses: {payload!r}"
        return
    assert fast is None or fast == careful
