"""The gateway's HTTP API (FastAPI; OpenAPI docs at /docs).

Read-only for now: alerts, their history, dead letters and health. Endpoints that change
anything (acknowledge, resolve) arrive with token authentication and roles.
"""

from __future__ import annotations

import threading
from dataclasses import asdict
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.service import Gateway
from rules.alerts import AlertState


def create_app(gateway: Gateway) -> FastAPI:
    app = FastAPI(title="warden gateway", version="1")
    store = gateway.store

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        """Prometheus text exposition."""
        return PlainTextResponse(gateway.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return gateway.health()

    @app.get("/api/alerts")
    def list_alerts(
        site: str | None = None,
        rule: str | None = None,
        state: AlertState | None = None,
        limit: int = Query(default=500, ge=1, le=5000),
    ) -> list[dict[str, Any]]:
        return [asdict(a) for a in store.alerts(site=site, rule=rule, state=state, limit=limit)]

    @app.get("/api/alerts/{alert_id}")
    def alert_detail(alert_id: int) -> dict[str, Any]:
        alert = store.alert(alert_id)
        if alert is None:
            raise HTTPException(status_code=404, detail=f"no alert {alert_id}")
        return {**asdict(alert), "history": store.alert_history(alert_id)}

    @app.get("/api/patrols/rounds")
    def patrol_rounds() -> list[dict[str, Any]]:
        """Rounds being followed, each checkpoint visited, late, missed or pending."""
        return gateway.patrol_rounds

    @app.get("/api/dead-letters")
    def dead_letters(limit: int = Query(default=100, ge=1, le=1000)) -> list[dict[str, Any]]:
        return [{**row, "payload": row["payload"][:1024].decode("utf-8", "replace")} for row in store.dead_letters(limit)]

    return app


class ApiServer:
    """uvicorn in a background thread, so the gateway process runs ingest and API together."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self.server.run, name="api", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout / 0.05)):
            if self.server.started:
                return
            deadline.wait(0.05)  # uvicorn offers no start event to wait on
        raise RuntimeError("API server did not start")

    @property
    def url(self) -> str:
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
