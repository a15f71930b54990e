"""The MQTT alert topic against the real Mosquitto: QoS 1, retained state, broker outage."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest

from gateway.alerts import AlertAction, AlertStore
from gateway.delivery import AlertDelivery, Backoff, MqttTarget
from tests.gateway.delivery.conftest import finding
from tests.services import ServiceProcess

pytestmark = pytest.mark.integration

FAST = Backoff(base_s=0.1, cap_s=0.5)


@asynccontextmanager
async def running(delivery: AlertDelivery) -> AsyncIterator[None]:
    task = asyncio.create_task(delivery.run(), name="test-delivery")
    try:
        yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def mosquitto_sub(broker: ServiceProcess, topic: str, *, count: int, wait_s: int) -> list[str]:
    binary = shutil.which("mosquitto_sub")
    assert binary, "mosquitto_sub is not installed (Debian mosquitto-clients)"
    done = subprocess.run(
        [
            binary,
            "-h",
            broker.host,
            "-p",
            str(broker.port),
            "-t",
            topic,
            "-C",
            str(count),
            "-W",
            str(wait_s),
            "-v",
            "-q",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=wait_s + 10,
    )
    return done.stdout.splitlines()


async def test_alert_changes_on_the_topic_and_retained_state(
    tmp_path: Path, store: AlertStore, mosquitto: ServiceProcess
) -> None:
    target = MqttTarget(mosquitto.host, mosquitto.port, topic="mw-test/{site}/alerts")
    delivery = AlertDelivery(tmp_path / "d.sqlite", mqtt=target, backoff=FAST)
    delivery.attach(store)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as sub, running(delivery):
        await sub.subscribe("mw-test/s1/alerts", qos=1)
        change = await store.aingest(finding(), site="s1", evidence_digest="ab" * 32)
        assert change is not None
        msg = await asyncio.wait_for(anext(aiomqtt_messages(sub)), 10)
        body = json.loads(msg.payload)  # type: ignore[arg-type]
        assert body["event"] == "alert.created" and body["alert"]["id"] == change.alert.id
        assert msg.qos == 1

        # a client that connects later sees the active alert's retained state (a real peer)
        lines = await asyncio.to_thread(
            mosquitto_sub, mosquitto, f"mw-test/s1/alerts/{change.alert.id}", count=1, wait_s=5
        )
        assert len(lines) == 1
        state = json.loads(lines[0].split(" ", 1)[1])
        assert state["status"] == "open" and state["device"] == "n1"

        await store.aact(change.alert.id, AlertAction.RESOLVE, who="insp")
        msg = await asyncio.wait_for(anext(aiomqtt_messages(sub)), 10)
        assert json.loads(msg.payload)["event"] == "alert.resolved"  # type: ignore[arg-type]
        for _ in range(400):
            if delivery.stats()["mqtt"]["pending"] == 0:
                break
            await asyncio.sleep(0.05)
    # the latest tree head is retained for whoever collects roots
    lines = await asyncio.to_thread(
        mosquitto_sub, mosquitto, "mw-test/s1/alerts/ledger", count=1, wait_s=5
    )
    assert json.loads(lines[0].split(" ", 1)[1])["size"] == store.ledger.size
    # resolved: the retained state is cleared
    lines = await asyncio.to_thread(
        mosquitto_sub, mosquitto, f"mw-test/s1/alerts/{change.alert.id}", count=1, wait_s=1
    )
    assert lines == []
    delivery.close()


def aiomqtt_messages(client: aiomqtt.Client) -> AsyncIterator[aiomqtt.Message]:
    return client.messages.__aiter__()


async def test_broker_outage_loses_nothing(
    tmp_path: Path, store: AlertStore, mosquitto: ServiceProcess
) -> None:
    target = MqttTarget(mosquitto.host, mosquitto.port, topic="mw-outage/{site}/alerts")
    delivery = AlertDelivery(tmp_path / "d.sqlite", mqtt=target, backoff=FAST)
    delivery.attach(store)
    try:
        async with running(delivery):
            for _ in range(400):
                if delivery.mqtt is not None and delivery.mqtt.connected:
                    break
                await asyncio.sleep(0.05)
            await asyncio.to_thread(mosquitto.stop)
            changes = [
                await store.aingest(finding(f"n{i}"), site="s1", evidence_digest="ab" * 32)
                for i in range(3)
            ]
            await asyncio.sleep(0.5)
            # per change: the event, the alert's retained state, the retained tree head
            assert delivery.stats()["mqtt"]["pending"] == 9
            await asyncio.to_thread(mosquitto.start)
            for _ in range(400):
                if delivery.stats()["mqtt"]["pending"] == 0:
                    break
                await asyncio.sleep(0.05)
            assert delivery.stats()["mqtt"]["pending"] == 0
    finally:
        mosquitto.start()
    # every alert's retained state reached the broker (persistence is on in the fixture)
    lines = await asyncio.to_thread(
        mosquitto_sub, mosquitto, "mw-outage/s1/alerts/+", count=4, wait_s=5
    )
    retained = dict(line.split(" ", 1) for line in lines)
    assert json.loads(retained.pop("mw-outage/s1/alerts/ledger"))["size"] == store.ledger.size
    ids = sorted(json.loads(body)["id"] for body in retained.values())
    assert ids == sorted(c.alert.id for c in changes if c is not None)
    delivery.close()
