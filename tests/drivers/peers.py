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


class FaultPeer:
    """An asyncio Modbus server with per-unit faults; `framing` is ``tcp`` or ``rtu``."""

    def __init__(self, units: dict[int, Unit], *, framing: str = "tcp") -> None:
        self.units = units
        self.framing = framing
        self.server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> FaultPeer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self._writers):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self.server.wait_closed()

    def _answer(self, unit: Unit, fc: int, addr: int, count: int) -> bytes:
        if unit.mode == "exception":
            return bytes((fc | 0x80, unit.exception_code))
        table = unit.image.get(fc, {})
        if fc not in (3, 4) or any(a not in table for a in range(addr, addr + count)):
            return bytes((fc | 0x80, 2))
        return bytes((fc, 2 * count)) + struct.pack(
            f">{count}H", *(table[a] for a in range(addr, addr + count))
        )

    async def _respond(
        self, writer: asyncio.StreamWriter, unit: Unit, frame: bytes, delay_s: float
    ) -> None:
        if delay_s:
            await asyncio.sleep(delay_s)
        if not writer.is_closing():
            writer.write(frame)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        loop = asyncio.get_running_loop()
        try:
            while True:
                if self.framing == "tcp":
                    head = await reader.readexactly(7)
                    tid, _, length, unit_id = struct.unpack(">HHHB", head)
                    pdu = await reader.readexactly(length - 1)
                else:
                    frame = await reader.readexactly(8)
                    unit_id, pdu = frame[0], frame[1:6]
                    if crc16(frame[:6]) != struct.unpack("<H", frame[6:])[0]:
                        continue
                fc, addr, count = struct.unpack(">BHH", pdu[:5])
                unit = self.units.get(unit_id)
                if unit is None:
                    continue  # like a gateway with nothing behind that id: silence
                unit.requests += 1
                unit.times.append(loop.time())
                if unit.mode == "silent":
                    continue
                if unit.mode == "drop":
                    writer.transport.abort()
                    return
                body = self._answer(unit, fc, addr, count)
                if self.framing == "tcp":
                    out = struct.pack(">HHHB", tid, 0, len(body) + 1, unit_id) + body
                else:
                    adu = bytes((unit_id,)) + body
                    out = adu + struct.pack("<H", crc16(adu))
                delay = unit.delay_s if unit.mode == "late" else 0.0
                if delay:
                    t = asyncio.create_task(self._respond(writer, unit, out, delay))
                    self._tasks.add(t)
                    t.add_done_callback(self._tasks.discard)
                else:
                    writer.write(out)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
