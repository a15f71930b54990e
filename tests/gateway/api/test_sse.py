"""The alert event stream over real uvicorn: a change arrives within one second,
only changes of the key's sites are sent, and actions are streamed with who."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tests.gateway.api.conftest import NORTH, SOUTH, ServerThread, World, auth, cheating_finding


async def _events(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    """(event, data) per SSE frame; comments come as ("comment", text)."""
    event, data = "message", []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


async def test_stream_delivers_a_change_within_one_second(
    world: World, server: ServerThread
) -> None:
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        client.stream("GET", "/api/v1/alerts/stream", headers=auth("inspector")) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _events(response)
        assert await anext(events) == ("comment", "stream open")  # subscribed from here on

        # Another site's change is not sent to a north-only key ...
        await asyncio.to_thread(
            world.alerts.ingest,
            cheating_finding("s1", detector="integrity.counter_rollback"),
            site=SOUTH,
            evidence_digest="d" * 64,
        )
        # ... this one is, within a second of its commit.
        started = time.monotonic()
        change = await asyncio.to_thread(
            world.alerts.ingest,
            cheating_finding("n1", detector="integrity.calibration_change"),
            site=NORTH,
            evidence_digest="e" * 64,
        )
        assert change is not None
        kind, data = await asyncio.wait_for(anext(events), timeout=5)
        elapsed = time.monotonic() - started
        assert kind == "alert"
        assert data["kind"] == "created"
        assert data["alert"]["id"] == change.alert.id
        assert data["alert"]["detector"] == "integrity.calibration_change"
        assert elapsed < 1.0, f"change took {elapsed:.3f} s to arrive"

        # An action through the API is streamed too, naming the key.
        async with httpx.AsyncClient(base_url=server.url) as actor:
            acted = await actor.post(
                f"/api/v1/alerts/{change.alert.id}/acknowledge",
                json={"note": "on site at 14:00"},
                headers=auth("admin"),
            )
            assert acted.status_code == 200
        kind, data = await asyncio.wait_for(anext(events), timeout=5)
        assert (kind, data["kind"], data["who"], data["note"]) == (
            "alert",
            "acknowledged",
            "admin",
            "on site at 14:00",
        )
        assert data["alert"]["status"] == "acknowledged"


async def test_stream_needs_a_key(server: ServerThread) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.get("/api/v1/alerts/stream")
    assert response.status_code == 401


async def test_close_streams_ends_open_streams_and_refuses_new_ones(
    world: World, server: ServerThread
) -> None:
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        client.stream("GET", "/api/v1/alerts/stream", headers=auth("admin")) as response,
    ):
        events = _events(response)
        assert await anext(events) == ("comment", "stream open")
        world.app.state.close_streams()  # from this (non-server) thread

        async def drain() -> list[tuple[str, Any]]:
            return [item async for item in events]

        rest = await asyncio.wait_for(drain(), timeout=5)  # the stream ends
        assert all(kind == "comment" for kind, _ in rest)
        refused = await client.get("/api/v1/alerts/stream", headers=auth("admin"))
        assert refused.status_code == 503
