"""The API against bad input (issue 17, holes 3, 4 and 6, and the docs it disagreed with),
on a real gateway and uvicorn: request bodies capped before anything parses them, no secret
in /api/config, 4xx (never 500) for dates out of range, one error shape, an OpenAPI
document that declares the errors, and /docs without a CDN."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from gateway.api import _BodyLimit
from gateway.auth import redacted
from gateway.config import GatewayConfig
from tests.api.conftest import Running, gateway_config, start
from warden.config import BrokerConfig

CAP = 64 * 1024  # api.max_body_bytes default


def _raw_post(url: str, path: str, headers: str, body: bytes = b"") -> bytes:
    """One request over a plain socket, so nothing but the declared headers (and `body`) is sent."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode() + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_declared_huge_body_is_refused_413_unread_and_unauthenticated(running: Running) -> None:
    # Content-Length says 200 MB; none of it is sent: the answer comes without reading any.
    answer = _raw_post(running.url, "/api/alerts/1/acknowledge", "Content-Type: application/json\r\nContent-Length: 200000000\r\n")
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b'{"detail":"request body larger than 65536 bytes (api.max_body_bytes)"}' in answer.replace(b", ", b",").replace(b": ", b":")


def test_a_streamed_body_is_refused_413_as_soon_as_it_passes_the_cap(running: Running) -> None:
    chunk = b"[" + b"1," * (16 * 1024 - 1) + b"1"  # 32 KiB of a JSON array, never closed
    sent = {"bytes": 0}
    total_chunks = 1024  # 32 MiB offered

    def body() -> Iterator[bytes]:
        for _ in range(total_chunks):
            sent["bytes"] += len(chunk)
            yield chunk

    try:
        response = httpx.post(f"{running.url}/api/alerts/1/acknowledge", content=body(), timeout=20,
                              headers={"Content-Type": "application/json"})  # chunked: no Content-Length
        status = response.status_code
        detail = response.json()["detail"]
    except httpx.HTTPError:  # the server answered and closed while the client was still writing
        pytest.fail("the server closed without a 413")
    assert (status, detail) == (413, "request body larger than 65536 bytes (api.max_body_bytes)")
    assert sent["bytes"] < total_chunks * len(chunk), "the whole body was read"


