"""MQTT subscription (aiomqtt over paho-mqtt): devices publish, the gateway listens.

One client per broker. It subscribes to every device's topics (the profile's
templates with ``{topic}`` filled in) at QoS `link.qos` in a persistent
session: a fixed client id (derived from the broker and the topics when the
config gives none), ``clean_session=False`` on MQTT 3.1.1, ``clean_start=False``
plus a session expiry on MQTT 5, so messages published while the gateway is
away are delivered when it is back. Given a `Durable` (the gateway's
pipeline), QoS >= 1 messages are acknowledged only once their readings are
durable, so a crash between receipt and the outbox costs a redelivery, not
a message.

Failure modes handled: broker down or restarting (reconnect with capped,
jittered backoff; outage and recovery logged once each), bad credentials or
TLS setup (same loop, the error is in the status), malformed payloads
(counted per device and logged once per device; the client keeps running),
messages on topics no device owns (ignored), a Tasmota LWT "Offline"
(a reading with quality ``disconnected``), and a sink that raises (logged once).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiomqtt
from paho.mqtt import client as mqtt_client
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.errors import DecodeError
from drivers.links import MqttLink, MqttProtocolVersion, SubscribedDevice
from drivers.modbus import backoff_s
from drivers.payloads import decode_payload
from drivers.reading import Quality, Reading
from drivers.status import BusStatus, DeviceState, DeviceStatus

if TYPE_CHECKING:
    from drivers.bus import Durable

log = logging.getLogger("meterwatch.drivers.mqtt")


@dataclass(slots=True)
class _Route:
    device: SubscribedDevice
    template: str
    state: _DeviceState


@dataclass(slots=True)
class _DeviceState:
    device: SubscribedDevice
    status: DeviceStatus
    seq: int
    malformed_logged: bool = False


def default_client_id(link: MqttLink, topics: Sequence[str]) -> str:
    """A client id that stays the same across restarts for the same broker and topics."""
    digest = hashlib.sha256("\n".join([link.host, str(link.port), *sorted(topics)]).encode())
    return f"meterwatch-{digest.hexdigest()[:16]}"


class _Router:
    """Topic -> routes. Exact topics by dict lookup; wildcard templates by matching."""

    def __init__(self, devices: Sequence[SubscribedDevice], status: BusStatus) -> None:
        self.exact: dict[str, list[_Route]] = {}
        self.wild: list[tuple[aiomqtt.Topic | aiomqtt.Wildcard, _Route]] = []
        self.states: list[_DeviceState] = []
        for dev in devices:
            assert dev.profile.mqtt is not None
            first = dev.first_seq if dev.first_seq is not None else time.time_ns() // 10**6
            state = _DeviceState(dev, status.device(dev.id), first)
            self.states.append(state)
            for template in dev.profile.mqtt.topics:
                topic = template.replace("{topic}", dev.topic)
                route = _Route(dev, template, state)
                if "+" in topic or "#" in topic:
                    self.wild.append((aiomqtt.Wildcard(topic), route))
                else:
                    self.exact.setdefault(topic, []).append(route)

    @property
    def topics(self) -> list[str]:
        return sorted({*self.exact, *(str(w.value) for w, _ in self.wild)})

    def routes(self, topic: aiomqtt.Topic) -> list[_Route]:
        found = list(self.exact.get(topic.value, ()))
        found += [r for w, r in self.wild if topic.matches(w)]
        return found


def _handle(route: _Route, payload: bytes, sink: Callable[[Reading], None]) -> Reading | None:
    state = route.state
    st = state.status
    dev = state.device
    assert dev.profile.mqtt is not None
    st.messages += 1
    try:
        decoded = decode_payload(dev.profile.mqtt, payload, template=route.template)
    except DecodeError as exc:
        st.malformed += 1
        st.last_error = f"malformed payload: {exc}"
        if not state.malformed_logged:
            state.malformed_logged = True
            log.warning(
                "%s: malformed payload on %s: %s (counted; logged once)",
                dev.id,
                route.template.replace("{topic}", dev.topic),
                exc,
            )
        return None
    now = time.time_ns()
    if decoded.online is not None:
        if decoded.online:
            return None
        reading = Reading(dev.id, dev.profile.kind, now, state.seq, quality=Quality.DISCONNECTED)
        if st.state is not DeviceState.DOWN:
            log.warning("%s: device reports itself offline (LWT)", dev.id)
        st.state = DeviceState.DOWN
        st.consecutive_failures += 1
        st.last_quality = Quality.DISCONNECTED
    else:
        reading = Reading(dev.id, dev.profile.kind, now, state.seq, decoded.fields)
        if st.state is DeviceState.DOWN:
            log.info("%s: publishing again", dev.id)
        st.state = DeviceState.UP
        st.last_ok_ns = now
        st.consecutive_failures = 0
        st.last_quality = Quality.OK
    state.seq += 1
    st.polls += 1
    st.last_poll_ns = now
    sink(reading)
    return reading


@contextlib.asynccontextmanager
async def _acknowledger(
    client: aiomqtt.Client, durable: Durable | None
) -> AsyncIterator[Callable[[int, int], None]]:
    """`ack(mid, qos)`: acknowledge a message once what was sunk for it is durable."""
    if durable is None:
        yield lambda mid, qos: None  # paho acknowledged it on receipt
        return
    pending: asyncio.Queue[tuple[int, int, int]] = asyncio.Queue()

    async def run() -> None:
        while True:
            position, mid, qos = await pending.get()
            await durable.reached(position)
            client._client.ack(mid, qos)

    def ack(mid: int, qos: int) -> None:
        if qos > 0:
            pending.put_nowait((durable.position(), mid, qos))

    task = asyncio.create_task(run(), name="mqtt-acks")
    try:
        yield ack
    finally:
        # Unacknowledged messages stay with the broker's session for the next connection.
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _client(link: MqttLink, client_id: str) -> aiomqtt.Client:
    v5 = str(link.protocol) == MqttProtocolVersion.V5
    tls_context = None
    if link.tls:
        tls_context = ssl.create_default_context(cafile=str(link.ca_file) if link.ca_file else None)
    properties = None
    if v5:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = link.session_expiry_s
    return aiomqtt.Client(
        link.host,
        link.port,
        identifier=client_id,
        username=link.username,
        password=link.password,
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        clean_session=None if v5 else False,
        # paho refuses clean_start on 3.1.1, where clean_session=False does the job
        clean_start=False if v5 else mqtt_client.MQTT_CLEAN_START_FIRST_ONLY,
        properties=properties,
        keepalive=link.keepalive_s,
        tls_context=tls_context,
        timeout=10.0,
    )


async def subscribe_bus(
    link: MqttLink,
    devices: Sequence[SubscribedDevice],
    sink: Callable[[Reading], None],
    *,
    status: BusStatus,
    durable: Durable | None = None,
) -> None:
    """Subscribe to the devices' topics and emit a reading per good message, forever.

    With `durable`, QoS >= 1 messages are acknowledged (PUBACK) in arrival order
    once the readings sunk for them are durable, not on receipt: a crash in
    between leaves them with the broker's persistent session, which delivers
    them again (at least once, never lost).
    """
    router = _Router(devices, status)
    topics = router.topics
    client_id = link.client_id or default_client_id(link, topics)
    rng = random.Random()  # noqa: S311 - jitter, not security
    failures = 0
    sink_failed = False

    def _safe_sink(reading: Reading) -> None:
        nonlocal sink_failed
        try:
            sink(reading)
        except Exception:
            if not sink_failed:
                sink_failed = True
                log.exception(
                    "%s: the reading sink raised; readings are being lost", link.describe()
                )

    while True:
        try:
            client = _client(link, client_id)
            if durable is not None:
                # paho's switch; aiomqtt passes its messages through unacknowledged then.
                client._client.manual_ack_set(True)
            async with client, _acknowledger(client, durable) as ack:
                status.connected = True
                status.connects += 1
                if failures:
                    log.info(
                        "%s: connected again after %d failed attempt(s)", link.describe(), failures
                    )
                failures = 0
                if topics:
                    await client.subscribe([(t, link.qos) for t in topics])
                async for message in client.messages:
                    payload = message.payload
                    if isinstance(payload, str):
                        data = payload.encode()
                    elif isinstance(payload, bytes | bytearray):
                        data = bytes(payload)
                    else:
                        data = str(payload).encode()
                    for route in router.routes(message.topic):
                        _handle(route, data, _safe_sink)
                    ack(message.mid, message.qos)
        except aiomqtt.MqttError as exc:
            if status.connected:
                status.disconnects += 1
            status.connected = False
            status.last_error = str(exc)
            failures += 1
            if failures == 1:
                log.warning("%s: %s; reconnecting with backoff", link.describe(), exc)
            await asyncio.sleep(
                backoff_s(failures - 1, base_s=0.5, cap_s=link.backoff_cap_s, rng=rng)
            )
        finally:
            status.connected = False
