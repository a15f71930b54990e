"""Line protocol: encoder vectors, refusals, parse(encode(x)) == x, and every field type
through a real InfluxDB."""

from __future__ import annotations

import gzip
import itertools
import math
import urllib.request

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.reading import DeviceKind, Reading
from gateway.storage import LineProtocolError, ReadingEncoder, point_ts_ns
from gateway.storage.lineprotocol import (
    encode_point,
    escape_key,
    escape_measurement,
    format_value,
    parse_line,
    parse_lines,
)
from gateway.storage.schema import reading_from_point
from tests.gateway.storage.conftest import influxql
from tests.services import InfluxService


@pytest.mark.parametrize(
    ("measurement", "tags", "fields", "ts", "line"),
    [
        ("m", {}, {"f": 1.0}, None, "m f=1.0"),
        ("m", {"b": "2", "a": "1"}, {"f": 1.5}, 7, "m,a=1,b=2 f=1.5 7"),
        ("my m,x=y", {}, {"f": -0.0}, 1, r"my\ m\,x=y f=-0.0 1"),
        ("m", {"t k": "v,a=b"}, {"f k=,": 2}, 1, r"m,t\ k=v\,a\=b f\ k\=\,=2i 1"),
        ("m", {"t": "a\\b"}, {"s": 'q"b\\s'}, 1, 'm,t=a\\b s="q\\"b\\\\s" 1'),
        ("m", {"t": ""}, {"b": True, "c": False}, 1, "m b=true,c=false 1"),
        (
            "Zähler",
            {"ort": "Köln €"},
            {"f": 1e16, "g": 1.5e-07},
            1,
            r"Zähler,ort=Köln\ € f=1e+16,g=1.5e-07 1",
        ),
        ("m", {}, {"s": "line\nbreak"}, 1, 'm s="line\nbreak" 1'),
    ],
)
def test_encode_vectors(
    measurement: str, tags: dict[str, str], fields: dict[str, object], ts: int | None, line: str
) -> None:
    assert encode_point(measurement, tags, fields, ts) == line  # type: ignore[arg-type]
    parsed = parse_line(line)
    assert parsed.measurement == measurement
    assert parsed.tags == {k: v for k, v in tags.items() if v}
    assert parsed.fields == fields
    assert parsed.ts_ns == ts


@pytest.mark.parametrize(
    ("call", "what", "message"),
    [
        (lambda: escape_measurement(""), "measurement", "empty"),
        (lambda: escape_measurement("#m"), "measurement", "comment"),
        (lambda: escape_measurement("a\\ b"), "measurement", "backslash before ' '"),
        (lambda: escape_key("a\\", what="tag value"), "tag value", "end with a backslash"),
        (lambda: escape_key("a\\=b", what="tag key"), "tag key", "backslash before '='"),
        (lambda: escape_key("a\nb", what="tag value"), "tag value", "line break"),
        (lambda: escape_key("time", what="field key"), "field key", "reserved"),
        (lambda: format_value(math.nan, key="f"), "field value", "finite"),
        (lambda: format_value(math.inf, key="f"), "field value", "finite"),
        (lambda: format_value(2**63, key="f"), "field value", "int64"),
        (lambda: format_value(b"x", key="f"), "field value", "unsupported"),  # type: ignore[arg-type]
        (lambda: encode_point("m", {}, {}), "point", "at least one field"),
    ],
)
def test_refusals_name_the_part(call: object, what: str, message: str) -> None:
    with pytest.raises(LineProtocolError, match=message) as info:
        call()  # type: ignore[operator]
    assert info.value.what == what
    assert isinstance(info.value, ValueError)


def test_reading_encoder_schema() -> None:
    enc = ReadingEncoder(site_id="s 1", profiles={"n1": "fuel_nozzle"})
    r = Reading(
        "n1",
        DeviceKind.DISPENSER_NOZZLE,
        1_234_567_891,
        42,
        {"totalizer_volume_l": 10.5, "state": math.nan, "unit_price": math.inf},
        "exception:2",
    )
    line = enc.line(r)
    assert line == (
        r"dispenser_nozzle,device=n1,kind=dispenser_nozzle,profile=fuel_nozzle,site=s\ 1 "
        'totalizer_volume_l=10.5,quality="exception:2",seq=42i 1234567042'
    )
    back = reading_from_point(parse_line(line))
    assert back == Reading(
        "n1",
        DeviceKind.DISPENSER_NOZZLE,
        1_234_567_042,
        42,
        {"totalizer_volume_l": 10.5},
        "exception:2",
    )
    # A failed poll still yields a point (quality and seq only).
    empty = enc.line(Reading("n1", DeviceKind.DISPENSER_NOZZLE, 5000, 7, {}, "timeout"))
    assert empty.endswith(' quality="timeout",seq=7i 5007')
    with pytest.raises(LineProtocolError, match="reserved"):
        enc.line(Reading("n1", DeviceKind.WATER, 1, 1, {"seq": 1.0}))


