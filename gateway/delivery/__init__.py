"""Alert delivery: signed webhooks and an MQTT alert topic, through a durable queue.

Public API::

    delivery = AlertDelivery.from_settings(settings, *, path=None)   # <data_dir>/delivery.sqlite
    delivery = AlertDelivery(queue_path, *, webhooks=(WebhookTarget(...),),
                             mqtt=MqttTarget(...) | None, backoff=Backoff(), seed=None)
    delivery.attach(alert_store)        # store.add_listener(delivery.on_change)
    await delivery.run()                # forever; run it as a named task in the TaskGroup
    delivery.stats() -> {target: {"pending": n, "dead": m}}
    delivery.close()

    sign(secret, timestamp_s, body) / verify(...)   # for receivers; see signing.py

See `service`, `webhook`, `mqtt`, `queue` and `worker` for formats and failure modes.
"""

from gateway.delivery.mqtt import MqttAlertPublisher, MqttTarget
from gateway.delivery.queue import Delivery, DeliveryQueue, Message
from gateway.delivery.service import AlertDelivery, change_body
from gateway.delivery.signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
    verify,
)
from gateway.delivery.webhook import WebhookSender, WebhookTarget
from gateway.delivery.worker import Backoff, ConnectionLost, DeliveryError

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "AlertDelivery",
    "Backoff",
    "ConnectionLost",
    "Delivery",
    "DeliveryError",
    "DeliveryQueue",
    "Message",
    "MqttAlertPublisher",
    "MqttTarget",
    "WebhookSender",
    "WebhookTarget",
    "change_body",
    "sign",
    "verify",
]
