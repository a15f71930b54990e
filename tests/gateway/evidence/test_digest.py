"""readings_digest: canonical, order-independent, sensitive to every value; CSV round-trips it."""

from __future__ import annotations

import hashlib
import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.reading import DeviceKind, Reading
from gateway.evidence import cited_readings, readings_csv, readings_digest
from gateway.evidence.verify_bundle import canonical_line, digest_records, records_from_csv

floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
readings_st = st.lists(
    st.builds(
        Reading,
        device_id=st.sampled_from(["n1", "n2", "tank-1"]),
        kind=st.just(DeviceKind.DISPENSER_NOZZLE),
        ts_ns=st.integers(0, 2**62),
        seq=st.integers(0, 2**40),
        fields=st.dictionaries(st.sampled_from(["volume_l", "flow_l_min", "amount"]), floats),
        quality=st.sampled_from(["ok", "timeout", "exception:2"]),
    ),
    max_size=25,
    unique_by=lambda r: (r.device_id, r.seq),
)


@settings(deadline=None)  # a loaded CI box must not turn slowness into failure
@given(readings_st, st.randoms())
def test_csv_round_trips_the_digest_in_any_order(readings: list[Reading], rnd: object) -> None:
    shuffled = list(readings)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    digest = readings_digest(readings)
    assert readings_digest(shuffled) == digest
    assert digest_records(records_from_csv(readings_csv(shuffled))) == digest


def test_every_part_of_a_reading_counts() -> None:
    base = Reading("n1", DeviceKind.WATER, 1_000, 7, {"volume_m3": 12.5, "flow_m3_h": 0.1})
    variants = [
        Reading("n2", DeviceKind.WATER, 1_000, 7, {"volume_m3": 12.5, "flow_m3_h": 0.1}),
        Reading("n1", DeviceKind.WATER, 1_001, 7, {"volume_m3": 12.5, "flow_m3_h": 0.1}),
        Reading("n1", DeviceKind.WATER, 1_000, 8, {"volume_m3": 12.5, "flow_m3_h": 0.1}),
        Reading(
            "n1", DeviceKind.WATER, 1_000, 7, {"volume_m3": 12.500000000000002, "flow_m3_h": 0.1}
        ),
        Reading("n1", DeviceKind.WATER, 1_000, 7, {"volume_m3": 12.5}),
        Reading("n1", DeviceKind.WATER, 1_000, 7, {"volume_m3": 12.5, "flow_m3_h": 0.1}, "stale"),
        Reading("n1", DeviceKind.WATER, 1_000, 7, {"volume_m3": 12.5, "flow_m3_h": math.nan}),
    ]
    digests = {readings_digest([base])} | {readings_digest([v]) for v in variants}
    assert len(digests) == len(variants) + 1
    assert readings_digest([]) != readings_digest([base])
    # the documented canonical form, written out by hand
    line = (
        b'{"device":"n1","fields":{"flow_m3_h":0.1,"volume_m3":12.5},'
        b'"quality":"ok","seq":7,"ts_ns":1000}\n'
    )
    assert readings_digest([base]) == hashlib.sha256(b"meterwatch-readings-v1\n" + line).hexdigest()


def test_cited_readings_is_the_inclusive_window_of_the_devices() -> None:
    rs = [
        Reading(d, DeviceKind.WATER, t, t, {"volume_m3": 1.0})
        for d in ("a", "b", "c")
        for t in range(10)
    ]
    got = cited_readings(rs, devices=("a", "c"), start_ns=3, end_ns=5)
    assert [(r.device_id, r.ts_ns) for r in got] == [
        ("a", 3),
        ("a", 4),
        ("a", 5),
        ("c", 3),
        ("c", 4),
        ("c", 5),
    ]


@settings(deadline=None)  # a loaded CI box must not turn slowness into failure
@given(
    st.text(max_size=12),
    st.integers(0, 2**63),
    st.integers(-(2**63), 2**63),
    st.text(max_size=12),
    st.dictionaries(st.text(max_size=10), floats, max_size=6),
)
def test_canonical_line_is_exactly_the_documented_json(
    device: str, seq: int, ts_ns: int, quality: str, fields: dict[str, float]
) -> None:
    record = {"device": device, "fields": fields, "quality": quality, "seq": seq, "ts_ns": ts_ns}
    expected = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n"
    assert canonical_line(device, seq, ts_ns, quality, fields) == expected.encode("ascii")
