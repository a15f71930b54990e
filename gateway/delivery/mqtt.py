"""The MQTT alert topic: every alert change as JSON, QoS 1, plus retained per-alert state.

Topics (``alerts.mqtt_topic``, default ``meterwatch/{site}/alerts``)::

    <topic>              one message per change (not retained)
    <topic>/<alert_id>   the alert's current state, retained while it is active;
                         cleared (empty retained message) once it is resolved or dismissed

A message leaves the durable queue only after the broker's PUBACK. A lost
connection is retried with capped jittered backoff (logged once when lost,
once when back); pending messages wait in the queue meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from dataclasses import dataclass, field

import aiomqtt

from gateway.config import MqttBus, MqttProtocol, Settings
from gateway.delivery.queue import Delivery, DeliveryQueue
from gateway.delivery.worker import Backoff, ConnectionLost, drain

log = logging.getLogger("gateway.delivery")

TARGET = "mqtt"


@dataclass(frozen=True, slots=True)
class MqttTarget:
    """Where to publish alerts. `topic` may contain ``{site}``."""

    host: str
    port: int = 1883
    topic: str = "meterwatch/{site}/alerts"
    client_id: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None
    protocol: MqttProtocol = MqttProtocol.V5
    keepalive_s: int = 30
    publish_timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> MqttTarget | None:
        """The target for `alerts.mqtt_bus`, or None if alerts are not published on MQTT."""
        bus_id = settings.alerts.mqtt_bus
        if bus_id is None:
            return None
        bus = settings.bus(bus_id)
        if not isinstance(bus, MqttBus):  # the config validator already refuses this
            raise ValueError(f"alerts.mqtt_bus: bus {bus_id!r} is not an MQTT bus")
        return cls(
            host=bus.host,
            port=bus.port,
            topic=settings.alerts.mqtt_topic,
            client_id=f"{bus.client_id}-alerts" if bus.client_id else None,
            username=bus.username,
            password=bus.password.get_secret_value() if bus.password else None,
            tls=bus.tls,
            ca_file=str(bus.ca_file) if bus.ca_file else None,
            protocol=bus.protocol,
            keepalive_s=bus.keepalive_s,
        )


class MqttAlertPublisher:
    """Connects, drains the ``mqtt`` queue target with QoS 1, reconnects when needed."""

    def __init__(self, target: MqttTarget, *, backoff: Backoff | None = None) -> None:
        self.target = target
        self.backoff = backoff or Backoff(base_s=0.5, cap_s=60.0)
        self.connected = False

    def _client(self) -> aiomqtt.Client:
        t = self.target
        tls_context = None
        if t.tls:
            tls_context = ssl.create_default_context(cafile=t.ca_file)
        return aiomqtt.Client(
            t.host,
            t.port,
            username=t.username,
            password=t.password,
            identifier=t.client_id,
            protocol=(
                aiomqtt.ProtocolVersion.V5
                if t.protocol is MqttProtocol.V5
                else aiomqtt.ProtocolVersion.V311
            ),
            keepalive=t.keepalive_s,
            tls_context=tls_context,
            timeout=t.publish_timeout_s,
        )

    async def run(self, queue: DeliveryQueue, *, wake: asyncio.Event, rng: random.Random) -> None:
        """Publish queued messages forever (until cancelled)."""
        failures = 0
        while True:
            try:
                async with self._client() as client:
                    if failures:
                        log.info(
                            "alert MQTT broker %s:%d reachable again",
                            self.target.host,
                            self.target.port,
                        )
                    failures = 0
                    self.connected = True

                    async def send(d: Delivery, client: aiomqtt.Client = client) -> None:
                        try:
                            await client.publish(
                                d.topic or self.target.topic,
                                d.payload,
                                qos=1,
                                retain=d.retain,
                                timeout=self.target.publish_timeout_s,
                            )
                        except aiomqtt.MqttError as exc:
                            raise ConnectionLost(str(exc), target=TARGET) from None

                    await drain(TARGET, queue, send, wake=wake, backoff=self.backoff, rng=rng)
            except (aiomqtt.MqttError, ConnectionLost) as exc:
                self.connected = False
                failures += 1
                if failures == 1:
                    log.warning(
                        "alert MQTT broker %s:%d unreachable: %s (retrying with backoff)",
                        self.target.host,
                        self.target.port,
                        exc,
                    )
                await asyncio.sleep(self.backoff.delay_s(failures, rng))
