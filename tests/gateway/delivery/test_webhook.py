"""Webhooks against a real local HTTP receiver: signed, retried with backoff, durable."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from anomaly.finding import Severity
from gateway.alerts import AlertAction, AlertStore
from gateway.delivery import AlertDelivery, Backoff, WebhookTarget
from gateway.evidence.verify_bundle import leaf_hash, root_from_inclusion
from tests.gateway.delivery.conftest import Receiver, finding
from tests.services import free_port

SECRET = b"a-real-secret-of-32-characters!!"
FAST = Backoff(base_s=0.05, cap_s=0.2)


@asynccontextmanager
async def running(delivery: AlertDelivery) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(delivery.run(), name="test-delivery")
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def check_signature(headers: dict[str, str], body: bytes) -> None:
    ts = headers["x-meterwatch-timestamp"]
    assert abs(time.time() - int(ts)) < 60
    mac = hmac.new(SECRET, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["x-meterwatch-signature"] == f"sha256={mac}"


async def test_changes_arrive_signed_and_in_order(
    tmp_path: Path, store: AlertStore, receiver: Receiver
) -> None:
    delivery = AlertDelivery(
        tmp_path / "delivery.sqlite",
        webhooks=[WebhookTarget(receiver.url, SECRET)],
        backoff=FAST,
    )
    delivery.attach(store)
    async with running(delivery):
        change = await store.aingest(finding(), site="s1", evidence_digest="ab" * 32)
        assert change is not None
        await store.aact(change.alert.id, AlertAction.ACKNOWLEDGE, who="insp", note="on it")
        got = await asyncio.to_thread(receiver.wait_for, 2)
        target = delivery.webhooks[0].target
        await until(lambda: delivery.stats()[target]["pending"] == 0)
    assert len(got) == 2
    bodies = [json.loads(r.body) for r in got]
    assert [b["event"] for b in bodies] == ["alert.created", "alert.acknowledged"]
    assert bodies[1]["alert"]["status"] == "acknowledged" and bodies[1]["who"] == "insp"
    for r, b in zip(got, bodies, strict=True):
        check_signature(r.headers, r.body)
        assert r.headers["x-meterwatch-delivery"] == b["id"] == f"s1-{b['ledger_index']}"
        assert r.headers["content-type"] == "application/json"
        assert r.path == "/hook?token=abc"
        # the body carries the change's ledger entry with a proof to the tree head
        led = b["ledger"]
        entry = json.loads(led["entry"])
        assert entry["alert_id"] == b["alert"]["id"] and entry["type"] == b["event"]
        root = root_from_inclusion(
            leaf_hash(led["entry"].encode()),
            led["index"],
            led["head"]["size"],
            [bytes.fromhex(p) for p in led["proof"]],
        )
        assert root is not None and root.hex() == led["head"]["root"]
    delivery.close()


async def test_receiver_failing_twice_then_succeeding(
    tmp_path: Path, store: AlertStore, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.statuses = [500, 503]
    delivery = AlertDelivery(
        tmp_path / "delivery.sqlite", webhooks=[WebhookTarget(receiver.url, SECRET)], backoff=FAST
    )
    delivery.attach(store)
    caplog.set_level("INFO", logger="gateway.delivery")
    async with running(delivery):
        first = await store.aingest(finding("n1"), site="s1", evidence_digest="ab" * 32)
        second = await store.aingest(finding("n2"), site="s1", evidence_digest="ab" * 32)
        assert first is not None and second is not None
        got = await asyncio.to_thread(receiver.wait_for, 4)
        await until(lambda: any("recovered" in r.getMessage() for r in caplog.records))
    assert len(got) == 4
    ids = [r.headers["x-meterwatch-delivery"] for r in got]
    # the first message three times (same id: receivers deduplicate), then the second
    assert ids[:3] == [ids[0]] * 3 and ids[3] != ids[0]
    assert json.loads(got[3].body)["alert"]["device"] == "n2"
    for r in got:
        check_signature(r.headers, r.body)
    failing = [r for r in caplog.records if "failing" in r.getMessage()]
    recovered = [r for r in caplog.records if "recovered" in r.getMessage()]
    assert len(failing) == 1 and len(recovered) == 1  # logged once each, not per attempt
    assert "token" not in failing[0].getMessage() and "HTTP 500" in failing[0].getMessage()
    delivery.close()


async def test_pending_delivery_survives_a_restart(tmp_path: Path, store: AlertStore) -> None:
    port = free_port()
    target = WebhookTarget(f"http://127.0.0.1:{port}/hook", SECRET)
    path = tmp_path / "delivery.sqlite"
    delivery = AlertDelivery(path, webhooks=[target], backoff=FAST)
    delivery.attach(store)
    async with running(delivery):
        await store.aingest(finding(), site="s1", evidence_digest="ab" * 32)
        await asyncio.sleep(0.3)  # a few refused connections
    assert delivery.stats()[target.target]["pending"] == 1
    delivery.close()

    receiver = Receiver(port)
    receiver.start()
    try:
        restarted = AlertDelivery(path, webhooks=[target], backoff=FAST)
        async with running(restarted):
            got = await asyncio.to_thread(receiver.wait_for, 1)
            await until(lambda: restarted.stats()[target.target]["pending"] == 0)
        assert len(got) == 1 and json.loads(got[0].body)["event"] == "alert.created"
        check_signature(got[0].headers, got[0].body)
        restarted.close()
    finally:
        receiver.stop()


async def test_min_severity_and_giving_up(
    tmp_path: Path, store: AlertStore, receiver: Receiver
) -> None:
    critical_only = WebhookTarget(receiver.url, SECRET, min_severity=Severity.CRITICAL, name="crit")
    dead_end = WebhookTarget(
        f"http://127.0.0.1:{free_port()}/", SECRET, min_severity=Severity.INFO, name="gone"
    )
    delivery = AlertDelivery(
        tmp_path / "d.sqlite",
        webhooks=[critical_only, dead_end],
        backoff=Backoff(base_s=0.05, cap_s=0.1, max_age_s=0.0),
    )
    delivery.attach(store)
    async with running(delivery):
        await store.aingest(finding("n1"), site="s1", evidence_digest="ab" * 32)
        await store.aingest(finding("n2", Severity.CRITICAL), site="s1", evidence_digest="ab" * 32)
        got = await asyncio.to_thread(receiver.wait_for, 1)
        await until(lambda: delivery.stats()["webhook:gone"]["dead"] == 2)
        await until(lambda: delivery.stats()["webhook:crit"]["pending"] == 0)
    assert [json.loads(r.body)["alert"]["device"] for r in got] == ["n2"]
    assert delivery.stats()["webhook:crit"] == {"pending": 0, "dead": 0}
    assert delivery.stats()["webhook:gone"] == {"pending": 0, "dead": 2}
    delivery.close()


def test_backoff_is_capped_and_jittered() -> None:
    policy = Backoff(base_s=1.0, cap_s=30.0)
    rng = random.Random(1)
    delays = [[policy.delay_s(a, rng) for _ in range(50)] for a in range(1, 12)]
    for attempt, ds in enumerate(delays, start=1):
        ceiling = min(30.0, 2.0 ** (attempt - 1))
        assert all(ceiling / 2 <= d <= ceiling for d in ds)
        assert len(set(ds)) > 40  # jittered
    assert max(delays[-1]) <= 30.0


def test_duplicate_webhook_urls_are_refused(tmp_path: Path) -> None:
    hook = WebhookTarget("http://127.0.0.1:1/x", SECRET)
    with pytest.raises(ValueError, match="same URL"):
        AlertDelivery(tmp_path / "d.sqlite", webhooks=[hook, hook])
    assert "secret" not in repr(hook).replace("secret=", "")  # the secret is not in its repr
    assert SECRET.decode() not in repr(hook)
