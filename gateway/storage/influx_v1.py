"""InfluxDB over the v1 HTTP API: ``/write`` (line protocol, gzip) and ``/query`` (InfluxQL).

InfluxDB 1.x serves this API natively and 2.x/3.x for compatibility, so the
InfluxQL reader here is also what `InfluxV2Store` queries with.

Failure modes handled: connection errors, timeouts, 5xx, 429 and auth
failures (401/403) raise `SinkUnavailable` (the forwarder retries them); 400
(parse error, field type conflict, partial write) and 413 raise
`SinkRejected` with the server's message (the forwarder quarantines the
payload); a missing database (404 on write) is created once and the write
retried; an ``error`` in a query answer raises `QueryError`. Credentials go
in an Authorization header, never in a URL, so they do not reach logs.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Sequence
from typing import Any

import httpx

from drivers.reading import DeviceKind, Reading
from gateway.storage.errors import (
    QueryError,
    SinkRejected,
    SinkUnavailable,
    StorageError,
    gunzip_text,
)
from gateway.storage.query import (
    Agg,
    QueryResult,
    influxql_float_fields,
    influxql_history,
    influxql_latest,
    quote_ident,
    result_from_series,
    series_of,
    validate_query,
)
from gateway.storage.schema import (
    FIELD_QUALITY,
    FIELD_SEQ,
    RESERVED_FIELDS,
    ReadingEncoder,
)

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({401, 403, 408, 429})


def auth_headers(
    *, username: str | None, password: str | None, token: str | None
) -> tuple[dict[str, str], httpx.BasicAuth | None]:
    """Headers and auth for a v1 API: a token wins over user/password."""
    if token:
        return {"Authorization": f"Token {token}"}, None
    if username:
        return {}, httpx.BasicAuth(username, password or "")
    return {}, None


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and "error" in body:
            return str(body["error"])[:500]
    except ValueError:
        pass
    return response.text[:500] or response.reason_phrase


class InfluxQLReader:
    """History queries over ``/query`` for one site's readings."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        database: str,
        retention_policy: str | None,
        site_id: str,
        backend: str,
    ) -> None:
        self._client = client
        self._database = database
        self._rp = retention_policy
        self._site_id = site_id
        self._backend = backend

    async def influxql(self, statement: str, *, post: bool = False) -> dict[str, Any]:
        """Run one InfluxQL statement; the parsed JSON answer."""
        params = {"db": self._database, "epoch": "ns", "q": statement}
        if self._rp:
            params["rp"] = self._rp
        try:
            if post:
                response = await self._client.post("/query", params=params)
            else:
                response = await self._client.get("/query", params=params)
        except httpx.HTTPError as exc:
            raise SinkUnavailable(f"query failed: {exc!r}", backend=self._backend) from exc
        if response.status_code >= 500 or response.status_code in RETRYABLE_STATUS:
            raise SinkUnavailable(
                f"query answered {response.status_code}: {_error_text(response)}",
                backend=self._backend,
                status=response.status_code,
            )
        try:
            answer = response.json()
        except ValueError:
            raise QueryError(
                f"query answered {response.status_code} without JSON", backend=self._backend
            ) from None
        if response.status_code != 200 and "error" not in answer:
            raise QueryError(f"query answered {response.status_code}", backend=self._backend)
        if not isinstance(answer, dict):
            raise QueryError("query answer is not a JSON object", backend=self._backend)
        return answer

    async def _float_fields(self) -> list[str]:
        series = series_of(await self.influxql(influxql_float_fields()))
        names: dict[str, None] = {}
        for s in series:
            for key, ftype in s.get("values") or []:
                if ftype == "float" and key not in RESERVED_FIELDS:
                    names[key] = None
        return sorted(names)

    async def query(
        self,
        device_id: str,
        *,
        fields: Sequence[str] | None = None,
        start_ns: int,
        end_ns: int,
        every_s: float | None = None,
        agg: Agg | str = Agg.MEAN,
        limit: int | None = None,
    ) -> QueryResult:
        spec = validate_query(
            device_id,
            fields=fields,
            start_ns=start_ns,
            end_ns=end_ns,
            every_s=every_s,
            agg=agg,
            limit=limit,
        )
        names: list[str] | None = list(spec.fields) if spec.fields is not None else None
        if names is None and spec.every_ns is not None:
            names = await self._float_fields()
            if not names:
                return QueryResult(device_id, [], {}, agg=spec.agg, every_s=spec.every_ns / 1e9)
        statement = influxql_history(spec, site_id=self._site_id, fields=names)
        try:
            series = series_of(await self.influxql(statement))
        except QueryError as exc:
            if "database not found" in str(exc):
                series = []
            else:
                raise
        return result_from_series(spec, series, names)

    async def latest(self, device_id: str) -> Reading | None:
        if not isinstance(device_id, str) or not device_id:
            raise QueryError("device_id must be a non-empty string")
        try:
            series = series_of(
                await self.influxql(influxql_latest(device_id, site_id=self._site_id))
            )
        except QueryError as exc:
            if "database not found" in str(exc):
                return None
            raise
        best: tuple[int, str, dict[str, Any]] | None = None
        for s in series:
            columns = list(s.get("columns") or [])
            for values in s.get("values") or []:
                row = dict(zip(columns, values, strict=False))
                ts = int(row.pop("time"))
                if best is None or ts > best[0]:
                    best = (ts, str(s.get("name")), row)
        if best is None:
            return None
        ts, measurement, row = best
        try:
            kind = DeviceKind(measurement)
        except ValueError:
            return None
        values = {
            k: float(v)
            for k, v in row.items()
            if k not in RESERVED_FIELDS
            and v is not None
            and isinstance(v, int | float)
            and not isinstance(v, bool)
        }
        return Reading(
            device_id,
            kind,
            ts,
            int(row.get(FIELD_SEQ) or 0),
            values,
            str(row.get(FIELD_QUALITY) or ""),
        )


