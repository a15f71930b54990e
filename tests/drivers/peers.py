"""Modbus peers for the driver tests and the benchmark.

- `register_image`: the registers a device with `profile` holds for `values`,
  built with the codec's `encode`.
- `pymodbus_server`: pymodbus's own server (TCP, RTU over TCP, serial RTU), a
  peer this project did not write.
- `FaultPeer`: a small asyncio Modbus server (TCP or RTU framing over TCP)
  whose units can be told to go silent, answer late, answer with an
  exception, or drop the connection. It injects faults at the socket seam;
  it is also the lightweight in-process server of `bench/bench_drivers.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from drivers.codec import encode
from drivers.framing import crc16
from drivers.planner import plan_reads
from drivers.profiles import Profile

Image = dict[int, dict[int, int]]  # function code -> address -> register


def register_image(
    profile: Profile, values: Mapping[str, float], *, dense: bool = True
) -> Image:
    """Registers holding `values` (fields sharing a register, e.g. bit fields, are ORed).

    `dense` also maps the unused registers inside each planned read block (as
    zeros), as a real device with a full register map does.
    """
    image: Image = {3: {}, 4: {}}
    if dense:
        for block in plan_reads(profile.fields):
            for a in range(block.address, block.end):
                image[block.function][a] = 0
    for f in profile.fields:
        if f.name not in values:
            continue
        regs = encode(values[f.name], f)
        table = image[f.function]
        for i, r in enumerate(regs):
            table[f.address + i] = table.get(f.address + i, 0) | r
    return image


@contextlib.asynccontextmanager
async def pymodbus_server(
    units: Mapping[int, Image], *, framer: str = "socket", port: int = 0, serial_port: str = ""
) -> AsyncIterator[Any]:
    """Run pymodbus's server for `units` on 127.0.0.1:`port` (or `serial_port`)."""
    from pymodbus import FramerType
    from pymodbus.server import ModbusSerialServer, ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    def blocks(table: dict[int, int]) -> list[SimData]:
        # one SimData per contiguous run; unmapped addresses answer exception 02
        out: list[SimData] = []
        run: list[int] = []
        start = prev = -2
        for addr in sorted(table):
            if addr != prev + 1 and run:
                out.append(SimData(start, values=run, datatype=DataType.REGISTERS))
                run = []
            if not run:
                start = addr
            run.append(table[addr])
            prev = addr
        if run:
            out.append(SimData(start, values=run, datatype=DataType.REGISTERS))
        # pymodbus wants at least one block per table; park it far away
        return out or [SimData(65000, values=[0], datatype=DataType.REGISTERS)]

    devices = [
        SimDevice(
            id=unit,
            simdata=(
                [SimData(0, values=[False], datatype=DataType.BITS)],
                [SimData(0, values=[False], datatype=DataType.BITS)],
                blocks(image.get(3, {})),
                blocks(image.get(4, {})),
            ),
        )
        for unit, image in units.items()
    ]
    server: Any
    if serial_port:
        server = ModbusSerialServer(devices, port=serial_port, baudrate=19200, parity="N")
    else:
        ft = FramerType.RTU if framer == "rtu" else FramerType.SOCKET
        server = ModbusTcpServer(devices, framer=ft, address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    try:
        yield server
    finally:
        await server.shutdown()


@dataclass
class Unit:
    """A unit of `FaultPeer`. Change `mode` at run time to inject or clear a fault.

    modes: ``ok``, ``silent`` (never answers), ``late`` (answers after
    `delay_s`), ``exception`` (answers `exception_code`), ``drop`` (closes the
    connection on a request).
    """

    image: Image
    mode: str = "ok"
    delay_s: float = 0.0
    exception_code: int = 2
    requests: int = 0
    times: list[float] = field(default_factory=list)


class _PeerProtocol(asyncio.Protocol):
    def __init__(self, peer: FaultPeer) -> None:
        self.peer = peer
        self.buf = bytearray()
        self.batch: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer.connections += 1
        self.peer._transports.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.peer._transports.discard(self.transport)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        peer, buf = self.peer, self.buf
        # answers to the requests of one read go out in one write (one syscall)
        self.batch: list[bytes] = []
        try:
            self._frames(peer, buf)
        finally:
            if self.batch and self.transport is not None and not self.transport.is_closing():
                self.transport.write(b"".join(self.batch))

    def _frames(self, peer: FaultPeer, buf: bytearray) -> None:
        while self.transport is not None:
            if peer.framing == "tcp":
                if len(buf) < 7:
                    return
                tid, _, length, unit_id = struct.unpack_from(">HHHB", buf)
                if len(buf) < 6 + length:
                    return
                pdu = bytes(buf[7 : 6 + length])
                del buf[: 6 + length]
            else:
                if len(buf) < 8:
                    return
                frame = bytes(buf[:8])
                del buf[:8]
                if crc16(frame[:6]) != struct.unpack("<H", frame[6:])[0]:
                    continue
                tid, unit_id, pdu = 0, frame[0], frame[1:6]
            peer._request(self, tid, unit_id, pdu)


class FaultPeer:
    """An asyncio Modbus server with per-unit faults; `framing` is ``tcp`` or ``rtu``."""

    def __init__(self, units: dict[int, Unit], *, framing: str = "tcp") -> None:
        self.units = units
        self.framing = framing
        self.server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0
        self._transports: set[asyncio.Transport] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._cache: dict[tuple[int, int, int, int], bytes] = {}

    async def __aenter__(self) -> FaultPeer:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _PeerProtocol(self), "127.0.0.1", 0, backlog=4096
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for timer in self._timers:
            timer.cancel()
        for t in list(self._transports):
            t.abort()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self.server.wait_closed()

    def _answer(self, unit_id: int, unit: Unit, fc: int, addr: int, count: int) -> bytes:
        if unit.mode == "exception":
            return bytes((fc | 0x80, unit.exception_code))
        key = (unit_id, fc, addr, count)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        table = unit.image.get(fc, {})
        if fc not in (3, 4) or any(a not in table for a in range(addr, addr + count)):
            return bytes((fc | 0x80, 2))
        body = bytes((fc, 2 * count)) + struct.pack(
            f">{count}H", *(table[a] for a in range(addr, addr + count))
        )
        self._cache[key] = body  # images do not change while served
        return body

    def _request(self, proto: _PeerProtocol, tid: int, unit_id: int, pdu: bytes) -> None:
        transport = proto.transport
        assert transport is not None
        fc, addr, count = struct.unpack(">BHH", pdu[:5])
        unit = self.units.get(unit_id)
        if unit is None:
            return  # like a gateway with nothing behind that id: silence
        loop = asyncio.get_running_loop()
        unit.requests += 1
        unit.times.append(loop.time())
        if unit.mode == "silent":
            return
        if unit.mode == "drop":
            transport.abort()
            return
        body = self._answer(unit_id, unit, fc, addr, count)
        if self.framing == "tcp":
            out = struct.pack(">HHHB", tid, 0, len(body) + 1, unit_id) + body
        else:
            adu = bytes((unit_id,)) + body
            out = adu + struct.pack("<H", crc16(adu))
        if unit.mode == "late":
            timer = loop.call_later(unit.delay_s, self._late, transport, out)
            self._timers.add(timer)
        else:
            proto.batch.append(out)

    @staticmethod
    def _late(transport: asyncio.Transport, out: bytes) -> None:
        if not transport.is_closing():
            transport.write(out)
