"""The HTTP API and the dashboard: `create_app(...) -> FastAPI`.

Routes live under ``/api/v1``; ``/health`` (no credential) and ``/metrics``
(Prometheus text, admin key) are at the top; the dashboard's static files are
served at ``/``. Every route but ``/health`` and the dashboard's static files
requires an API key (see `gateway.api.auth`).

Site scoping: every object (device, its readings, an alert, its evidence) has
a site; a key that is not scoped to that site gets **404** exactly as if the
object did not exist, so a key cannot probe for another site's devices or
alerts. A role that may not use a route at all gets 403.

Failure modes handled: unknown devices and alerts (404), malformed parameters
or bodies (422 naming the parameter), well-formed but unusable ones such as a
reversed time range or an unknown cursor (400), an action the alert's status
does not allow (409), bodies over ``api.max_body_bytes`` (413), page sizes
over ``api.max_page_size`` (422), guessing keys (429), a status provider or
store that raises (that request fails with 500 and is logged; ``/health``
reports degraded with the reason instead of failing), shutdown with event
streams open (`OpenStreams`).
"""

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from anomaly.finding import Severity
from drivers.reading import DeviceKind, Reading, now_ns
from gateway.alerts import (
    Alert,
    AlertAction,
    AlertError,
    AlertNotFoundError,
    AlertStatus,
    AlertStore,
    InvalidQueryError,
    InvalidTransitionError,
    Subscription,
)
from gateway.api.auth import (
    INSPECTOR_READINGS_WINDOW_NS,
    FailureLimiter,
    KeyRing,
    Permission,
    Principal,
)
from gateway.api.deps import AuthState, need, principal
from gateway.api.limits import BodyLimitMiddleware
from gateway.api.metrics import ApiMetrics
from gateway.api.models import (
    BAD_REQUEST,
    ERRORS,
    FORBIDDEN,
    NOT_FOUND,
    STORE_UNAVAILABLE,
    ActionIn,
    AlertChangeOut,
    AlertOut,
    AlertPage,
    DeviceDetail,
    Health,
    HealthOut,
    LedgerVerifyOut,
    NoteIn,
    Problem,
    ReadingOut,
    ReadingsOut,
    TimelineEvent,
    TimelineOut,
    WhoAmI,
)
from gateway.api.status import DeviceState, DeviceStatus, StatusProvider
from gateway.config import ID_PATTERN, Role, Settings
from gateway.evidence import EvidenceError, build_bundle
from gateway.ledger import Ledger
from gateway.storage.errors import QueryError, SinkUnavailable
from gateway.storage.query import Agg, QueryResult, ReadingStore

log = logging.getLogger("gateway.api")

API_PREFIX = "/api/v1"
DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
DAY_NS = 86_400 * 1_000_000_000
NS_MAX = 2**63 - 1  # the largest timestamp SQLite and InfluxDB can hold
MAX_READING_POINTS = 10_000
TIMELINE_POINTS = 200
MAX_OPEN_COUNTED = 100  # a device has one active alert per detector; more is a flood
SSE_PING_S = 15
ACTIVE = (AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED)
WHO_DOC = (
    "\n\nThe key's name is recorded as who did it, with the optional note, in the "
    "alert's history and the evidence ledger."
)