def test_point_ts_keeps_microseconds_and_orders_by_seq() -> None:
    assert point_ts_ns(1_000_000_999, 5) == 1_000_000_005
    assert point_ts_ns(1_000_000_999, 1005) == 1_000_000_005
    assert point_ts_ns(1_000_001_000, 5) == 1_000_001_005
    assert len({point_ts_ns(7_000, s) for s in range(1000)}) == 1000


def test_parse_lines_skips_comments_and_keeps_newlines_in_strings() -> None:
    body = '# comment\n\nm,t=1 s="a\nb",f=1 1\nm f=2i 2\n'
    points = list(parse_lines(body))
    assert [p.fields for p in points] == [{"s": "a\nb", "f": 1.0}, {"f": 2}]
    with pytest.raises(LineProtocolError, match="bad field value"):
        parse_line("m f=abc 1")
    with pytest.raises(LineProtocolError, match="unterminated"):
        parse_line('m f="abc 1')


def _writable(s: str) -> bool:
    """What line protocol can carry: no trailing backslash, none before , = or space."""
    return (
        s != "time"
        and not s.startswith("#")
        and not s.endswith("\\")
        and not any(a == "\\" and b in ", =" for a, b in itertools.pairwise(s))
    )


names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"),
    min_size=1,
    max_size=12,
).filter(_writable)
values = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20).filter(lambda s: "\r" not in s),
)


@given(
    measurement=names,
    tags=st.dictionaries(names, names, max_size=4),
    fields=st.dictionaries(names, values, min_size=1, max_size=5),
    ts=st.integers(min_value=-(2**62), max_value=2**62),
)
def test_parse_inverts_encode(
    measurement: str, tags: dict[str, str], fields: dict[str, object], ts: int
) -> None:
    line = encode_point(measurement, tags, fields, ts)  # type: ignore[arg-type]
    point = parse_line(line)
    assert (point.measurement, point.tags, point.fields, point.ts_ns) == (
        measurement,
        tags,
        fields,
        ts,
    )


@pytest.mark.integration
def test_every_field_type_round_trips_through_influxdb(influxdb: InfluxService) -> None:
    db = "lp_types"
    influxql(influxdb.url, db, f'CREATE DATABASE "{db}"')
    fields = {
        "f_float": -1.25e-300,
        "f_big": 1.7976931348623157e308,
        "f_int": -(2**63),
        "f_int_max": 2**63 - 1,
        "f_true": True,
        "f_false": False,
        "f_str": 'quote " backslash \\ comma, eq= space ü\nnew line',
        "f ,=\"'\\ü": 3.5,
    }
    tags = {"t ,=\"'\\ü": "v ,=\"'\\ü", "plain": "x"}
    line = encode_point("m ,\"'\\ü", tags, fields, 1_500_000_000_123_456_789)  # type: ignore[arg-type]
    body = gzip.compress((line + "\n").encode())
    req = urllib.request.Request(
        f"{influxdb.url}/write?db={db}&precision=ns",
        data=body,
        headers={"Content-Encoding": "gzip"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204
    answer = influxql(influxdb.url, db, 'SELECT * FROM "m ,\\"\'\\\\ü"')
    series = answer["results"][0]["series"][0]
    row = dict(zip(series["columns"], series["values"][0], strict=True))
    assert row.pop("time") == 1_500_000_000_123_456_789
    assert row == {**fields, **tags}
    kinds = influxql(influxdb.url, db, "SHOW FIELD KEYS")["results"][0]["series"][0]["values"]
    assert dict(map(tuple, kinds)) == {
        "f_float": "float",
        "f_big": "float",
        "f_int": "integer",
        "f_int_max": "integer",
        "f_true": "boolean",
        "f_false": "boolean",
        "f_str": "string",
        "f ,=\"'\\ü": "float",
    }


def test_set_profile_changes_the_tag_of_later_readings() -> None:
    enc = ReadingEncoder(site_id="s")
    r = Reading("w1", DeviceKind.WATER, 10**18, 1, {"flow_m3h": 1.0})
    assert ",profile=" not in enc.line(r)
    enc.set_profile("w1", "water_meter")
    assert parse_line(enc.line(r)).tags["profile"] == "water_meter"
