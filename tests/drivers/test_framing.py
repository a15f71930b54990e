"""Modbus framing vectors: CRC, MBAP and RTU requests/responses, stream splitting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import ModbusExceptionError
from drivers.framing import (
    FrameError,
    MbapDecoder,
    crc16,
    mbap_frame,
    parse_read_response,
    parse_rtu_response,
    read_request_pdu,
    rtu_frame,
    rtu_inter_frame_delay_s,
    rtu_response_length,
)


def test_rtu_request_vector() -> None:
    # the classic: read 10 holding registers from 0 of unit 1 -> CRC C5 CD
    assert rtu_frame(1, read_request_pdu(3, 0, 10)) == bytes.fromhex("01030000000AC5CD")
    # SDM630 input registers 0x0000 x2 from unit 1 (Eastron manual example)
    assert rtu_frame(1, read_request_pdu(4, 0, 2)) == bytes.fromhex("010400000002 71CB")


def test_crc_of_a_frame_with_its_crc_is_zero() -> None:
    frame = rtu_frame(17, read_request_pdu(3, 0x6B, 3))
    assert frame.hex() == "1103006b00037687"
    assert crc16(frame) == 0


def test_mbap_request_vector() -> None:
    assert mbap_frame(1, 1, read_request_pdu(4, 0, 2)) == bytes.fromhex("000100000006010400000002")


def test_read_response_and_exception() -> None:
    assert parse_read_response(bytes.fromhex("0304436680 00"), function=3, count=2, unit_id=1) == (
        bytes.fromhex("43668000")
    )
    with pytest.raises(ModbusExceptionError) as info:
        parse_read_response(b"\x83\x02", function=3, count=2, unit_id=5, device="m1")
    assert info.value.exception_code == 2 and info.value.unit_id == 5
    assert "m1" in str(info.value)
    with pytest.raises(FrameError, match="byte count"):
        parse_read_response(b"\x03\x02\x00\x01", function=3, count=2, unit_id=1)
    with pytest.raises(FrameError, match="function 4"):
        parse_read_response(b"\x04\x02\x00\x01", function=3, count=1, unit_id=1)


def test_request_limits() -> None:
    with pytest.raises(ValueError, match="126"):
        read_request_pdu(3, 0, 126)
    with pytest.raises(ValueError, match="not a register read"):
        read_request_pdu(6, 0, 1)


@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 255),
                          st.binary(min_size=1, max_size=253)), min_size=1, max_size=8),
       st.integers(1, 20))
def test_mbap_decoder_reassembles_any_split(
    frames: list[tuple[int, int, bytes]], chunk: int
) -> None:
    stream = b"".join(mbap_frame(t, u, p) for t, u, p in frames)
    dec = MbapDecoder()
    out: list[tuple[int, int, bytes]] = []
    for i in range(0, len(stream), chunk):
        out += dec.feed(stream[i : i + chunk])
    assert out == frames


def test_mbap_decoder_refuses_garbage() -> None:
    with pytest.raises(FrameError, match="not a Modbus TCP frame"):
        MbapDecoder().feed(b"HTTP/1.1 200 OK\r\n")


def test_rtu_response_parsing() -> None:
    body = bytes.fromhex("0103044366 8000")
    frame = body + crc16(body).to_bytes(2, "little")
    assert rtu_response_length(frame[:2]) is None
    assert rtu_response_length(frame) == len(frame)
    assert parse_rtu_response(frame, unit_id=1) == bytes.fromhex("0304436680 00")
    with pytest.raises(FrameError, match="CRC"):
        parse_rtu_response(frame[:-1] + b"\x00", unit_id=1)
    with pytest.raises(FrameError, match="unit 1, expected 2"):
        parse_rtu_response(frame, unit_id=2)
    exc = rtu_frame(1, b"\x84\x02")
    assert rtu_response_length(exc) == 5


def test_inter_frame_delay() -> None:
    assert rtu_inter_frame_delay_s(9600) == pytest.approx(3.5 * 11 / 9600)
    assert rtu_inter_frame_delay_s(115200) == 0.00175
