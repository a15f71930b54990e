"""Register codec: Modbus registers <-> engineering values. Pure functions, no I/O.

A value spans one or more 16-bit registers. Devices disagree on the order of
the bytes within a value, so every spec names one of the four orders, written
as the position of the value's big-endian bytes A (most significant) .. D on
the wire (for 64-bit values the pattern extends to 8 bytes):

- ``ABCD``: big-endian words, high word first (Modbus default; Eastron, ABB).
- ``CDAB``: low word first, bytes big-endian within a word ("word swap").
- ``BADC``: high word first, bytes swapped within each word ("byte swap").
- ``DCBA``: fully little-endian (some water meters' float32 volumes).

The engineering value is ``raw * scale + offset``. A bit field takes
``bit_count`` bits starting at ``bit`` (0 = least significant) of an unsigned
reading of the integer. Strings are ASCII/UTF-8, two characters per register,
NUL/space padded; ``BADC``/``DCBA`` swap the two characters of each register.

Failure modes handled: a wrong number of registers or bytes for the type
(`DecodeError`), register values outside 0..65535 (`DecodeError`), a value
that does not fit the type when encoding (`EncodeError`), and a string type
asked for a number (or the reverse).

`decode_from(buf, offset, spec)` reads straight from the big-endian register
bytes of a response frame, so the poller never builds an int list per field.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Protocol

from drivers.errors import DecodeError


class DataType(StrEnum):
    """Register data types. The value is the name used in profile files."""

    U16 = "u16"
    I16 = "i16"
    U32 = "u32"
    I32 = "i32"
    U64 = "u64"
    I64 = "i64"
    F32 = "f32"
    F64 = "f64"
    STRING = "string"

    @property
    def registers(self) -> int:
        """Registers a value of this type takes (0 for strings: see the spec's `length`)."""
        return _REGISTERS[self]

    @property
    def is_integer(self) -> bool:
        return self in _INT_CODES

    @property
    def is_signed(self) -> bool:
        return self in (DataType.I16, DataType.I32, DataType.I64)


_REGISTERS = {
    DataType.U16: 1,
    DataType.I16: 1,
    DataType.U32: 2,
    DataType.I32: 2,
    DataType.U64: 4,
    DataType.I64: 4,
    DataType.F32: 2,
    DataType.F64: 4,
    DataType.STRING: 0,
}
_INT_CODES = {
    DataType.U16: "H",
    DataType.I16: "h",
    DataType.U32: "I",
    DataType.I32: "i",
    DataType.U64: "Q",
    DataType.I64: "q",
}
_CODES = {**_INT_CODES, DataType.F32: "f", DataType.F64: "d"}
_UNSIGNED = {1: "H", 2: "I", 4: "Q"}


class Order(StrEnum):
    """Byte order of a multi-register value on the wire (see the module docstring)."""

    ABCD = "ABCD"
    CDAB = "CDAB"
    BADC = "BADC"
    DCBA = "DCBA"

    @property
    def word_order(self) -> str:
        """``"big"`` when the most significant word comes first, else ``"little"``."""
        return "big" if self in (Order.ABCD, Order.BADC) else "little"

    @property
    def byte_order(self) -> str:
        """``"big"`` when the high byte of each word comes first, else ``"little"``."""
        return "big" if self in (Order.ABCD, Order.CDAB) else "little"

    @classmethod
    def from_parts(cls, *, word_order: str = "big", byte_order: str = "big") -> Order:
        """The order for a word order and a byte order, each ``"big"`` or ``"little"``."""
        table = {
            ("big", "big"): cls.ABCD,
            ("little", "big"): cls.CDAB,
            ("big", "little"): cls.BADC,
            ("little", "little"): cls.DCBA,
        }
        try:
            return table[(word_order, byte_order)]
        except KeyError:
            raise ValueError(
                f"word_order and byte_order must be 'big' or 'little', "
                f"got {word_order!r}/{byte_order!r}"
            ) from None


class CodecSpec(Protocol):
    """What the codec needs to know about a value; `RegisterSpec` and profile fields fit."""

    @property
    def data_type(self) -> DataType: ...
    @property
    def order(self) -> Order: ...
    @property
    def scale(self) -> float: ...
    @property
    def offset(self) -> float: ...
    @property
    def bit(self) -> int | None: ...
    @property
    def bit_count(self) -> int: ...
    @property
    def length(self) -> int | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterSpec:
    """How one value is laid out in registers. `length` is the register count of strings."""

    data_type: DataType
    order: Order = Order.ABCD
    scale: float = 1.0
    offset: float = 0.0
    bit: int | None = None
    bit_count: int = 1
    length: int | None = None

    def __post_init__(self) -> None:
        problem = spec_problem(self)
        if problem:
            raise ValueError(problem)

    @property
    def register_count(self) -> int:
        return register_count(self)


class EncodeError(ValueError):
    """A value cannot be represented in the given spec (range, type)."""


def register_count(spec: CodecSpec) -> int:
    """Number of registers the value of `spec` occupies."""
    if spec.data_type is DataType.STRING:
        return spec.length or 0
    return _REGISTERS[spec.data_type]


def spec_problem(spec: CodecSpec) -> str | None:
    """Why `spec` is inconsistent (bit field on a float, string without length), or None."""
    dt = spec.data_type
    if dt is DataType.STRING:
        if not spec.length or spec.length < 1:
            return "a string needs length >= 1 (registers)"
        if spec.bit is not None:
            return "a string cannot be a bit field"
        return None
    if spec.length is not None and spec.length != _REGISTERS[dt]:
        return f"{dt.value} takes {_REGISTERS[dt]} register(s), not {spec.length}"
    if spec.bit is not None:
        if not dt.is_integer:
            return f"bit fields need an integer type, not {dt.value}"
        width = 16 * _REGISTERS[dt]
        if spec.bit < 0 or spec.bit_count < 1 or spec.bit + spec.bit_count > width:
            return f"bits {spec.bit}..{spec.bit + spec.bit_count - 1} do not fit in {dt.value}"
    if spec.scale == 0 or not math.isfinite(spec.scale) or not math.isfinite(spec.offset):
        return "scale must be finite and non-zero, offset finite"
    return None


# --- byte reordering ------------------------------------------------------------------


def _to_wire_order(data: bytes, order: Order) -> bytes:
    """Reorder value bytes between ABCD (or DCBA for unpacking '<') and the wire."""
    if order is Order.CDAB:
        # words reversed; this is also the inverse
        return b"".join(data[i : i + 2] for i in range(len(data) - 2, -1, -2))
    if order is Order.BADC:
        swapped = bytearray(len(data))
        swapped[0::2] = data[1::2]
        swapped[1::2] = data[0::2]
        return bytes(swapped)
    return data


@lru_cache(maxsize=64)
def _struct(code: str, little: bool) -> struct.Struct:
    return struct.Struct(("<" if little else ">") + code)


def _unpack_raw(data: bytes, dt: DataType, order: Order, *, unsigned: bool) -> int | float:
    code = _UNSIGNED[_REGISTERS[dt]] if unsigned else _CODES[dt]
    if order is Order.DCBA:
        return _struct(code, True).unpack(data)[0]  # type: ignore[no-any-return]
    return _struct(code, False).unpack(_to_wire_order(data, order))[0]  # type: ignore[no-any-return]


def _check_len(data: bytes | memoryview, need: int) -> None:
    if len(data) != need:
        raise DecodeError(f"need {need // 2} register(s), got {len(data) / 2:g}")


def registers_to_bytes(registers: Sequence[int]) -> bytes:
    """Big-endian wire bytes of `registers`; DecodeError for values outside 0..65535."""
    try:
        return struct.pack(f">{len(registers)}H", *registers)
    except struct.error:
        bad = next((r for r in registers if not 0 <= int(r) <= 0xFFFF), None)
        raise DecodeError(f"register value {bad!r} is outside 0..65535") from None


def bytes_to_registers(data: bytes) -> list[int]:
    """Registers from big-endian wire bytes (an even number of them)."""
    if len(data) % 2:
        raise DecodeError(f"odd number of register bytes: {len(data)}")
    return list(struct.unpack(f">{len(data) // 2}H", data))


# --- decode ---------------------------------------------------------------------------


def decode_raw_from(buf: bytes | memoryview, offset: int, spec: CodecSpec) -> int | float | str:
    """The value before scale/offset, read from register bytes `buf` at byte `offset`."""
    dt = spec.data_type
    size = 2 * register_count(spec)
    data = bytes(buf[offset : offset + size])
    _check_len(data, size)
    if dt is DataType.STRING:
        if spec.order in (Order.BADC, Order.DCBA):
            data = _to_wire_order(data, Order.BADC)
        return data.decode("utf-8", errors="replace").rstrip("\x00 ").lstrip("\x00")
    if spec.bit is not None:
        raw = int(_unpack_raw(data, dt, spec.order, unsigned=True))
        return (raw >> spec.bit) & ((1 << spec.bit_count) - 1)
    return _unpack_raw(data, dt, spec.order, unsigned=False)


def decode_from(buf: bytes | memoryview, offset: int, spec: CodecSpec) -> float:
    """The engineering value (``raw * scale + offset``) at byte `offset` of `buf`."""
    raw = decode_raw_from(buf, offset, spec)
    if isinstance(raw, str):
        raise DecodeError("a string field has no numeric value")
    if spec.scale == 1.0 and spec.offset == 0.0:
        return float(raw)
    return raw * spec.scale + spec.offset


RawReader = Callable[[bytes | memoryview, int], int | float]


def _raw_reader(code: str, order: Order, size: int) -> RawReader:
    if order is Order.DCBA or order is Order.ABCD or (size == 2 and order is Order.CDAB):
        unpack_from = _struct(code, order is Order.DCBA).unpack_from

        def direct(buf: bytes | memoryview, off: int) -> int | float:
            return unpack_from(buf, off)[0]  # type: ignore[no-any-return]

        return direct
    unpack = _struct(code, False).unpack
    if order is Order.CDAB and size == 4:  # the common word swap: one concatenation

        def word_swapped(buf: bytes | memoryview, off: int) -> int | float:
            data = bytes(buf[off + 2 : off + 4]) + bytes(buf[off : off + 2])
            if len(data) != 4:
                raise DecodeError(f"need 2 register(s), got {len(data) / 2:g}")
            return unpack(data)[0]  # type: ignore[no-any-return]

        return word_swapped

    def swapped(buf: bytes | memoryview, off: int) -> int | float:
        data = bytes(buf[off : off + size])
        if len(data) != size:
            raise DecodeError(f"need {size // 2} register(s), got {len(data) / 2:g}")
        return unpack(_to_wire_order(data, order))[0]  # type: ignore[no-any-return]

    return swapped


def compile_decoder(spec: CodecSpec) -> Callable[[bytes | memoryview, int], float]:
    """A fast ``(buf, offset) -> value`` for `spec`, same result as `decode_from`.

    The poller compiles one per field once, so the per-poll cost is one
    `struct` call (plus a slice for the swapped orders) and the scaling.
    """
    dt = spec.data_type
    if dt is DataType.STRING:
        raise DecodeError("a string field has no numeric value")
    code = _UNSIGNED[_REGISTERS[dt]] if spec.bit is not None else _CODES[dt]
    raw_at = _raw_reader(code, spec.order, 2 * _REGISTERS[dt])
    scale, offset = spec.scale, spec.offset
    if spec.bit is not None:
        shift, mask = spec.bit, (1 << spec.bit_count) - 1
        if scale == 1.0 and offset == 0.0:
            return lambda buf, off: float((int(raw_at(buf, off)) >> shift) & mask)
        return lambda buf, off: ((int(raw_at(buf, off)) >> shift) & mask) * scale + offset
    if scale == 1.0 and offset == 0.0:
        return lambda buf, off: float(raw_at(buf, off))
    return lambda buf, off: raw_at(buf, off) * scale + offset


def decode(registers: Sequence[int], spec: CodecSpec) -> float:
    """The engineering value of `registers` (exactly the spec's register count)."""
    return decode_from(registers_to_bytes(registers), 0, spec)


def decode_string(registers: Sequence[int], spec: CodecSpec) -> str:
    """The text of a string spec."""
    raw = decode_raw_from(registers_to_bytes(registers), 0, spec)
    if not isinstance(raw, str):
        raise DecodeError(f"{spec.data_type.value} is not a string type")
    return raw


# --- encode ---------------------------------------------------------------------------


def _int_range(dt: DataType, *, unsigned: bool) -> tuple[int, int]:
    bits = 16 * _REGISTERS[dt]
    if dt.is_signed and not unsigned:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _pack(raw: int | float, dt: DataType, order: Order, *, unsigned: bool) -> list[int]:
    code = _UNSIGNED[_REGISTERS[dt]] if unsigned else _CODES[dt]
    if order is Order.DCBA:
        data = _struct(code, True).pack(raw)
    else:
        data = _to_wire_order(_struct(code, False).pack(raw), order)
    return bytes_to_registers(data)


def encode(value: float | str, spec: CodecSpec) -> list[int]:
    """Registers that `decode` turns back into `value` (rounded to the type's resolution).

    For a bit field only its bits are set; OR it with the other fields sharing
    the register. Raises `EncodeError` when the value does not fit.
    """
    dt = spec.data_type
    if dt is DataType.STRING:
        if not isinstance(value, str):
            raise EncodeError("a string spec needs a str value")
        data = value.encode("utf-8")
        size = 2 * register_count(spec)
        if len(data) > size:
            raise EncodeError(f"{value!r} needs {len(data)} bytes, the field has {size}")
        data = data.ljust(size, b"\x00")
        if spec.order in (Order.BADC, Order.DCBA):
            data = _to_wire_order(data, Order.BADC)
        return bytes_to_registers(data)
    if isinstance(value, str):
        raise EncodeError(f"a {dt.value} spec needs a number, got a str")
    raw_f = (float(value) - spec.offset) / spec.scale
    if not dt.is_integer:
        if dt is DataType.F32 and math.isfinite(raw_f) and abs(raw_f) > 3.4028234663852886e38:
            raise EncodeError(f"{value!r} overflows f32")
        return _pack(raw_f, dt, spec.order, unsigned=False)
    if not math.isfinite(raw_f):
        raise EncodeError(f"{value!r} is not finite; {dt.value} cannot hold it")
    # exact for ints beyond 2**53 when there is nothing to scale
    exact = isinstance(value, int) and spec.scale == 1.0 and spec.offset == 0.0
    raw = int(value) if exact else round(raw_f)
    if spec.bit is not None:
        limit = (1 << spec.bit_count) - 1
        if not 0 <= raw <= limit:
            raise EncodeError(f"{value!r} does not fit in {spec.bit_count} bit(s)")
        return _pack(raw << spec.bit, dt, spec.order, unsigned=True)
    lo, hi = _int_range(dt, unsigned=False)
    if not lo <= raw <= hi:
        raise EncodeError(f"{value!r} (raw {raw}) is outside {dt.value} range {lo}..{hi}")
    return _pack(raw, dt, spec.order, unsigned=False)


def wire_address(address: int, *, base: int) -> int:
    """The 0-based wire address of a documented `address` under addressing `base`.

    Manuals print addresses 0-based, 1-based, or as 30001/40001-style numbers;
    the profile says which (`address_base`) and this removes it.
    """
    wire = address - base
    if not 0 <= wire <= 0xFFFF:
        raise ValueError(f"address {address} with base {base} gives wire address {wire}")
    return wire
