"""InfluxDB 2.x: writes through influxdb-client (URL, token, org, bucket).

Writes use the client's synchronous write API in a dedicated single thread
(the client is blocking), with its own retries switched off: retrying is the
forwarder's job, and it must see every failure to keep order and metrics.
History queries use InfluxQL over the 2.x v1-compatibility ``/query``
endpoint with the token, where the bucket's (virtual) DBRP mapping makes the
bucket name the database; so both InfluxDB stores answer with the same code.

Failure modes handled: connection errors and 5xx/429/401/403 answers raise
`SinkUnavailable`; 400/413/422 raise `SinkRejected` with the server's message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from drivers.reading import Reading
from gateway.storage.errors import SinkRejected, SinkUnavailable, gunzip_text
from gateway.storage.influx_v1 import (
    RETRYABLE_STATUS,
    InfluxQLQueries,
    InfluxQLReader,
    auth_headers,
)
from gateway.storage.schema import ReadingEncoder

log = logging.getLogger(__name__)


class InfluxV2Store(InfluxQLQueries):
    """`ReadingStore` on InfluxDB 2.x (writes via influxdb-client, reads via InfluxQL)."""

    name = "influxdb_v2"

    def __init__(
        self,
        *,
        url: str,
        token: str,
        org: str,
        bucket: str,
        encoder: ReadingEncoder,
        timeout_s: float = 10.0,
        gzip_body: bool = True,
        verify_tls: bool = True,
    ) -> None:
        self._bucket = bucket
        self._org = org
        self._encoder = encoder
        self._client: Any = InfluxDBClient(
            url=url,
            token=token,
            org=org,
            timeout=int(timeout_s * 1000),
            enable_gzip=gzip_body,
            verify_ssl=verify_tls,
            retries=False,
        )
        self._write_api: Any = self._client.write_api(write_options=SYNCHRONOUS)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="influx-v2")
        headers, _ = auth_headers(username=None, password=None, token=token)
        self._http = httpx.AsyncClient(
            base_url=url, headers=headers, timeout=timeout_s, verify=verify_tls
        )
        self.reader = InfluxQLReader(
            self._http,
            database=bucket,
            retention_policy=None,
            site_id=encoder.site_id,
            backend=self.name,
        )

    def _write_sync(self, text: str) -> None:
        try:
            self._write_api.write(
                bucket=self._bucket, org=self._org, record=text, write_precision=WritePrecision.NS
            )
        except ApiException as exc:
            status = int(exc.status or 0)
            message = f"write answered {status}: {str(exc.body or exc.reason)[:500]}"
            if status >= 500 or status in RETRYABLE_STATUS or status in {0, 404}:
                raise SinkUnavailable(message, backend=self.name, status=status) from None
            raise SinkRejected(message, backend=self.name, status=status) from None
        except Exception as exc:  # urllib3 connection errors and the like
            raise SinkUnavailable(f"write failed: {exc!r}", backend=self.name) from None

    async def write(self, readings: Sequence[Reading]) -> None:
        if not readings:
            return
        text = "\n".join(self._encoder.line(r) for r in readings)
        await asyncio.get_running_loop().run_in_executor(self._executor, self._write_sync, text)

    async def write_gzip(self, body: bytes, *, points: int) -> None:
        text = gunzip_text(body, backend=self.name)
        await asyncio.get_running_loop().run_in_executor(self._executor, self._write_sync, text)

    async def close(self) -> None:
        await self._http.aclose()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._client.close)
        self._executor.shutdown(wait=True)
