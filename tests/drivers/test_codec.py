"""Register codec: round trips for every type and order, and vectors of real devices."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.codec import (
    DataType,
    EncodeError,
    Order,
    RegisterSpec,
    compile_decoder,
    decode,
    decode_from,
    decode_string,
    encode,
    registers_to_bytes,
    wire_address,
)
from drivers.errors import DecodeError

INT_RANGES = {
    DataType.U16: (0, 2**16 - 1),
    DataType.I16: (-(2**15), 2**15 - 1),
    DataType.U32: (0, 2**32 - 1),
    DataType.I32: (-(2**31), 2**31 - 1),
    DataType.U64: (0, 2**64 - 1),
    DataType.I64: (-(2**63), 2**63 - 1),
}


@st.composite
def int_case(draw: st.DrawFn) -> tuple[int, RegisterSpec]:
    dt = draw(st.sampled_from(list(INT_RANGES)))
    lo, hi = INT_RANGES[dt]
    # keep |value| within float's exact-integer range: decode returns float
    value = draw(st.integers(max(lo, -(2**53)), min(hi, 2**53)))
    return value, RegisterSpec(data_type=dt, order=draw(st.sampled_from(list(Order))))


@given(int_case())
def test_integers_round_trip_in_every_order(case: tuple[int, RegisterSpec]) -> None:
    value, spec = case
    regs = encode(value, spec)
    assert len(regs) == spec.register_count
    assert all(0 <= r <= 0xFFFF for r in regs)
    assert decode(regs, spec) == value


@given(
    st.floats(width=32, allow_nan=False),
    st.sampled_from(list(Order)),
)
def test_f32_round_trips_exactly(value: float, order: Order) -> None:
    spec = RegisterSpec(data_type=DataType.F32, order=order)
    assert decode(encode(value, spec), spec) == value


@given(st.floats(allow_nan=False), st.sampled_from(list(Order)))
def test_f64_round_trips_exactly(value: float, order: Order) -> None:
    spec = RegisterSpec(data_type=DataType.F64, order=order)
    assert decode(encode(value, spec), spec) == value


@given(
    st.integers(-(2**31), 2**31 - 1),
    st.sampled_from([0.1, 0.01, 0.001, 10.0]),
    st.floats(-1000, 1000),
)
def test_scale_and_offset_round_trip_to_resolution(raw: int, scale: float, offset: float) -> None:
    spec = RegisterSpec(data_type=DataType.I32, scale=scale, offset=offset)
    value = raw * scale + offset
    assert math.isclose(decode(encode(value, spec), spec), value, abs_tol=scale / 2 + 1e-9)


@given(st.integers(0, 15), st.integers(1, 16), st.data())
def test_bit_fields_round_trip(bit: int, count: int, data: st.DataObject) -> None:
    count = min(count, 16 - bit)
    spec = RegisterSpec(data_type=DataType.U16, bit=bit, bit_count=count)
    value = data.draw(st.integers(0, 2**count - 1))
    regs = encode(value, spec)
    assert decode(regs, spec) == value
    assert regs[0] == value << bit  # only the field's own bits are set


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=16),
       st.sampled_from(list(Order)))
def test_strings_round_trip(text: str, order: Order) -> None:
    spec = RegisterSpec(data_type=DataType.STRING, length=8, order=order)
    assert decode_string(encode(text, spec), spec) == text


# --- vectors from device manuals and captures -------------------------------------------


@pytest.mark.parametrize(
    ("regs", "spec", "expected"),
    [
        # Eastron SDM630 voltage L1 230.5 V: float32 ABCD 0x4366 0x8000
        ([0x4366, 0x8000], RegisterSpec(data_type=DataType.F32), 230.5),
        # SDM630 frequency 50.0 Hz = 0x42480000
        ([0x4248, 0x0000], RegisterSpec(data_type=DataType.F32), 50.0),
        # the same 230.5 from a word-swapping meter (CDAB)
        ([0x8000, 0x4366], RegisterSpec(data_type=DataType.F32, order=Order.CDAB), 230.5),
        # byte-swapped (BADC) and little-endian (DCBA) 1.0 = 0x3F800000
        ([0x803F, 0x0000], RegisterSpec(data_type=DataType.F32, order=Order.BADC), 1.0),
        ([0x0000, 0x803F], RegisterSpec(data_type=DataType.F32, order=Order.DCBA), 1.0),
        # ABB B2x active import U64 x0.01 kWh: 0x0000 0x0000 0x0001 0x86A0 = 1000.00 kWh
        ([0, 0, 0x0001, 0x86A0], RegisterSpec(data_type=DataType.U64, scale=0.01), 1000.0),
        # ABB B2x voltage U32 x0.1: 2305 -> 230.5 V
        ([0x0000, 0x0901], RegisterSpec(data_type=DataType.U32, scale=0.1), 230.5),
        # ABB B2x total active power S32 x0.01: -1500.00 W = 0xFFFDB610
        ([0xFFFD, 0xB610], RegisterSpec(data_type=DataType.I32, scale=0.01), -1500.0),
        # ABB frequency U16 x0.01: 5000 -> 50 Hz
        ([0x1388], RegisterSpec(data_type=DataType.U16, scale=0.01), 50.0),
        # temperature i16 x0.01 with a -10.00 degC reading
        ([0xFC18], RegisterSpec(data_type=DataType.I16, scale=0.01), -10.0),
        # status word bit 2 (leak) set in 0x0005
        ([0x0005], RegisterSpec(data_type=DataType.U16, bit=2), 1.0),
        ([0x0005], RegisterSpec(data_type=DataType.U16, bit=1), 0.0),
        # f64 1234.5 = 0x40934A0000000000
        ([0x4093, 0x4A00, 0, 0], RegisterSpec(data_type=DataType.F64), 1234.5),
        # a temperature stored in Kelvin x0.1 with offset: 2931 -> 20.0 degC
        ([2931], RegisterSpec(data_type=DataType.U16, scale=0.1, offset=-273.1), 20.0),
    ],
)
def test_device_vectors(regs: list[int], spec: RegisterSpec, expected: float) -> None:
    assert math.isclose(decode(regs, spec), expected, rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(decode(encode(expected, spec), spec), expected, abs_tol=1e-6)


def test_orders_are_permutations_of_the_same_bytes() -> None:
    value = struct.unpack(">f", bytes([0x41, 0x42, 0x43, 0x44]))[0]
    wires = {o: registers_to_bytes(encode(value, RegisterSpec(data_type=DataType.F32, order=o)))
             for o in Order}
    assert wires[Order.ABCD] == b"ABCD"
    assert wires[Order.CDAB] == b"CDAB"
    assert wires[Order.BADC] == b"BADC"
    assert wires[Order.DCBA] == b"DCBA"


def test_u64_orders_extend_the_pattern() -> None:
    spec = RegisterSpec(data_type=DataType.U64, order=Order.CDAB)
    assert encode(0x0102030405060708, spec) == [0x0708, 0x0506, 0x0304, 0x0102]


def test_decode_from_reads_inside_a_frame() -> None:
    frame = registers_to_bytes([0xDEAD, 0x4366, 0x8000, 0xBEEF])
    assert decode_from(frame, 2, RegisterSpec(data_type=DataType.F32)) == 230.5


def test_string_with_swapped_bytes() -> None:
    spec = RegisterSpec(data_type=DataType.STRING, length=3, order=Order.BADC)
    assert decode_string([0x4453, 0x364D, 0x3033], spec) == "SDM630"


@pytest.mark.parametrize(
    ("value", "spec", "match"),
    [
        (70000, RegisterSpec(data_type=DataType.U16), "outside u16"),
        (-1, RegisterSpec(data_type=DataType.U32), "outside u32"),
        (4, RegisterSpec(data_type=DataType.U16, bit=0, bit_count=2), "2 bit"),
        (math.inf, RegisterSpec(data_type=DataType.I32), "not finite"),
        (1e39, RegisterSpec(data_type=DataType.F32), "overflows f32"),
        ("x", RegisterSpec(data_type=DataType.U16), "needs a number"),
        ("too long text", RegisterSpec(data_type=DataType.STRING, length=2), "needs 13 bytes"),
    ],
)
def test_encode_refuses_what_does_not_fit(value: object, spec: RegisterSpec, match: str) -> None:
    with pytest.raises(EncodeError, match=match):
        encode(value, spec)  # type: ignore[arg-type]


def test_decode_refuses_wrong_register_count_and_range() -> None:
    with pytest.raises(DecodeError, match="need 2 register"):
        decode([1], RegisterSpec(data_type=DataType.F32))
    with pytest.raises(DecodeError, match=r"outside 0\.\.65535"):
        decode([70000], RegisterSpec(data_type=DataType.U16))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"data_type": DataType.F32, "bit": 0}, "integer type"),
        ({"data_type": DataType.U16, "bit": 15, "bit_count": 2}, "do not fit"),
        ({"data_type": DataType.STRING}, "length"),
        ({"data_type": DataType.U32, "length": 1}, "takes 2"),
        ({"data_type": DataType.U16, "scale": 0.0}, "non-zero"),
    ],
)
def test_inconsistent_specs_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RegisterSpec(**kwargs)  # type: ignore[arg-type]


def test_wire_address_removes_the_base() -> None:
    assert wire_address(40001, base=40001) == 0
    assert wire_address(30073, base=30001) == 72
    assert wire_address(1, base=1) == 0
    with pytest.raises(ValueError, match="wire address -1"):
        wire_address(0, base=1)


def test_word_and_byte_order_parts() -> None:
    for order in Order:
        assert Order.from_parts(word_order=order.word_order, byte_order=order.byte_order) is order
    with pytest.raises(ValueError, match="'big' or 'little'"):
        Order.from_parts(word_order="middle")


@st.composite
def any_numeric_spec(draw: st.DrawFn) -> RegisterSpec:
    dt = draw(st.sampled_from([t for t in DataType if t is not DataType.STRING]))
    bit = None
    count = 1
    if dt.is_integer and draw(st.booleans()):
        width = 16 * dt.registers
        bit = draw(st.integers(0, width - 1))
        count = draw(st.integers(1, width - bit))
    return RegisterSpec(
        data_type=dt,
        order=draw(st.sampled_from(list(Order))),
        scale=draw(st.sampled_from([1.0, 0.01, 10.0])),
        offset=draw(st.sampled_from([0.0, -273.15])),
        bit=bit,
        bit_count=count,
    )


@given(any_numeric_spec(), st.binary(min_size=8, max_size=8), st.integers(0, 4))
def test_compiled_decoder_matches_decode_from(spec: RegisterSpec, data: bytes, pad: int) -> None:
    buf = b"\x00" * pad + data
    expected = decode_from(buf, pad, spec)
    got = compile_decoder(spec)(buf, pad)
    assert got == expected or (math.isnan(got) and math.isnan(expected))
