"""`AlertDelivery`: every alert change to every webhook and the MQTT alert topic, durably.

Wire it to the store once: ``delivery.attach(store)`` registers `on_change`
as a store listener, which runs right after each alert change commits and
puts one message per target into the durable queue (``delivery.sqlite``);
``await delivery.run()`` (a named task in the gateway's TaskGroup) sends
them, one ordered worker per target. A crash between the alert commit and
the queue insert (a few microseconds) could lose that change's messages;
everything queued survives restarts and outages.

The message body (webhooks and ``<topic>``) is the JSON of
`AlertChange.to_dict()` plus ``event`` (``alert.created``, ``alert.updated``,
``alert.acknowledged``, ...), ``id`` (``<site>-<ledger index>``, unique per
change and the same on every retry: deduplicate on it), ``site``, and
``ledger`` (the change's ledger entry, the tree head, signed if a key is
configured, and the inclusion proof). The MQTT topic also keeps the latest
tree head retained on ``<topic>/ledger``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from anomaly.finding import Severity
from drivers.reading import now_ns
from gateway.alerts.model import SEVERITY_RANK, AlertChange
from gateway.alerts.store import AlertStore
from gateway.config import Settings
from gateway.delivery.mqtt import TARGET as MQTT_TARGET
from gateway.delivery.mqtt import MqttAlertPublisher, MqttTarget
from gateway.delivery.queue import DeliveryQueue, Message
from gateway.delivery.webhook import WebhookSender, WebhookTarget
from gateway.delivery.worker import Backoff, drain
from gateway.ledger.store import Ledger


def ledger_proof(ledger: Ledger, index: int) -> dict[str, Any]:
    """The change's ledger entry (exact text), the current tree head, and the inclusion proof."""
    head = ledger.head()
    entry = ledger.entry(index)
    return {
        "index": index,
        "entry": entry.raw.decode("utf-8"),
        "leaf_hash": entry.leaf_hash,
        "proof": [p.hex() for p in ledger.inclusion_proof(index, head.size)],
        "head": head.to_dict(),
    }


def change_body(change: AlertChange, *, ledger: Ledger | None = None) -> tuple[str, str, bytes]:
    """``(uid, event, body)`` of the message for one change.

    With `ledger`, the body carries ``ledger``: the change's entry, the
    (signed) tree head and the inclusion proof, so a receiver such as a
    central office can keep the roots and check every entry independently.
    """
    uid = f"{change.alert.site}-{change.ledger_index}"
    event = f"alert.{change.kind.value}"
    doc: dict[str, Any] = {"event": event, "id": uid, "site": change.alert.site}
    doc.update(change.to_dict())
    if ledger is not None:
        doc["ledger"] = ledger_proof(ledger, change.ledger_index)
    # Non-finite scores become null: the body must be strict JSON for any receiver.
    body = json.dumps(_finite(doc), separators=(",", ":"), allow_nan=False).encode("utf-8")
    return uid, event, body


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class AlertDelivery:
    """Durable fan-out of alert changes to webhooks and an MQTT topic."""

    def __init__(
        self,
        queue_path: str | Path,
        *,
        webhooks: Sequence[WebhookTarget] = (),
        mqtt: MqttTarget | None = None,
        backoff: Backoff | None = None,
        seed: int | None = None,
    ) -> None:
        self.queue = DeliveryQueue(queue_path)
        self.webhooks = tuple(webhooks)
        names = [w.target for w in self.webhooks]
        if len(set(names)) != len(names):
            raise ValueError("alerts.webhooks: the same URL is configured twice")
        self.mqtt = MqttAlertPublisher(mqtt, backoff=backoff) if mqtt else None
        self.backoff = backoff or Backoff()
        self._rng = random.Random(seed)  # noqa: S311 - jitter, not cryptography
        self._wake: dict[str, asyncio.Event] = {t: asyncio.Event() for t in self.targets}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ledger: Ledger | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, path: str | Path | None = None) -> AlertDelivery:
        """From `alerts.webhooks` and `alerts.mqtt_bus`; queue in ``<data_dir>/delivery.sqlite``."""
        return cls(
            path or settings.storage.data_dir / "delivery.sqlite",
            webhooks=[WebhookTarget.from_settings(w) for w in settings.alerts.webhooks],
            mqtt=MqttTarget.from_settings(settings),
        )

    @property
    def targets(self) -> list[str]:
        return [w.target for w in self.webhooks] + ([MQTT_TARGET] if self.mqtt else [])

    def attach(self, store: AlertStore) -> None:
        """Register `on_change` as a listener of `store`; bodies then carry ledger proofs."""
        self.ledger = store.ledger
        store.add_listener(self.on_change)

    def on_change(self, change: AlertChange) -> None:
        """Queue the messages for one change (sync, any thread; one transaction)."""
        uid, event, body = change_body(change, ledger=self.ledger)
        messages: list[Message] = []
        rank = SEVERITY_RANK[change.alert.severity]
        for hook in self.webhooks:
            if rank >= SEVERITY_RANK[Severity(hook.min_severity)]:
                messages.append(Message(hook.target, uid, event, body))
        if self.mqtt is not None:
            topic = self.mqtt.target.topic.format(site=change.alert.site)
            state = b"" if not change.alert.status.active else _state_body(change)
            messages += [
                Message(MQTT_TARGET, uid, event, body, topic=topic),
                Message(
                    MQTT_TARGET,
                    f"{uid}-state",
                    "alert.state",
                    state,
                    topic=f"{topic}/{change.alert.id}",
                    retain=True,
                ),
            ]
            if self.ledger is not None:
                # The latest (signed) tree head, retained: what a central office collects.
                head = json.dumps(self.ledger.head().to_dict()).encode("utf-8")
                messages.append(
                    Message(
                        MQTT_TARGET,
                        f"{uid}-head",
                        "ledger.head",
                        head,
                        topic=f"{topic}/ledger",
                        retain=True,
                    )
                )
        self.queue.put_many(messages, now_ns=now_ns())
        woken = {m.target for m in messages}
        loop = self._loop
        if loop is not None:
            for target in woken:
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    loop.call_soon_threadsafe(self._wake[target].set)

    async def run(self) -> None:
        """Send queued messages until cancelled: one named task per target."""
        self._loop = asyncio.get_running_loop()
        for event in self._wake.values():
            event.set()  # look at the queue once at start: messages from before a restart
        async with httpx.AsyncClient() as client, asyncio.TaskGroup() as tg:
            for hook in self.webhooks:
                sender = WebhookSender(hook, client)
                tg.create_task(
                    drain(
                        hook.target,
                        self.queue,
                        sender.send,
                        wake=self._wake[hook.target],
                        backoff=self.backoff,
                        rng=self._rng,
                    ),
                    name=f"alert-delivery-{hook.target}",
                )
            if self.mqtt is not None:
                tg.create_task(
                    self.mqtt.run(self.queue, wake=self._wake[MQTT_TARGET], rng=self._rng),
                    name="alert-delivery-mqtt",
                )

    def stats(self) -> dict[str, dict[str, int]]:
        """Pending and dead messages per target (for /metrics and health)."""
        out = {t: {"pending": 0, "dead": 0} for t in self.targets}
        out.update(self.queue.stats())
        return out

    def close(self) -> None:
        self._loop = None
        self.queue.close()


def _state_body(change: AlertChange) -> bytes:
    doc = {"site": change.alert.site, **change.alert.to_dict()}
    return json.dumps(_finite(doc), separators=(",", ":"), allow_nan=False).encode("utf-8")
