"""An MQTT message is acknowledged to the broker only once its reading is durable.

Against a real Mosquitto: the gateway "crashes" (its bus task is cancelled)
after a reading was handed to the pipeline but before the pipeline persisted
it. With the pipeline as the bus's `durable`, the broker still holds the
message and delivers it again to the next run; without it (paho's default
acknowledge-on-receipt) the message is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Sequence

import pytest

from drivers.bus import run_bus
from drivers.links import MqttLink, SubscribedDevice
from drivers.profiles import load_profile
from drivers.reading import DeviceKind, Reading
from drivers.status import BusStatus
from gateway.pipeline import Pipeline
from tests.services import ServiceProcess

pytestmark = pytest.mark.integration

DEVICE = SubscribedDevice("w1", load_profile("json_generic", kind=DeviceKind.WATER), "dur/w1")


async def _publish(broker: ServiceProcess, volume: float) -> None:
    exe = shutil.which("mosquitto_pub")
    assert exe
    proc = await asyncio.create_subprocess_exec(
        exe,
        "-h",
        broker.host,
        "-p",
        str(broker.port),
        "-q",
        "1",
        "-t",
        "dur/w1",
        "-m",
        json.dumps({"volume_forward_m3": volume}),
    )
    assert await proc.wait() == 0


async def _run_once(
    broker: ServiceProcess,
    client_id: str,
    *,
    persist_blocks: bool,
    use_durable: bool,
    publish: float | None,
) -> list[Reading]:
    """Run a bus until a reading arrives (or 3 s pass), then cancel it: a crash."""
    stored: list[Reading] = []
    seen: list[Reading] = []
    never = asyncio.Event()

    async def persist(batch: Sequence[Reading]) -> None:
        if persist_blocks:
            await never.wait()  # the outbox append never completes before the crash
        stored.extend(batch)

    pipe = Pipeline(persist=persist, batch_wait_s=0.01)
    pipe_task = asyncio.create_task(pipe.run())

    def sink(reading: Reading) -> None:
        seen.append(reading)
        pipe.submit(reading)

    link = MqttLink(broker.host, broker.port, client_id=client_id, qos=1)
    status = BusStatus()
    bus = asyncio.create_task(
        run_bus(link, [DEVICE], sink, status=status, durable=pipe if use_durable else None)
    )
    async with asyncio.timeout(10):
        while not status.connected:  # noqa: ASYNC110 - the driver sets a flag
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # SUBACK
    if publish is not None:
        await _publish(broker, publish)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(3):
            while not seen:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # give an (unwanted) early PUBACK every chance to go out
    for task in (bus, pipe_task):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return seen


@pytest.mark.parametrize("use_durable", [True, False])
async def test_message_survives_a_crash_before_it_was_persisted(
    mosquitto: ServiceProcess, use_durable: bool
) -> None:
    client_id = f"mw-durable-{use_durable}"
    # Establish the persistent session first, so the broker queues for it.
    await _run_once(
        mosquitto, client_id, persist_blocks=False, use_durable=use_durable, publish=None
    )
    first = await _run_once(
        mosquitto, client_id, persist_blocks=True, use_durable=use_durable, publish=41.5
    )
    assert [r.fields["volume_forward_m3"] for r in first] == [41.5]
    again = await _run_once(
        mosquitto, client_id, persist_blocks=False, use_durable=use_durable, publish=None
    )
    redelivered = [r.fields["volume_forward_m3"] for r in again]
    if use_durable:
        assert redelivered == [41.5]  # still the broker's: delivered again, not lost
    else:
        assert redelivered == []  # acknowledged on receipt: lost with the crash