DeviceId = Annotated[str, PathParam(pattern=ID_PATTERN, description="device id")]
AlertId = Annotated[int, PathParam(ge=1, le=NS_MAX, description="alert id")]
FieldName = Annotated[str, Query(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _RequestMetrics:
    """Counts requests by route template and status; times the response head."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500

        async def timed_send(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
                route = _route_label(scope)
                self.metrics.latency.labels(route).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            method = scope.get("method", "")
            self.metrics.requests.labels(
                method if method in _METHODS else "other",
                _route_label(scope),
                f"{status_code // 100}xx",
            ).inc()


class OpenStreams:
    """The open event-stream subscriptions, so that shutdown can end them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[Subscription, asyncio.AbstractEventLoop] = {}
        self.closed = False

    def add(self, sub: Subscription) -> None:
        with self._lock:
            self._subs[sub] = asyncio.get_running_loop()

    def remove(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.pop(sub, None)

    def close_all(self) -> None:
        """End every open stream and refuse new ones; thread-safe, idempotent."""
        with self._lock:
            self.closed = True
            subs = list(self._subs.items())
            self._subs.clear()
        for sub, loop in subs:
            # A subscription's queue belongs to its loop: close it there.
            with contextlib.suppress(RuntimeError):  # that loop is already closed
                loop.call_soon_threadsafe(sub.close)


def _route_label(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


class Devices:
    """Device lookups over the status provider, with the config for extra detail."""

    def __init__(self, settings: Settings, status: StatusProvider) -> None:
        self._settings = settings
        self._status = status
        self._config = {d.id: d for d in settings.devices}

    def all(self) -> list[DeviceStatus]:
        return self._status.devices()

    def visible(self, who: Principal) -> list[DeviceStatus]:
        return [d for d in self.all() if who.sees(d.site)]

    def get(self, who: Principal, device_id: str) -> DeviceStatus:
        """The device, or 404 if unknown or outside the key's sites."""
        for dev in self.all():
            if dev.id == device_id and who.sees(dev.site):
                return dev
        raise HTTPException(404, f"no device {device_id!r}")

    def kind_of(self, device_id: str) -> DeviceKind | None:
        for dev in self.all():
            if dev.id == device_id:
                return dev.kind
        cfg = self._config.get(device_id)
        return cfg.kind if cfg else None

    def detail(self, dev: DeviceStatus) -> DeviceDetail:
        cfg = self._config.get(dev.id)
        extra: dict[str, Any] = {}
        if cfg is not None:
            extra = {
                "poll_interval_s": cfg.poll_interval_s,
                "accuracy_class": cfg.accuracy_class,
                "mpe_pct": cfg.effective_mpe_pct,
            }
        return DeviceDetail(**dev.model_dump(), **extra)


def _reading_out(reading: Reading) -> ReadingOut:
    return ReadingOut(
        ts_ns=reading.ts_ns,
        seq=reading.seq,
        quality=str(reading.quality),
        fields=dict(reading.fields),
    )


def create_app(
    *,
    settings: Settings,
    alerts: AlertStore,
    ledger: Ledger,
    store: ReadingStore,
    status: StatusProvider,
    metrics_registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The API and dashboard app over the gateway's parts.

    `alerts` is the alert store (its change feed drives the event stream),
    `ledger` the evidence ledger, `store` the readings store (queries only),
    `status` the runtime's live device status. Metrics go to
    `metrics_registry` (a fresh registry if None). The app owns none of these:
    closing them is the caller's job.

    Before stopping the server, call ``app.state.close_streams()`` (any
    thread): open event streams end, so a graceful shutdown does not wait on
    them, and new ones get 503. (Under uvicorn's own signal handling
    sse-starlette also ends them; this covers a runtime with its own.)
    """
    api_settings = settings.api
    registry = metrics_registry if metrics_registry is not None else CollectorRegistry()
    metrics = ApiMetrics(registry, status=status, count_alerts=lambda: _count_alerts(alerts))
    devices = Devices(settings, status)
    streams = OpenStreams()

    app = FastAPI(
        title="meterwatch",
        version="1",
        summary="Edge gateway for legal metrology: devices, readings, alerts and evidence.",
        description=(
            "Every route but `/health` needs an API key, as `Authorization: Bearer <key>` "
            "or `X-API-Key: <key>`. Objects of a site the key is not scoped to answer 404."
        ),
        # The schema is served below behind a key; the Swagger/ReDoc pages would
        # load scripts from a CDN, which the gateway neither needs nor allows.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.close_streams = streams.close_all
    app.state.auth = AuthState(
        keys=KeyRing(api_settings.keys),
        limiter=FailureLimiter(per_minute=api_settings.auth_failures_per_minute),
        metrics=metrics,
    )
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=api_settings.max_body_bytes)
    app.add_middleware(_RequestMetrics, metrics=metrics)
    app.add_middleware(_SecurityHeaders)

    v1 = APIRouter(prefix=API_PREFIX, responses=ERRORS)

    @app.get("/health", response_model=HealthOut, tags=["system"], summary="Liveness and health")
    def health() -> HealthOut:
        """Ok or degraded, with reasons. No credential; carries no ids and no secrets."""
        reasons: list[str] = []
        if not api_settings.keys:
            reasons.append("no API keys configured (api.keys): every other route refuses")
        try:
            devs = devices.all()
        except Exception:
            log.exception("device status unavailable for /health")
            reasons.append("device status unavailable")
            devs = []
        total = len(devs)
        up = sum(1 for d in devs if d.state is DeviceState.UP)
        if total and up < total:
            reasons.append(f"{total - up} of {total} devices not up")
        try:
            _count_alerts(alerts)
        except Exception:
            log.exception("alert store unavailable for /health")
            reasons.append("alert store unavailable")
        return HealthOut(
            status=Health.DEGRADED if reasons else Health.OK,
            reasons=reasons,
            devices_total=total,
            devices_up=up,
        )

    @app.get(
        "/metrics",
        tags=["system"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            **ERRORS,
            **FORBIDDEN,
            200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
        },
    )
    def prometheus(_: Annotated[Principal, Depends(need(Permission.METRICS_READ))]) -> Response:
        """Prometheus text exposition of the gateway's metrics (admin keys)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @v1.get("/openapi.json", include_in_schema=False)
    def openapi_schema(_: Annotated[Principal, Depends(principal)]) -> JSONResponse:
        """The OpenAPI schema of this API (any valid key)."""
        return JSONResponse(app.openapi())

    @v1.get("/me", response_model=WhoAmI, tags=["system"], summary="The caller's key")
    def whoami(who: Annotated[Principal, Depends(principal)]) -> WhoAmI:
        """The name, role and sites of the presented key."""
        return WhoAmI(
            name=who.name,
            role=who.role.value,
            sites=sorted(who.sites),
            max_page_size=api_settings.max_page_size,
        )

    @v1.get("/devices", response_model=list[DeviceStatus], tags=["devices"], summary="List devices")
    def list_devices(
        who: Annotated[Principal, Depends(need(Permission.DEVICES_READ))],
    ) -> list[DeviceStatus]:
        """Every device of the key's sites with its live status and last quality."""
        return devices.visible(who)

    @v1.get(
        "/devices/{device_id}",
        response_model=DeviceDetail,
        responses=NOT_FOUND,
        tags=["devices"],
        summary="One device",
    )
    async def device_detail(
        device_id: DeviceId, who: Annotated[Principal, Depends(need(Permission.DEVICES_READ))]
    ) -> DeviceDetail:
        """A device's live status, config detail, latest reading and open alert count."""
        dev = devices.get(who, device_id)
        detail = devices.detail(dev)
        latest = await store.latest(device_id)
        open_page = await alerts.aquery(
            device=device_id, status=ACTIVE, sites=sorted(who.sites), limit=MAX_OPEN_COUNTED
        )
        return detail.model_copy(
            update={
                "latest": _reading_out(latest) if latest is not None else None,
                "open_alerts": len(open_page.items),
                "open_alerts_truncated": open_page.next_cursor is not None,
            }
        )

    @v1.get(
        "/devices/{device_id}/readings",
        response_model=ReadingsOut,
        responses={
            **STORE_UNAVAILABLE,
            **NOT_FOUND,
            **BAD_REQUEST,
            403: {"model": Problem, "description": "inspector keys: older than 7 days"},
        },
        tags=["devices"],
        summary="A device's readings",
    )
    async def device_readings(
        *,
        device_id: DeviceId,
        who: Annotated[Principal, Depends(need(Permission.READINGS_READ))],
        start_ns: Annotated[
            int | None, Query(ge=0, le=NS_MAX, description="UTC ns; default end_ns minus 24 h")
        ] = None,
        end_ns: Annotated[
            int | None, Query(ge=1, le=NS_MAX, description="UTC ns; default now")
        ] = None,
        fields: Annotated[
            list[FieldName] | None, Query(description="canonical field names; default all")
        ] = None,
        every_s: Annotated[
            float | None,
            Query(
                ge=1, le=366 * 86400, description="downsample to this interval (s); raw if absent"
            ),
        ] = None,
        agg: Annotated[Agg, Query(description="aggregate per interval")] = Agg.MEAN,
        limit: Annotated[
            int, Query(ge=1, le=MAX_READING_POINTS, description="most rows to return")
        ] = MAX_READING_POINTS,
    ) -> ReadingsOut:
        """Raw or downsampled values over ``[start_ns, end_ns)``, in time order.

        Inspectors may read the last 7 days only (the live view); older
        history is for enforcement and admin keys (403).
        """
        devices.get(who, device_id)
        end = end_ns if end_ns is not None else now_ns()
        start = start_ns if start_ns is not None else max(0, end - DAY_NS)
        if start >= end:
            raise HTTPException(400, "start_ns must be before end_ns")
        if who.role is Role.INSPECTOR and start < now_ns() - INSPECTOR_READINGS_WINDOW_NS:
            raise HTTPException(
                403, "inspector keys may read the last 7 days of readings; ask enforcement"
            )
        try:
            result = await store.query(
                device_id,
                fields=fields,
                start_ns=start,
                end_ns=end,
                every_s=every_s,
                agg=agg,
                limit=limit,
            )
        except QueryError as exc:
            raise HTTPException(400, str(exc)) from None
        except SinkUnavailable:
            raise store_unavailable() from None
        return _readings_out(result, start_ns=start, end_ns=end, limit=limit)

    @v1.get(
        "/devices/{device_id}/timeline",
        response_model=TimelineOut,
        responses={**NOT_FOUND, **BAD_REQUEST, **FORBIDDEN, **STORE_UNAVAILABLE},
        tags=["devices"],
        summary="A device's timeline",
    )
    async def device_timeline(
        device_id: DeviceId,
        who: Annotated[Principal, Depends(need(Permission.HISTORY_READ))],
        start_ns: Annotated[
            int | None, Query(ge=0, le=NS_MAX, description="UTC ns; default end_ns minus 7 days")
        ] = None,
        end_ns: Annotated[
            int | None, Query(ge=1, le=NS_MAX, description="UTC ns; default now")
        ] = None,
    ) -> TimelineOut:
        """A window of a device's life: a downsampled overview of its readings (at
        most 200 intervals), the alerts seen in it, and their events (findings
        merged, actions with who and note), oldest first."""
        devices.get(who, device_id)
        end = end_ns if end_ns is not None else now_ns()
        start = start_ns if start_ns is not None else max(0, end - 7 * DAY_NS)
        if start >= end:
            raise HTTPException(400, "start_ns must be before end_ns")
        every_s = max(1.0, math.ceil((end - start) / TIMELINE_POINTS / 1e9))
        try:
            result = await store.query(device_id, start_ns=start, end_ns=end, every_s=every_s)
        except QueryError as exc:
            raise HTTPException(400, str(exc)) from None
        except SinkUnavailable:
            raise store_unavailable() from None
        page = await alerts.aquery(
            device=device_id,
            sites=sorted(who.sites),
            since_ns=start,
            until_ns=end,
            limit=api_settings.max_page_size,
        )
        events: list[TimelineEvent] = []
        for alert in page.items:
            for entry in await alerts.ahistory(alert.id):
                if start <= entry.ts_ns < end:
                    events.append(
                        TimelineEvent(
                            ts_ns=entry.ts_ns,
                            kind=entry.kind.value,
                            alert_id=alert.id,
                            detector=alert.detector,
                            who=entry.who,
                            note=entry.note,
                            ledger_index=entry.ledger_index,
                        )
                    )
        events.sort(key=lambda e: (e.ts_ns, e.ledger_index))
        return TimelineOut(
            device_id=device_id,
            start_ns=start,
            end_ns=end,
            readings=_readings_out(result, start_ns=start, end_ns=end, limit=None),
            alerts=[_alert_out(a) for a in page.items],
            events=events,
            alerts_truncated=page.next_cursor is not None,
        )

    # The stream is declared before /alerts/{alert_id} so "stream" is never taken for an id.
    @v1.get(
        "/alerts/stream",
        tags=["alerts"],
        summary="Live alert changes (server-sent events)",
        response_class=EventSourceResponse,
        responses={
            200: {
                "description": "an endless ``text/event-stream``: one ``alert`` event per "
                "change (data: an AlertChange as JSON, id: its ledger index), and "
                "keep-alive comments. The stream ends if the reader falls too far "
                "behind; reconnect and re-read the list.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            503: {"model": Problem, "description": "the gateway is shutting down"},
        },
    )
    async def alert_stream(
        request: Request, who: Annotated[Principal, Depends(need(Permission.ALERTS_READ))]
    ) -> EventSourceResponse:
        """Every change of an alert of the key's sites, as it is committed."""
        if streams.closed:
            raise HTTPException(503, "the gateway is shutting down")
        subscription = alerts.subscribe()
        streams.add(subscription)

        async def events() -> AsyncIterator[ServerSentEvent]:
            metrics.sse_clients.inc()
            try:
                async with subscription as sub:
                    yield ServerSentEvent(comment="stream open")
                    async for change in sub:
                        if not who.sees(change.alert.site):
                            continue
                        body = AlertChangeOut(
                            kind=change.kind.value,
                            ts_ns=change.ts_ns,
                            who=change.who,
                            note=change.note,
                            ledger_index=change.ledger_index,
                            alert=_alert_out(change.alert),
                        )
                        yield ServerSentEvent(
                            data=body.model_dump_json(),
                            event="alert",
                            id=str(change.ledger_index),
                        )
            finally:
                streams.remove(subscription)
                metrics.sse_clients.dec()

        return EventSourceResponse(
            events(),
            ping=SSE_PING_S,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @v1.get(
        "/alerts",
        response_model=AlertPage,
        responses=BAD_REQUEST,
        tags=["alerts"],
        summary="List alerts",
    )
    async def list_alerts(
        *,
        who: Annotated[Principal, Depends(need(Permission.ALERTS_READ))],
        status: Annotated[
            list[AlertStatus] | None, Query(description="any of these statuses")
        ] = None,
        severity: Annotated[Severity | None, Query()] = None,
        detector: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
        site: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        device: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
        since_ns: Annotated[
            int | None, Query(ge=0, le=NS_MAX, description="alerts last seen at or after (UTC ns)")
        ] = None,
        until_ns: Annotated[
            int | None,
            Query(ge=0, le=NS_MAX, description="alerts first seen at or before (UTC ns)"),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=api_settings.max_page_size)] = min(
            100, api_settings.max_page_size
        ),
        cursor: Annotated[
            str | None, Query(max_length=200, description="next_cursor of the previous page")
        ] = None,
    ) -> AlertPage:
        """Alerts of the key's sites matching every filter, newest first, one page."""
        try:
            page = await alerts.aquery(
                status=status,
                severity=severity,
                detector=detector,
                site=site,
                sites=sorted(who.sites),
                device=device,
                since_ns=since_ns,
                until_ns=until_ns,
                limit=limit,
                cursor=cursor,
            )
        except InvalidQueryError as exc:
            raise HTTPException(400, str(exc)) from None
        return AlertPage(items=[_alert_out(a) for a in page.items], next_cursor=page.next_cursor)

    async def visible_alert(who: Principal, alert_id: int) -> Alert:
        try:
            alert = await alerts.aget(alert_id)
        except AlertNotFoundError:
            raise HTTPException(404, f"no alert {alert_id}") from None
        if not who.sees(alert.site):
            raise HTTPException(404, f"no alert {alert_id}")
        return alert

    @v1.get(
        "/alerts/{alert_id}",
        response_model=AlertOut,
        responses=NOT_FOUND,
        tags=["alerts"],
        summary="One alert",
    )
    async def get_alert(
        alert_id: AlertId, who: Annotated[Principal, Depends(need(Permission.ALERTS_READ))]
    ) -> AlertOut:
        """The alert with its lifecycle history."""
        return _alert_out(await visible_alert(who, alert_id))

    async def act(who: Principal, alert_id: int, action: AlertAction, note: str | None) -> AlertOut:
        await visible_alert(who, alert_id)
        try:
            alert = await alerts.aact(alert_id, action, who=who.name, note=note or None)
        except AlertNotFoundError:
            raise HTTPException(404, f"no alert {alert_id}") from None
        except InvalidTransitionError as exc:
            raise HTTPException(409, str(exc)) from None
        except AlertError as exc:
            raise HTTPException(400, str(exc)) from None
        log.info(
            "alert action", extra={"alert_id": alert_id, "action": action.value, "who": who.name}
        )
        return _alert_out(alert)

    action_responses: dict[int | str, dict[str, Any]] = {
        **NOT_FOUND,
        **FORBIDDEN,
        **BAD_REQUEST,
        409: {"model": Problem, "description": "not allowed in the alert's status"},
        413: {"model": Problem, "description": "body larger than api.max_body_bytes"},
    }

    def action_route(action: AlertAction, summary: str, doc: str) -> None:
        async def endpoint(
            alert_id: AlertId,
            who: Annotated[Principal, Depends(need(Permission.ALERTS_ACT))],
            body: ActionIn | None = None,
        ) -> AlertOut:
            return await act(who, alert_id, action, body.note if body is not None else None)

        endpoint.__doc__ = doc + WHO_DOC
        v1.add_api_route(
            f"/alerts/{{alert_id}}/{action.value}",
            endpoint,
            methods=["POST"],
            response_model=AlertOut,
            responses=action_responses,
            tags=["alerts"],
            summary=summary,
            name=f"{action.value}_alert",
        )

    action_route(
        AlertAction.ACKNOWLEDGE,
        "Acknowledge an alert",
        "Someone is looking into it (open -> acknowledged).",
    )
    action_route(
        AlertAction.RESOLVE,
        "Resolve an alert",
        "The cause was dealt with (open or acknowledged -> resolved; final).",
    )
    action_route(
        AlertAction.DISMISS,
        "Dismiss an alert",
        "A false alarm (open or acknowledged -> dismissed; final).",
    )

    @v1.post(
        "/alerts/{alert_id}/note",
        response_model=AlertOut,
        responses=action_responses,
        tags=["alerts"],
        summary="Add a note to an alert",
    )
    async def note_alert(
        alert_id: AlertId,
        who: Annotated[Principal, Depends(need(Permission.ALERTS_ACT))],
        body: NoteIn,
    ) -> AlertOut:
        """Add a note in any status (the status does not change)."""
        return await act(who, alert_id, AlertAction.NOTE, body.note)

    @v1.get(
        "/alerts/{alert_id}/evidence",
        tags=["alerts"],
        summary="The alert's evidence bundle (zip)",
        response_class=Response,
        responses={
            **NOT_FOUND,
            **FORBIDDEN,
            **STORE_UNAVAILABLE,
            200: {
                "description": "a zip: the alert and its history, the cited readings as "
                "CSV and PNG chart, ledger entries with inclusion proofs, a README and a "
                "standalone verifier",
                "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
            },
            500: {"model": Problem, "description": "the bundle cannot be built"},
        },
    )
    async def evidence_bundle(
        alert_id: AlertId, who: Annotated[Principal, Depends(need(Permission.EVIDENCE_READ))]
    ) -> Response:
        """Build the bundle from the alert, its full history, the raw readings its
        latest finding cites, and the ledger.

        The readings are the evidence set the alert store kept with the alert (the
        very readings whose digest the ledger holds), so the bundle verifies even
        after the store's raw retention has passed. For an alert that has no
        evidence set, the readings of its window are read back from the store, in
        their stored form (`point_ts_ns`).
        """
        alert = await visible_alert(who, alert_id)
        history = await alerts.ahistory(alert_id)
        kept = await alerts.aevidence_readings(alert_id)
        readings: list[Reading] = list(kept) if kept is not None else []
        for device_id in alert.devices if kept is None else ():
            kind = devices.kind_of(device_id)
            if kind is None:
                continue  # no longer configured: its readings cannot be typed
            try:
                # The cited window includes its end. Stored timestamps carry seq % 1000
                # as their last three digits (gateway.storage.schema.point_ts_ns), so a
                # reading at either edge may be stored up to 999 ns outside the window.
                result = await store.query(
                    device_id,
                    start_ns=max(0, alert.window_start_ns - 999),
                    end_ns=alert.window_end_ns + 1000,
                )
            except QueryError as exc:
                raise HTTPException(500, f"cannot read the cited readings: {exc}") from None
            except SinkUnavailable:
                raise store_unavailable() from None
            readings.extend(_readings_of(result, kind))
        try:
            data = await asyncio.to_thread(build_bundle, alert, history, readings, ledger)
        except EvidenceError as exc:
            log.error("evidence bundle failed", extra={"alert_id": alert_id, "error": str(exc)})
            raise HTTPException(500, str(exc)) from None
        log.info("evidence bundle served", extra={"alert_id": alert_id, "who": who.name})
        return Response(
            data,
            media_type="application/zip",
            headers={
                "Content-Disposition": f'attachment; filename="meterwatch-alert-{alert_id}.zip"',
                "Cache-Control": "no-store",
            },
        )

    @v1.get(
        "/ledger/verify",
        response_model=LedgerVerifyOut,
        responses=FORBIDDEN,
        tags=["ledger"],
        summary="Verify the evidence ledger",
    )
    async def verify_ledger(
        _: Annotated[Principal, Depends(need(Permission.LEDGER_VERIFY))],
    ) -> LedgerVerifyOut:
        """Recompute the whole ledger from its entries; name the first bad entry.

        The ledger spans every site; the answer carries only its size, root and
        the first bad index, never entry contents.
        """
        report = await asyncio.to_thread(ledger.verify)
        return LedgerVerifyOut(
            ok=report.ok,
            size=report.size,
            root=report.root,
            first_bad=report.first_bad,
            problem=report.problem,
            heads_checked=report.heads_checked,
        )

    app.include_router(v1)
    _mount_dashboard(app)
    return app


def _mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard: ``/`` is its page, ``/static/*`` its files."""
    index = DASHBOARD_DIR / "index.html"

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=DASHBOARD_DIR), name="dashboard")


def _count_alerts(alerts: AlertStore) -> dict[str, int]:
    return {s.value: n for s, n in alerts.counts().items()}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _readings_out(
    result: QueryResult, *, start_ns: int, end_ns: int, limit: int | None
) -> ReadingsOut:
    return ReadingsOut(
        device_id=result.device_id,
        start_ns=start_ns,
        end_ns=end_ns,
        every_s=result.every_s,
        agg=result.agg.value if result.agg is not None else None,
        ts_ns=list(result.ts_ns),
        fields={k: [_finite(v) for v in col] for k, col in result.columns.items()},
        seq=list(result.seq),
        quality=list(result.quality),
        truncated=limit is not None and len(result.ts_ns) >= limit,
    )


def store_unavailable() -> HTTPException:
    """503 for a query while the readings store (InfluxDB) is away; readings keep
    arriving in the outbox meanwhile, so the client should simply retry."""
    return HTTPException(
        503, "the readings store is unavailable; try again shortly", headers={"Retry-After": "30"}
    )


def _readings_of(result: QueryResult, kind: DeviceKind) -> list[Reading]:
    """Raw query columns back into readings (absent and non-finite values left out)."""
    out: list[Reading] = []
    for i, ts in enumerate(result.ts_ns):
        values: dict[str, float] = {}
        for name, column in result.columns.items():
            value = column[i]
            if value is not None and math.isfinite(value):
                values[name] = value
        out.append(Reading(result.device_id, kind, ts, result.seq[i], values, result.quality[i]))
    return out


def _alert_out(alert: Alert) -> AlertOut:
    return AlertOut.model_validate(alert.to_dict())


class _SecurityHeaders:
    """Strict headers on every response; the dashboard runs with a tight CSP."""

    HEADERS = (
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (
            b"content-security-policy",
            b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
        ),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)
