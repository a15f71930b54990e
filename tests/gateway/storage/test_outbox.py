"""The outbox: durable across reopen, FIFO, bounded with the drop policy, counted."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from drivers.reading import DeviceKind, Reading
from gateway.storage import EntryKind, Outbox, OutboxEntry, ReadingEncoder, StorageError
from gateway.storage.lineprotocol import encode_point, parse_lines
from gateway.storage.schema import reading_from_point

ENC = ReadingEncoder(site_id="s1")


def _batch(first_seq: int, n: int = 10, device: str = "w1") -> list[Reading]:
    return [
        Reading(
            device,
            DeviceKind.WATER,
            10**18 + s * 10**9,
            s,
            {"volume_forward_m3": s * 0.1, "flow_m3h": 1.0 / (s + 1)},
        )
        for s in range(first_seq, first_seq + n)
    ]


def _seqs(entries: list[OutboxEntry]) -> list[int]:
    out = []
    for e in entries:
        for p in parse_lines(gzip.decompress(e.payload).decode()):
            r = reading_from_point(p)
            assert r is not None
            out.append(r.seq)
    return out


def _alert(i: int) -> str:
    return encode_point(
        "meterwatch_alerts",
        {"site": "s1", "device": "w1"},
        {"detector": "integrity.counter_rollback", "n": i},
        10**18 + i,
    )


async def test_entries_survive_reopen_in_order(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    box = await Outbox.open(path, max_bytes=10**7, encoder=ENC)
    for first in range(0, 50, 10):
        result = await box.append_readings(_batch(first))
        assert result.entry_id is not None and result.points == 10
    await box.append_lines(EntryKind.ALERT, [_alert(1)])
    await box.close()

    box = await Outbox.open(path, max_bytes=10**7, encoder=ENC)
    stats = box.stats()
    assert (stats.entries, stats.points, stats.appended_points) == (6, 51, 51)
    assert stats.oldest_created_ns is not None
    first = await box.peek(max_points=25)
    assert _seqs(first) == list(range(20))  # whole entries, up to the point budget
    await box.ack([e.id for e in first])
    rest = await box.peek(max_points=10_000)
    assert [e.kind for e in rest] == [EntryKind.READINGS] * 3 + [EntryKind.ALERT]
    assert _seqs(rest[:3]) == list(range(20, 50))
    await box.ack([e.id for e in rest])
    assert box.stats().entries == 0 and box.stats().points == 0 and box.stats().bytes == 0
    assert box.stats().oldest_created_ns is None
    await box.close()


async def test_full_outbox_drops_oldest_raw_keeps_alerts_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    probe = await Outbox.open(tmp_path / "probe.sqlite", max_bytes=10**9, encoder=ENC)
    await probe.append_readings(_batch(0))
    entry_bytes = probe.stats().bytes
    await probe.close()

    # Room for the 16 alert and ledger entries and about six raw batches.
    max_bytes = entry_bytes * 6 + 16 * 200
    box = await Outbox.open(path, max_bytes=max_bytes, encoder=ENC)
    alerts = 0
    dropped_seen = 0
    for i in range(40):
        result = await box.append_readings(_batch(i * 10))
        dropped_seen += result.dropped_points
        if i % 5 == 0:
            for kind, n in ((EntryKind.ALERT, i), (EntryKind.LEDGER, 1000 + i)):
                kept_alert = await box.append_lines(kind, [_alert(n)])
                assert kept_alert.entry_id is not None  # never refused, may drop raw readings
                dropped_seen += kept_alert.dropped_points
            alerts += 1
    stats = box.stats()
    kinds = await box.kinds()
    raw = [k for k in kinds if k[1] is EntryKind.READINGS]
    assert sum(1 for k in kinds if k[1] is EntryKind.ALERT) == alerts
    assert sum(1 for k in kinds if k[1] is EntryKind.LEDGER) == alerts
    entries = await box.peek(max_points=10**6)
    kept = _seqs([e for e in entries if e.kind is EntryKind.READINGS])
    # The newest readings are kept, contiguous up to the last one appended.
    assert kept == list(range(400 - len(kept), 400))
    assert 40 <= len(kept) < 400
    assert stats.dropped_points == 400 - len(kept) == dropped_seen
    assert stats.dropped_entries == 40 - len(raw)
    assert stats.bytes <= max_bytes
    assert stats.appended_points == 400 + 2 * alerts
    await box.close()

    reopened = await Outbox.open(path, max_bytes=max_bytes, encoder=ENC)
    assert reopened.stats().dropped_points == stats.dropped_points  # counters persist
    assert reopened.stats().bytes == stats.bytes
    await reopened.close()


async def test_in_flight_entries_are_not_dropped_and_alerts_may_exceed(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite", max_bytes=1, encoder=ENC)
    # Nothing fits: a raw batch is dropped itself (and counted), an alert is kept anyway.
    result = await box.append_readings(_batch(0))
    assert result.dropped_self and result.entry_id is None and result.dropped_points == 10
    alert = await box.append_lines(EntryKind.ALERT, [_alert(1)])
    assert alert.entry_id is not None
    await box.close()

    probe = await Outbox.open(tmp_path / "p.sqlite", max_bytes=10**9, encoder=ENC)
    await probe.append_readings(_batch(0))
    one = probe.stats().bytes
    await probe.close()
    box = await Outbox.open(tmp_path / "q.sqlite", max_bytes=int(one * 2.5), encoder=ENC)
    await box.append_readings(_batch(0))
    await box.append_readings(_batch(10))
    in_flight = await box.peek(max_points=10)
    assert _seqs(in_flight) == list(range(10))
    await box.append_readings(_batch(20))  # must drop seq 10.., not the batch being sent
    assert _seqs(await box.peek(max_points=100)) == [*range(10), *range(20, 30)]
    assert box.stats().dropped_points == 10
    await box.close()


async def test_invalid_readings_are_skipped_counted_and_the_rest_kept(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite", max_bytes=10**7, encoder=ENC)
    bad = Reading("w1", DeviceKind.WATER, 10**18, 99, {"bad\\": 1.0})
    result = await box.append_readings([*_batch(0, 3), bad, *_batch(3, 2)])
    assert (result.points, result.invalid_points) == (5, 1)
    assert _seqs(await box.peek(max_points=100)) == [0, 1, 2, 3, 4]
    assert box.stats().invalid_points == 1
    await box.close()


async def test_quarantine_keeps_and_counts_and_is_dropped_first_when_full(tmp_path: Path) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite", max_bytes=10**7, encoder=ENC)
    await box.append_readings(_batch(0))
    await box.append_readings(_batch(10))
    first = (await box.peek(max_points=10))[0]
    await box.quarantine(first.id, "field type conflict")
    stats = box.stats()
    assert (stats.entries, stats.points, stats.quarantined_points) == (1, 10, 10)
    assert _seqs(await box.peek(max_points=100)) == list(range(10, 20))
    await box.release()
    bytes_with_quarantine = stats.bytes
    box.max_bytes = bytes_with_quarantine + 80  # the next batch only fits without quarantine
    result = await box.append_readings(_batch(20))
    assert result.dropped_points == 10
    assert _seqs(await box.peek(max_points=100)) == list(range(10, 30))
    await box.close()


async def test_unusable_file_and_odd_readings_give_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-db.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match=r"not-a-db\.sqlite"):
        await Outbox.open(bad, max_bytes=10**6, encoder=ENC)
    box = await Outbox.open(tmp_path / "o.sqlite", max_bytes=10**7, encoder=ENC)
    odd = [
        Reading("w1", "water", 10**18, 1, {"flow_m3h": 1.0}),  # type: ignore[arg-type]
        Reading("w1", "steam", 10**18, 2, {"flow_m3h": 1.0}),  # type: ignore[arg-type]
        Reading("w1", DeviceKind.WATER, 10**18, 3, {"flow_m3h": "fast"}),  # type: ignore[dict-item]
    ]
    result = await box.append_readings(odd)
    assert (result.points, result.invalid_points) == (1, 2)
    assert _seqs(await box.peek(max_points=10)) == [1]
    await box.close()
