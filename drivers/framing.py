"""Modbus framing for read requests: MBAP (TCP) and RTU (serial, RTU over TCP). Pure.

Only what the poller needs: read holding/input registers (function 03/04)
requests and their responses, including exception responses. The asyncio
shells in `drivers.modbus` move bytes; everything that can be wrong with
those bytes is decided here.

Failure modes handled: a stream that is not Modbus TCP (protocol id not 0,
length outside 2..254) raises `FrameError` so the connection is reset; an
RTU frame with a bad CRC, a response from another unit or for another
function, a byte count that does not match the request, and exception
responses (`ModbusExceptionError` carrying the exception code).
"""

from __future__ import annotations

import struct

from drivers.errors import ModbusExceptionError, TransportError

READ_HOLDING = 3
READ_INPUT = 4
_MBAP = struct.Struct(">HHHB")
_READ_REQ = struct.Struct(">BHH")


class FrameError(TransportError):
    """Bytes on the link are not a valid Modbus frame; the link must be resynchronised."""


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """Modbus RTU CRC-16 (poly 0xA001, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ b) & 0xFF]
    return crc


def read_request_pdu(function: int, address: int, count: int) -> bytes:
    """PDU of a read holding (3) / input (4) registers request."""
    if function not in (READ_HOLDING, READ_INPUT):
        raise ValueError(f"function {function} is not a register read (3 or 4)")
    if not 1 <= count <= 125 or not 0 <= address <= 0xFFFF or address + count > 0x10000:
        raise ValueError(f"cannot read {count} registers at {address}")
    return _READ_REQ.pack(function, address, count)


def mbap_frame(transaction_id: int, unit_id: int, pdu: bytes) -> bytes:
    """A Modbus TCP ADU: MBAP header (protocol 0) + PDU."""
    return _MBAP.pack(transaction_id & 0xFFFF, 0, len(pdu) + 1, unit_id) + pdu


def rtu_frame(unit_id: int, pdu: bytes) -> bytes:
    """An RTU ADU: unit id + PDU + CRC (low byte first)."""
    body = bytes((unit_id,)) + pdu
    return body + struct.pack("<H", crc16(body))


def parse_read_response(
    pdu: bytes, *, function: int, count: int, unit_id: int, device: str | None = None
) -> bytes:
    """The register bytes of a read response PDU; raises on exception or mismatch."""
    if not pdu:
        raise FrameError("empty response PDU", device=device)
    fc = pdu[0]
    if fc == function | 0x80:
        code = pdu[1] if len(pdu) > 1 else 0
        raise ModbusExceptionError(
            device=device, unit_id=unit_id, function_code=function, exception_code=code
        )
    if fc != function:
        raise FrameError(f"response for function {fc}, expected {function}", device=device)
    if len(pdu) < 2 or pdu[1] != 2 * count or len(pdu) != 2 + 2 * count:
        got = pdu[1] if len(pdu) > 1 else None
        raise FrameError(
            f"response byte count {got} / PDU length {len(pdu)} does not match "
            f"{count} registers",
            device=device,
        )
    return pdu[2:]


class MbapDecoder:
    """Splits a Modbus TCP byte stream into ``(transaction_id, unit_id, pdu)`` frames."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """Add received bytes; return every complete frame. FrameError on garbage."""
        buf = self._buf
        buf += data
        frames: list[tuple[int, int, bytes]] = []
        pos = 0
        while len(buf) - pos >= 7:
            tid, proto, length, unit = _MBAP.unpack_from(buf, pos)
            if proto != 0 or not 2 <= length <= 254:
                buf.clear()
                raise FrameError(f"not a Modbus TCP frame (protocol {proto}, length {length})")
            end = pos + 6 + length
            if len(buf) < end:
                break
            frames.append((tid, unit, bytes(buf[pos + 7 : end])))
            pos = end
        if pos:
            del buf[:pos]
        return frames


def rtu_response_length(buf: bytes | bytearray) -> int | None:
    """Length of the RTU read/exception response starting at `buf[0]`; None if not known yet."""
    if len(buf) < 3:
        return None
    if buf[1] & 0x80:
        return 5
    if buf[1] in (READ_HOLDING, READ_INPUT):
        return 3 + buf[2] + 2
    raise FrameError(f"unexpected RTU function code {buf[1]}")


def parse_rtu_response(frame: bytes, *, unit_id: int) -> bytes:
    """The PDU of a complete RTU response frame after CRC and unit checks."""
    if len(frame) < 5:
        raise FrameError(f"RTU frame of {len(frame)} bytes is too short")
    (crc,) = struct.unpack_from("<H", frame, len(frame) - 2)
    if crc != crc16(frame[:-2]):
        raise FrameError("RTU CRC mismatch")
    if frame[0] != unit_id:
        raise FrameError(f"RTU response from unit {frame[0]}, expected {unit_id}")
    return bytes(frame[1:-2])


def rtu_inter_frame_delay_s(baudrate: int) -> float:
    """t3.5: 3.5 character times of 11 bits, fixed at 1.75 ms above 19200 baud."""
    if baudrate > 19200:
        return 0.00175
    return 3.5 * 11 / baudrate
