"""Webhook signatures (pure): HMAC-SHA256 over the timestamp and the body.

Headers on every webhook request::

    X-Meterwatch-Timestamp: <unix seconds when this attempt was sent>
    X-Meterwatch-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>
    X-Meterwatch-Delivery:  <id, the same on every retry of one message>

The timestamp is inside the MAC, so a captured request cannot be replayed
later with a fresh timestamp; a receiver rejects a timestamp further than
its tolerance from its own clock and remembers delivery ids it has seen.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Meterwatch-Signature"
TIMESTAMP_HEADER = "X-Meterwatch-Timestamp"
DELIVERY_HEADER = "X-Meterwatch-Delivery"
EVENT_HEADER = "X-Meterwatch-Event"


def sign(secret: bytes, timestamp_s: int, body: bytes) -> str:
    """The ``X-Meterwatch-Signature`` value for `body` sent at `timestamp_s`."""
    mac = hmac.new(secret, str(timestamp_s).encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: bytes,
    *,
    timestamp: str,
    signature: str,
    body: bytes,
    now_s: float,
    tolerance_s: float = 300.0,
) -> bool:
    """What a receiver does: a fresh timestamp and a matching MAC (constant-time compare)."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now_s - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)
