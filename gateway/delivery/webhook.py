"""Webhook delivery: signed JSON POSTs (see `gateway.delivery.signing` for the headers).

Any 2xx confirms a message; anything else (other statuses, timeouts,
connection errors) is retried with backoff. Redirects are not followed (a
redirect is a misconfigured URL, and following it could leak the body).
The secret and the URL's query string are never logged.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from anomaly.finding import Severity
from gateway.config import WebhookSettings
from gateway.delivery.queue import Delivery
from gateway.delivery.signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
)
from gateway.delivery.worker import DeliveryError


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """One webhook receiver. `name` keys its queue (derived from the URL by default)."""

    url: str
    secret: bytes = field(repr=False)
    min_severity: Severity = Severity.WARNING
    timeout_s: float = 5.0
    name: str = ""

    @property
    def target(self) -> str:
        return f"webhook:{self.name or hashlib.sha256(self.url.encode()).hexdigest()[:12]}"

    @property
    def safe_url(self) -> str:
        """The URL without query string or credentials, for logs."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"

    @classmethod
    def from_settings(cls, ws: WebhookSettings) -> WebhookTarget:
        return cls(
            url=ws.url,
            secret=ws.secret.get_secret_value().encode("utf-8"),
            min_severity=Severity(ws.min_severity),
            timeout_s=ws.timeout_s,
        )


class WebhookSender:
    """Sends queued messages to one `WebhookTarget` over a shared httpx client."""

    def __init__(self, target: WebhookTarget, client: httpx.AsyncClient) -> None:
        self.target = target
        self._client = client

    async def send(self, delivery: Delivery) -> None:
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "meterwatch",
            TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: sign(self.target.secret, ts, delivery.payload),
            DELIVERY_HEADER: delivery.uid,
            EVENT_HEADER: delivery.event,
        }
        try:
            response = await self._client.post(
                self.target.url,
                content=delivery.payload,
                headers=headers,
                timeout=self.target.timeout_s,
                follow_redirects=False,
            )
        except httpx.HTTPError as exc:
            raise DeliveryError(
                f"{self.target.safe_url}: {type(exc).__name__}", target=self.target.target
            ) from None
        if not 200 <= response.status_code < 300:
            raise DeliveryError(
                f"{self.target.safe_url} answered HTTP {response.status_code}",
                target=self.target.target,
            )