class InfluxQLQueries:
    """The read side both InfluxDB stores share: InfluxQL over `/query` via `reader`."""

    reader: InfluxQLReader

    async def query(
        self,
        device_id: str,
        *,
        fields: Sequence[str] | None = None,
        start_ns: int,
        end_ns: int,
        every_s: float | None = None,
        agg: Agg | str = Agg.MEAN,
        limit: int | None = None,
    ) -> QueryResult:
        return await self.reader.query(
            device_id,
            fields=fields,
            start_ns=start_ns,
            end_ns=end_ns,
            every_s=every_s,
            agg=agg,
            limit=limit,
        )

    async def latest(self, device_id: str) -> Reading | None:
        return await self.reader.latest(device_id)


class InfluxV1Store(InfluxQLQueries):
    """`ReadingStore` on the InfluxDB v1 HTTP API."""

    name = "influxdb_v1"

    def __init__(
        self,
        *,
        url: str,
        database: str,
        encoder: ReadingEncoder,
        retention_policy: str | None = None,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout_s: float = 10.0,
        gzip_body: bool = True,
        verify_tls: bool = True,
        create_database: bool = True,
    ) -> None:
        headers, auth = auth_headers(username=username, password=password, token=token)
        self._client = httpx.AsyncClient(
            base_url=url,
            headers=headers,
            auth=auth,
            timeout=timeout_s,
            verify=verify_tls,
        )
        self._database = database
        self._rp = retention_policy
        self._encoder = encoder
        self._gzip = gzip_body
        self._create = create_database
        self._created = False
        self.reader = InfluxQLReader(
            self._client,
            database=database,
            retention_policy=retention_policy,
            site_id=encoder.site_id,
            backend=self.name,
        )

    async def ensure_database(self) -> bool:
        """``CREATE DATABASE`` (idempotent); False (logged) if the server refused."""
        try:
            series_of(
                await self.reader.influxql(
                    f"CREATE DATABASE {quote_ident(self._database)}", post=True
                )
            )
        except (QueryError, SinkUnavailable) as exc:
            log.warning(
                "cannot create database", extra={"database": self._database, "error": str(exc)}
            )
            return False
        self._created = True
        return True

    async def write(self, readings: Sequence[Reading]) -> None:
        if not readings:
            return
        body = "\n".join(self._encoder.line(r) for r in readings).encode() + b"\n"
        await self.write_gzip(gzip.compress(body, compresslevel=1), points=len(readings))

    async def write_gzip(self, body: bytes, *, points: int) -> None:
        if not self._gzip:
            await self._post(gunzip_text(body, backend=self.name).encode(), gzipped=False)
        else:
            await self._post(body, gzipped=True)

    async def _post(self, body: bytes, *, gzipped: bool) -> None:
        params = {"db": self._database, "precision": "ns"}
        if self._rp:
            params["rp"] = self._rp
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        for attempt in range(2):
            try:
                response = await self._client.post(
                    "/write", params=params, content=body, headers=headers
                )
            except httpx.HTTPError as exc:
                raise SinkUnavailable(f"write failed: {exc!r}", backend=self.name) from exc
            status = response.status_code
            if status in (200, 204):
                return
            if (
                status == 404
                and attempt == 0
                and self._create
                and "database not found" in response.text
                and await self.ensure_database()
            ):
                continue
            message = f"write answered {status}: {_error_text(response)}"
            if status >= 500 or status in RETRYABLE_STATUS or status == 404:
                raise SinkUnavailable(message, backend=self.name, status=status)
            raise SinkRejected(message, backend=self.name, status=status)
        raise StorageError("unreachable", backend=self.name)  # pragma: no cover

    async def close(self) -> None:
        await self._client.aclose()
