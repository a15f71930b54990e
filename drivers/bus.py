"""`run_bus`: the one entry point the gateway calls per bus.

Dispatches on the link type: Modbus TCP (devices in parallel, requests
pipelined), RTU over serial or TCP (one request at a time), MQTT
(subscription). Runs until cancelled; cancellation closes the link.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from drivers.links import (
    MqttLink,
    PolledDevice,
    RtuOverTcpLink,
    SerialLink,
    SubscribedDevice,
    TcpLink,
)
from drivers.reading import Reading
from drivers.status import BusStatus

Link = TcpLink | RtuOverTcpLink | SerialLink | MqttLink


class Durable(Protocol):
    """Where the sink's readings become durable (the gateway's pipeline implements it).

    An MQTT bus given one acknowledges a QoS >= 1 message to the broker only
    once the reading made from it is durable, so a crash in between makes the
    broker deliver it again instead of losing it.
    """

    def position(self) -> int:
        """A mark for 'every reading sunk so far'."""
        ...

    async def reached(self, position: int) -> None:
        """Return once every reading sunk before `position` was made durable."""
        ...


async def run_bus(
    link: Link,
    devices: Sequence[PolledDevice] | Sequence[SubscribedDevice],
    sink: Callable[[Reading], None],
    *,
    status: BusStatus | None = None,
    durable: Durable | None = None,
) -> None:
    """Poll or subscribe to `devices` on `link`, calling `sink` for every reading, forever.

    `sink` must not block (put the reading on a queue). Pass a `BusStatus` to
    read the bus's and each device's health while it runs. Pass `durable` to
    have MQTT messages acknowledged only after their readings are durable
    (without it the client acknowledges on receipt).
    """
    status = status if status is not None else BusStatus()
    status.bus = link.describe()
    if isinstance(link, MqttLink):
        from drivers.mqtt import subscribe_bus

        subscribed = [d for d in devices if isinstance(d, SubscribedDevice)]
        _check_all(devices, subscribed, "SubscribedDevice", link)
        await subscribe_bus(link, subscribed, sink, status=status, durable=durable)
        return
    from drivers.modbus import poll_sequential_bus, poll_tcp_bus

    polled = [d for d in devices if isinstance(d, PolledDevice)]
    _check_all(devices, polled, "PolledDevice", link)
    if isinstance(link, TcpLink):
        await poll_tcp_bus(link, polled, sink, status=status)
    else:
        await poll_sequential_bus(link, polled, sink, status=status)


def _check_all(
    devices: Sequence[object], matching: Sequence[object], want: str, link: Link
) -> None:
    if len(matching) != len(devices):
        raise TypeError(f"{link.describe()}: every device on this link must be a {want}")