def test_the_cap_reads_at_most_one_chunk_past_the_limit() -> None:
    """The middleware alone, fed 4 KiB chunks: it stops asking after the chunk that passes
    64 KiB (16 chunks reach exactly 64 KiB, the 17th passes it) and never calls the app."""
    pulled: list[int] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        pulled.append(4096)
        return {"type": "http.request", "body": b"x" * 4096, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app saw the request")

    asyncio.run(_BodyLimit(app, CAP)({"type": "http", "headers": []}, receive, send))
    assert len(pulled) == 17 and sum(pulled) == CAP + 4096
    assert sent[0]["status"] == 413


def test_a_body_under_the_cap_reaches_the_app(running: Running) -> None:
    answer = running.client("admin").post("/api/alerts/999/acknowledge", json={"note": "x" * 1000})
    assert answer.status_code == 404 and answer.json() == {"detail": "no alert 999"}


def _secret_config(broker: BrokerConfig, tmp_path: Path) -> GatewayConfig:
    base = gateway_config(broker, tmp_path).model_dump(mode="json")
    base["broker"] |= {"username": "gw-user", "password": "broker-pw-s3cret"}
    base["alerts"] = {"sinks": {
        "hook": {"type": "webhook", "url": "https://hooks.example.org/T0/B0/webhook-s3cret",
                 "headers": {"Authorization": "Bearer header-s3cret"}},
        "mail": {"type": "smtp", "host": "mail.example.org", "tls": "starttls", "username": "warden",
                 "password": "smtp-pw-s3cret", "sender": "warden@example.org", "to": ["desk@example.org"]},
    }}
    return GatewayConfig.model_validate(base)


def test_the_config_returns_no_secret(broker_config: BrokerConfig, tmp_path: Path) -> None:
    running = start(_secret_config(broker_config, tmp_path))
    try:
        config = running.client("admin").get("/api/config").raise_for_status().json()
    finally:
        running.api.stop()
        running.gateway.stop()
    text = str(config)
    assert not re.search(r"s3cret|[0-9a-f]{64}", text), text
    assert config["alerts"]["sinks"]["mail"]["host"] == "mail.example.org"  # the rest is shown
    assert config["broker"]["username"] == "gw-user"


def test_the_historian_token_is_declared_secret_too() -> None:
    config = GatewayConfig.model_validate({"site_file": "site.yaml", "historian": {
        "type": "influxdb", "url": "http://influx:8086", "bucket": "warden", "token": "influx-tok-s3cret"}})
    shown = redacted(config)
    assert "token" not in shown["historian"] and shown["historian"]["bucket"] == "warden"
    assert "s3cret" not in str(shown)


@pytest.mark.parametrize("url", [
    "/api/devices/ac-a204/series?since=0001-01-01T00:00:00Z",
    "/api/devices/ac-a204/series?until=9999-12-31T23:59:59Z",
    "/api/reports/0001-01-01",
    "/api/reports/9999-12-31",
    "/api/alerts?until=9999-12-31T23:59:59-23:59",
    "/api/alerts?since=0001-01-01T00:00:00Z",
    "/api/patrols/rounds?night=9999-12-31",
    "/api/patrols/rounds?night=0001-01-01",
])
def test_out_of_range_dates_answer_4xx_with_a_detail(running: Running, url: str) -> None:
    response = running.client("admin").get(url)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert isinstance(response.json()["detail"], str)


def test_validation_errors_are_one_detail_line(running: Running) -> None:
    response = running.client("admin").get("/api/alerts", params={"limit": "many"})
    assert response.status_code == 422
    assert response.json() == {"detail": "query.limit: Input should be a valid integer, unable to parse string as an integer"}


def test_openapi_declares_the_errors_and_an_optional_token_for_me(running: Running) -> None:
    paths = httpx.get(f"{running.url}/openapi.json").json()["paths"]
    codes = lambda path, method: set(paths[path][method]["responses"])  # noqa: E731
    assert {"401", "403", "404", "409", "413", "422"} <= codes("/api/alerts/{alert_id}/acknowledge", "post")
    assert {"401", "403", "404"} <= codes("/api/alerts/{alert_id}", "get")
    assert {"401", "403", "422", "501"} <= codes("/api/devices/{device}/series", "get")
    assert {"401", "403"} <= codes("/api/config", "get")
    assert "401" not in codes("/api/me", "get")
    assert {} in paths["/api/me"]["get"]["security"]  # a token is optional there


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_docs_load_nothing_from_another_host(running: Running, page: str) -> None:
    html = httpx.get(f"{running.url}{page}").raise_for_status().text
    assert not re.search(r"(src|href)=\"(https?:)?//", html), html
    assets = re.findall(r"(?:src|href)=\"(/docs-assets/[^\"]+)\"", html) + re.findall(r"'(/docs-assets/[^']+)'", html)
    assert assets, html
    for asset in assets:
        assert httpx.get(f"{running.url}{asset}").status_code == 200, asset


def test_dead_letters_over_the_api_say_their_code_and_the_cut(running: Running) -> None:
    from gateway.store import DeadLetter

    running.gateway.store.commit_batch([], [], None, [DeadLetter("warden/v1/riverside/agent-a/events", b"y" * 3000, "not JSON: ...", "not_json")])
    [row] = running.client("admin").get("/api/dead-letters").raise_for_status().json()
    assert (row["code"], row["size"], len(row["payload"]), row["truncated"]) == ("not_json", 3000, 1024, True)


def test_a_nul_character_in_typed_text_is_refused_naming_the_field(running: Running) -> None:
    """PostgreSQL cannot store NUL in text, SQLite can: refused at the door, on either engine, as a 422."""
    with running.client("maintenance") as client:
        response = client.post("/api/work-orders", json={"room": "A-204", "text": "tap drips\x00"})
        assert response.status_code == 422, response.text
        assert response.json() == {"detail": "body.text: Value error, must not contain the NUL character (\\u0000)"}
        fine = client.post("/api/work-orders", json={"room": "A-204", "text": "tap drips"})
        assert fine.status_code == 201, fine.text
        note = client.post(f"/api/work-orders/{fine.json()['id']}/notes", json={"note": "parts\x00"})
        assert note.status_code == 422 and note.json()["detail"].startswith("body.note: "), note.text
