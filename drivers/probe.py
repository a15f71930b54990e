"""One-shot reads for installers (`meterwatch read`): fields, raw registers, order guessing.

Failure modes handled: the link cannot be opened (TransportError with the
address), a block that times out or answers an exception (recorded per block,
the other blocks are still read), and values that decode to NaN/inf or to
absurd magnitudes (marked implausible when guessing the order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from drivers.codec import DataType, Order, bytes_to_registers, decode_from
from drivers.errors import DriverError
from drivers.links import RtuOverTcpLink, SerialLink, TcpLink
from drivers.modbus import RegisterReader, RtuClient, TcpClient
from drivers.planner import ReadBlock, plan_reads
from drivers.profiles import ModbusField

PLAUSIBLE_ABS_MAX = 1e9
PLAUSIBLE_ABS_MIN = 1e-6


@dataclass(slots=True)
class BlockResult:
    block: ReadBlock
    registers: list[int] | None = None
    error: str | None = None


@dataclass(slots=True)
class ProbeResult:
    blocks: list[BlockResult] = field(default_factory=list)
    fields: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def plausible(value: float) -> bool:
    """Finite and zero or within 1e-6..1e9 in magnitude: what a meter reading looks like."""
    return math.isfinite(value) and (
        value == 0 or PLAUSIBLE_ABS_MIN <= abs(value) <= PLAUSIBLE_ABS_MAX
    )


def guess_orders(registers: Sequence[int], spec: ModbusField) -> dict[Order, float]:
    """The value of `registers` decoded in each of the four orders."""
    data = bytes(b for r in registers for b in r.to_bytes(2, "big"))
    return {o: decode_from(data, 0, spec.model_copy(update={"order": o})) for o in Order}


async def open_client(
    link: TcpLink | RtuOverTcpLink | SerialLink,
) -> TcpClient | RtuClient:
    """Open a client for `link` (one request at a time for all of them)."""
    if isinstance(link, TcpLink):
        client = TcpClient(link.host, link.port, max_in_flight=1)
        try:
            await client.connect(timeout_s=link.timeout_s)
        except (OSError, TimeoutError) as exc:
            raise DriverError(f"cannot connect to {link.describe()}: {exc or 'timeout'}") from None
        return client
    if isinstance(link, RtuOverTcpLink):
        try:
            return await RtuClient.open_tcp(
                link.host, link.port, timeout_s=link.timeout_s,
                inter_frame_delay_s=link.inter_frame_delay_s,
            )
        except (OSError, TimeoutError) as exc:
            raise DriverError(f"cannot connect to {link.describe()}: {exc or 'timeout'}") from None
    return await RtuClient.open_serial(link)


async def probe(
    client: RegisterReader,
    fields: Sequence[ModbusField],
    *,
    unit_id: int,
    timeout_s: float,
    max_block_registers: int = 125,
    max_gap_registers: int = 16,
) -> ProbeResult:
    """Read every field once; errors are kept per block instead of raised."""
    result = ProbeResult()
    blocks = plan_reads(
        fields, max_block_registers=max_block_registers, max_gap_registers=max_gap_registers
    )
    for block in blocks:
        br = BlockResult(block)
        result.blocks.append(br)
        try:
            data = await client.read(
                unit_id, block.function, block.address, block.count, timeout_s=timeout_s
            )
        except DriverError as exc:
            br.error = str(exc)
            for f in block.fields:
                result.errors[f.name] = br.error
            continue
        br.registers = bytes_to_registers(data)
        for f, off in zip(block.fields, block.offsets, strict=True):
            if f.data_type is DataType.STRING:
                continue
            result.fields[f.name] = decode_from(data, off, f)
    return result
